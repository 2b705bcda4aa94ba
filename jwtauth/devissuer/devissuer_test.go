package devissuer

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

func fetch(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func kids(t *testing.T, body []byte) []string {
	t.Helper()
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := 0; i < set.Len(); i++ {
		k, _ := set.Key(i)
		out = append(out, k.KeyID())
	}
	return out
}

func TestJWKSRotateRetireDown(t *testing.T) {
	p, err := New(Options{ECDSA: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	url := srv.URL + JWKSPath

	rsa1, ec1 := p.KeyID("RS256"), p.KeyID("ES256")
	code, body := fetch(t, url)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if diff := cmp.Diff([]string{rsa1, ec1}, kids(t, body)); diff != "" {
		t.Errorf("kids (-want, +got):\n%s", diff)
	}
	rsa2, err := p.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	ec2 := p.KeyID("ES256")
	if !p.Retire(rsa1) || p.Retire(rsa1) {
		t.Error("Retire should succeed once")
	}
	_, body = fetch(t, url)
	if diff := cmp.Diff([]string{ec1, rsa2, ec2}, kids(t, body)); diff != "" {
		t.Errorf("kids after rotate and retire (-want, +got):\n%s", diff)
	}

	p.SetDown(true)
	if code, _ := fetch(t, url); code != http.StatusServiceUnavailable {
		t.Errorf("down: status %d, want 503", code)
	}
	p.SetDown(false)
	p.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if code, _ := fetch(t, url); code != http.StatusOK || time.Since(start) < 100*time.Millisecond {
		t.Errorf("delayed: status %d after %v", code, time.Since(start))
	}
	if got := p.Fetches(); got != 4 {
		t.Errorf("Fetches() = %d, want 4", got)
	}
	if code, _ := fetch(t, srv.URL+"/other"); code != http.StatusNotFound {
		t.Errorf("other path: status %d, want 404", code)
	}
}

func TestMint(t *testing.T) {
	p, err := New(Options{Issuer: "https://clerk.test", ECDSA: true})
	if err != nil {
		t.Fatal(err)
	}
	iat := time.Unix(1_700_000_000, 0)
	for _, alg := range []string{"RS256", "ES256"} {
		tok, err := p.Mint(Claims{
			Algorithm: alg, Subject: "user_1", SessionID: "sess_1", AuthorizedParty: "https://app",
			IssuedAt: iat, Org: &Org{ID: "org_1", Slug: "acme", Role: "org:admin", Permissions: []string{"read", "manage"}},
			Headers: map[string]any{"jku": "https://evil/jwks", "typ": nil},
		})
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := p.PublicKey(p.KeyID(alg))
		payload, err := jws.Verify([]byte(tok), jws.WithKey(jwa.SignatureAlgorithm(alg), pub))
		if err != nil {
			t.Fatalf("%s: the minted token does not verify: %v", alg, err)
		}
		var got map[string]any
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatal(err)
		}
		delete(got, "jti")
		want := map[string]any{
			"iss": "https://clerk.test", "sub": "user_1", "sid": "sess_1", "azp": "https://app",
			"iat": 1.7e9, "nbf": 1.7e9, "exp": 1.7e9 + 60, "v": 2.0, "sts": "active", "fva": []any{0.0, -1.0},
			"o": map[string]any{"id": "org_1", "slg": "acme", "rol": "admin", "per": "read,manage"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s claims (-want, +got):\n%s", alg, diff)
		}
		hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]any
		if err := json.Unmarshal(hdr, &h); err != nil {
			t.Fatal(err)
		}
		wantHdr := map[string]any{"alg": alg, "kid": p.KeyID(alg), "jku": "https://evil/jwks"}
		if diff := cmp.Diff(wantHdr, h); diff != "" {
			t.Errorf("%s header (-want, +got):\n%s", alg, diff)
		}
	}

	v1, err := p.Mint(Claims{Version: 1, IssuedAt: iat, Org: &Org{ID: "org_1", Role: "admin", Permissions: []string{"org:a:read"}}, Extra: map[string]any{"sid": nil}})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(v1, ".")[1])
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	delete(got, "jti")
	want := map[string]any{
		"iss": "https://clerk.test", "sub": DefaultSubject, "iat": 1.7e9, "nbf": 1.7e9, "exp": 1.7e9 + 60,
		"org_id": "org_1", "org_slug": "", "org_role": "org:admin", "org_permissions": []any{"org:a:read"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("v1 claims (-want, +got):\n%s", diff)
	}

	p.Retire(p.KeyID("ES256"))
	if _, err := p.Mint(Claims{Algorithm: "ES256"}); err == nil {
		t.Error("Mint with a retired ES256 key succeeded")
	}
	rsaOnly, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rsaOnly.Mint(Claims{Algorithm: "ES256"}); err == nil {
		t.Error("Mint ES256 without Options.ECDSA succeeded")
	}
}
