package jwtauth

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

func TestParseKeySet(t *testing.T) {
	body, err := os.ReadFile("testdata/jwks_mixed.json")
	if err != nil {
		t.Fatal(err)
	}
	set, err := parseKeySet(body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ Kid, Alg, Kty, Crv string }
	var got []key
	for _, k := range set.keys {
		got = append(got, key{k.kid, k.alg, k.kty, k.crv})
	}
	// Skipped: a 1024-bit RSA key, an encryption key (use), an RSA-OAEP key
	// (alg), an encrypt-only key (key_ops), an HMAC (oct) key, an Ed25519
	// key and a key of an unknown type. The private key is kept as public.
	want := []key{
		{"rsa-ok", "RS256", "RSA", ""},
		{"rsa-no-alg", "", "RSA", ""},
		{"rsa-private", "RS256", "RSA", ""},
		{"ec-p256", "ES256", "EC", "P-256"},
		{"ec-p384", "", "EC", "P-384"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usable keys (-want, +got):\n%s", diff)
	}

	for name, doc := range map[string]string{
		"not JSON":       `<html>`,
		"no keys":        `{"keys":[]}`,
		"only an oct":    `{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}`,
		"keys not array": `{"keys":{}}`,
	} {
		if _, err := parseKeySet([]byte(doc), time.Now()); err == nil {
			t.Errorf("%s: parseKeySet succeeded, want an error", name)
		}
	}
}

func TestKeyFits(t *testing.T) {
	rsaAny := publicKey{kty: "RSA"}
	rsaRS256 := publicKey{kty: "RSA", alg: "RS256"}
	p256 := publicKey{kty: "EC", crv: "P-256"}
	p384 := publicKey{kty: "EC", crv: "P-384"}
	tests := []struct {
		key  publicKey
		alg  string
		want bool
	}{
		{rsaAny, "RS256", true}, {rsaAny, "PS512", true}, {rsaAny, "ES256", false},
		{rsaRS256, "RS256", true}, {rsaRS256, "RS384", false}, {rsaRS256, "PS256", false},
		{p256, "ES256", true}, {p256, "ES384", false}, {p256, "RS256", false},
		{p384, "ES384", true}, {p384, "ES256", false},
	}
	for _, tc := range tests {
		if got := tc.key.fits(tc.alg); got != tc.want {
			t.Errorf("%+v fits %s = %v, want %v", tc.key, tc.alg, got, tc.want)
		}
	}
}

// TestUnknownKIDFlood sends 1000 tokens with random kids from 32 goroutines:
// the JWKS is fetched at most once per MinRefreshInterval.
func TestUnknownKIDFlood(t *testing.T) {
	const minRefresh = 300 * time.Millisecond
	e := newEnv(t, envOptions{config: func(c *Config) { c.MinRefreshInterval = minRefresh }})
	_, payload, sig := segments(t, e.mint(t, devissuer.Claims{}))
	time.Sleep(minRefresh) // let the flood's first unknown kid refresh once
	before := e.idp.Fetches()
	start := time.Now()
	var wg sync.WaitGroup
	reasons := make(chan string, 1000)
	for g := range 32 {
		wg.Go(func() {
			for i := g; i < 1000; i += 32 {
				tok := forge(t, map[string]any{"alg": "RS256", "kid": fmt.Sprintf("random-%d-%d", g, i)}, payload, sig)
				_, err := e.v.Verify(t.Context(), tok)
				reasons <- Reason(err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(reasons)
	for r := range reasons {
		if r != ReasonUnknownKID {
			t.Fatalf("a random kid gave %q, want %q", r, ReasonUnknownKID)
		}
	}
	fetches := e.idp.Fetches() - before
	allowed := int(elapsed/minRefresh) + 1
	t.Logf("1000 unknown kids in %v: %d JWKS fetches (at most %d allowed)", elapsed, fetches, allowed)
	if fetches < 1 || fetches > allowed {
		t.Errorf("JWKS fetches during the flood = %d, want between 1 and %d", fetches, allowed)
	}
}

// TestRotation: a token of a new key verifies through an unknown-kid
// refresh, and once the old key is retired its tokens are refused.
func TestRotation(t *testing.T) {
	const minRefresh = 50 * time.Millisecond
	e := newEnv(t, envOptions{config: func(c *Config) { c.MinRefreshInterval = minRefresh }})
	oldKID := e.idp.KeyID("RS256")
	oldTok := e.mint(t, devissuer.Claims{})
	if _, err := e.v.Verify(t.Context(), oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}
	if _, err := e.idp.Rotate(); err != nil {
		t.Fatal(err)
	}
	e.idp.Retire(oldKID)
	newTok := e.mint(t, devissuer.Claims{})
	time.Sleep(minRefresh)
	if _, err := e.v.Verify(t.Context(), newTok); err != nil {
		t.Fatalf("new key after rotation: %v", err)
	}
	_, err := e.v.Verify(t.Context(), oldTok)
	if Reason(err) != ReasonUnknownKID || !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of a retired key: got %v, want %s", err, ReasonUnknownKID)
	}
}

// TestBackgroundRefresh: the key set follows the JWKS with no token asking
// (the unknown-kid refresh is rate-limited to once an hour here).
func TestBackgroundRefresh(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *Config) { c.RefreshInterval = 50 * time.Millisecond }})
	oldKID := e.idp.KeyID("RS256")
	oldTok := e.mint(t, devissuer.Claims{})
	if _, err := e.idp.Rotate(); err != nil {
		t.Fatal(err)
	}
	e.idp.Retire(oldKID)
	newTok := e.mint(t, devissuer.Claims{})
	// Fetches are sequential: once request base+2 arrives, request base+1,
	// which saw the new JWKS, has been installed.
	base := e.idp.Fetches()
	waitFor(t, 5*time.Second, "background refreshes", func() bool { return e.idp.Fetches() >= base+2 })
	if _, err := e.v.Verify(t.Context(), newTok); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if _, err := e.v.Verify(t.Context(), oldTok); Reason(err) != ReasonUnknownKID {
		t.Fatalf("token of the retired key: got %v, want %s", err, ReasonUnknownKID)
	}
}

// TestLastGoodSetKept: after a first fetch the endpoint fails; tokens keep
// verifying against the last good set.
func TestLastGoodSetKept(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *Config) { c.MinRefreshInterval = time.Millisecond }})
	tok := e.mint(t, devissuer.Claims{})
	e.idp.SetDown(true)
	// An unknown kid forces a refresh, which fails: the kid may be the
	// provider's rotated key, so the answer is unavailable (503), not
	// invalid (401), now and while the next refresh is rate-limited.
	_, payload, sig := segments(t, tok)
	time.Sleep(2 * time.Millisecond)
	rotated := forge(t, map[string]any{"alg": "RS256", "kid": "rotated?"}, payload, sig)
	for range 2 {
		if _, err := e.v.Verify(t.Context(), rotated); Reason(err) != ReasonUnavailable || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("unknown kid while the JWKS is down: %v, want unavailable", err)
		}
	}
	if got := e.counter(t, "odin_jwt_jwks_fetches_total", "result", "bad_status"); got < 1 {
		t.Fatalf("fetches{bad_status} = %v, want >= 1", got)
	}
	if _, err := e.v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify with the JWKS down after a first fetch: %v", err)
	}
	if !e.v.Ready() {
		t.Error("Ready() = false with a last good key set")
	}
}

// TestNeverReachable: a JWKS that never answers in time or refuses
// connections makes New return after about FetchTimeout and Verify answer
// ErrUnavailable, until the endpoint recovers.
func TestNeverReachable(t *testing.T) {
	const fetchTimeout = 300 * time.Millisecond
	t.Run("slow", func(t *testing.T) {
		var start time.Time
		e := newEnv(t, envOptions{
			before: func(p *devissuer.Provider) {
				p.SetDelay(time.Minute)
				start = time.Now() // New comes next
			},
			config: func(c *Config) { c.FetchTimeout = fetchTimeout; c.MinRefreshInterval = time.Second },
		})
		if elapsed := time.Since(start); elapsed > fetchTimeout+time.Second {
			t.Fatalf("New took %v with FetchTimeout %v", elapsed, fetchTimeout)
		}
		if e.v.Ready() {
			t.Fatal("Ready() = true with no key set")
		}
		tok := e.mint(t, devissuer.Claims{})
		start = time.Now()
		_, err := e.v.Verify(t.Context(), tok)
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Verify = %v, want ErrUnavailable", err)
		}
		if elapsed := time.Since(start); elapsed > 250*time.Millisecond {
			t.Errorf("Verify took %v: a refresh attempt right after a failed one must be skipped", elapsed)
		}
		// The endpoint recovers: the next rate-limited attempt loads the set.
		e.idp.SetDelay(0)
		time.Sleep(time.Second)
		if _, err := e.v.Verify(t.Context(), tok); err != nil {
			t.Fatalf("Verify after the JWKS recovered: %v", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL + devissuer.JWKSPath
		srv.Close()
		start := time.Now()
		v, err := New(t.Context(), Config{JWKSURL: url, Issuer: "https://iss", FetchTimeout: fetchTimeout}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if elapsed := time.Since(start); elapsed > fetchTimeout+time.Second {
			t.Fatalf("New took %v", elapsed)
		}
		_, err = v.Verify(t.Context(), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Verify = %v, want ErrUnavailable", err)
		}
	})
	t.Run("not a JWKS", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)
		}))
		defer srv.Close()
		v, err := New(t.Context(), Config{JWKSURL: srv.URL, Issuer: "https://iss"}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v.Ready() {
			t.Fatal("Ready() = true with a key set of no usable key")
		}
		_, err = v.Verify(t.Context(), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Verify = %v, want ErrUnavailable", err)
		}
	})
}

// TestSingleSignatureCheck: concurrent first-sight verifications of one
// token share a single signature check, and each caller gets its own copy.
func TestSingleSignatureCheck(t *testing.T) {
	const callers = 16
	e := newEnv(t, envOptions{})
	tok := e.mint(t, devissuer.Claims{Org: &devissuer.Org{ID: "org_1", Permissions: []string{"read"}}})
	key := sha256.Sum256([]byte(tok))
	// Hold the signature check until every caller has joined the flight.
	e.v.beforeSignatureCheck = func() {
		waitFor(t, 5*time.Second, "all callers to join", func() bool { return e.v.flights.callers(key) == callers })
	}
	before := e.counter(t, "odin_jwt_signature_checks_total", "", "")
	sessions := make([]*Session, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			s, err := e.v.Verify(t.Context(), tok)
			if err != nil {
				t.Errorf("Verify: %v", err)
			}
			sessions[i] = s
		})
	}
	wg.Wait()
	if got := e.counter(t, "odin_jwt_signature_checks_total", "", "") - before; got != 1 {
		t.Errorf("signature checks = %v, want 1", got)
	}
	for i := 1; i < callers; i++ {
		if diff := cmp.Diff(sessions[0], sessions[i]); diff != "" {
			t.Errorf("session %d differs (-want, +got):\n%s", i, diff)
		}
		if sessions[i] == sessions[0] || &sessions[i].Permissions[0] == &sessions[0].Permissions[0] {
			t.Errorf("session %d shares memory with session 0", i)
		}
	}
	if n := e.v.flights.callers(key); n != 0 {
		t.Errorf("flight still registered with %d callers", n)
	}
}

// TestHasSigningKey: a verified session names its key; the key stays known
// while the JWKS is unreachable (last good set) and is forgotten by the
// first successful refresh that no longer lists it — the emergency
// rotation a cached session must not survive.
func TestHasSigningKey(t *testing.T) {
	e := newEnv(t, envOptions{})
	oldKID := e.idp.KeyID("RS256")
	s, err := e.v.Verify(t.Context(), e.mint(t, devissuer.Claims{}))
	if err != nil {
		t.Fatal(err)
	}
	if !e.v.HasSigningKey(s.SigningKey) {
		t.Fatal("the key that verified a token is not in the set")
	}
	for _, ref := range []string{"", oldKID, oldKID + "#AAAAAAAAAAAA", "#" + strings.SplitN(s.SigningKey, "#", 2)[1]} {
		if e.v.HasSigningKey(ref) {
			t.Errorf("HasSigningKey(%q) = true: only the exact kid and digest may match", ref)
		}
	}
	newKID, err := e.idp.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	e.idp.Retire(oldKID)
	e.idp.SetDown(true)
	if err := e.v.keys.refresh(t.Context(), 0); err == nil {
		t.Fatal("refresh succeeded with the JWKS down")
	}
	if !e.v.HasSigningKey(s.SigningKey) {
		t.Fatal("a failed refresh dropped the last good set's key")
	}
	e.idp.SetDown(false)
	if err := e.v.keys.refresh(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if e.v.HasSigningKey(s.SigningKey) {
		t.Fatal("a key removed from the JWKS is still known after a successful refresh")
	}
	s2, err := e.v.Verify(t.Context(), e.mint(t, devissuer.Claims{}))
	if err != nil || !strings.HasPrefix(s2.SigningKey, newKID+"#") || !e.v.HasSigningKey(s2.SigningKey) {
		t.Fatalf("token of the new key: %+v, %v", s2, err)
	}
}

// TestSigningKeyRefNamesTheKeyMaterial: a kid republished with another key
// is another signing key.
func TestSigningKeyRefNamesTheKeyMaterial(t *testing.T) {
	refs := map[string]bool{}
	for range 2 {
		idp, err := devissuer.New(devissuer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := idp.PublicKey(idp.KeyID("RS256"))
		k, err := jwk.FromRaw(pub)
		if err != nil {
			t.Fatal(err)
		}
		_ = k.Set(jwk.KeyIDKey, "same-kid")
		body, _ := json.Marshal(map[string]any{"keys": []any{k}})
		set, err := parseKeySet(body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		refs[set.keys[0].ref] = true
	}
	if len(refs) != 2 {
		t.Fatalf("two keys under one kid share a ref: %v", refs)
	}
}

// BenchmarkHasSigningKey is what the key check adds to every cached
// session check.
func BenchmarkHasSigningKey(b *testing.B) {
	e := newEnv(b, envOptions{})
	s, err := e.v.Verify(b.Context(), e.mint(b, devissuer.Claims{}))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !e.v.HasSigningKey(s.SigningKey) {
			b.Fatal("key missing")
		}
	}
}
