package extauthz_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

func TestJWTSessions(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	r := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	good := devissuer.Claims{
		Subject: "user_carol", SessionID: "sess_carol1", AuthorizedParty: "https://app.odin.test",
		Org:   &devissuer.Org{ID: "org_acme", Slug: "acme", Role: "admin", Permissions: []string{"scans:read"}},
		Extra: map[string]any{"tier": "pro"},
	}
	token := is.Token(t, good)

	t.Run("valid token: identity from Clerk claims", func(t *testing.T) {
		resp := r.Check(t, map[string]string{"authorization": "Bearer " + token})
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("denied: %v", resp.GetDeniedResponse().GetBody())
		}
		want := map[string]string{
			"x-odin-auth-method": "jwt", "x-odin-subject": "user_carol", "x-odin-org-id": "org_acme",
			"x-odin-session-id": "sess_carol1", "x-odin-scopes": "scans:read", "x-odin-tier": "pro",
		}
		if diff := cmp.Diff(want, authztest.HeaderMap(ok.GetHeaders())); diff != "" {
			t.Errorf("identity headers (-want, +got):\n%s", diff)
		}
		if !contains(ok.GetHeadersToRemove(), "x-odin-key-id") || !contains(ok.GetHeadersToRemove(), "authorization") {
			t.Errorf("headers_to_remove = %v", ok.GetHeadersToRemove())
		}
	})

	t.Run("cached: one signature check for repeated requests", func(t *testing.T) {
		before := r.Counter(t, "odin_jwt_signature_checks_total", nil)
		for range 20 {
			if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + token})); got != 200 {
				t.Fatalf("status %d", got)
			}
		}
		if after := r.Counter(t, "odin_jwt_signature_checks_total", nil); after != before {
			t.Errorf("signature checked %v more times for a cached token", after-before)
		}
		if r.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "lru"}) < 20 {
			t.Error("LRU hits not counted")
		}
	})

	expiredClaims := good
	expiredClaims.IssuedAt = time.Now().Add(-10 * time.Minute)
	expiredClaims.Expiry = time.Now().Add(-time.Minute)
	futureClaims := good
	futureClaims.NotBefore = time.Now().Add(10 * time.Minute)
	wrongIss := good
	wrongIss.Issuer = "https://evil.test"
	wrongAZP := good
	wrongAZP.AuthorizedParty = "https://evil.test"
	longLived := good
	longLived.Expiry = time.Now().Add(48 * time.Hour)
	jku := good
	jku.Headers = map[string]any{"jku": "https://evil.test/jwks.json"}
	none := noneToken(t, token)

	bad := []struct {
		name    string
		headers map[string]string
		reason  string
	}{
		{"alg none", map[string]string{"authorization": "Bearer " + none}, "jwt_bad_alg"},
		{"alg none, empty signature", map[string]string{"authorization": "Bearer " + strings.TrimSuffix(none, "c2ln")}, "jwt_malformed"},
		{"expired", map[string]string{"authorization": "Bearer " + is.Token(t, expiredClaims)}, "jwt_expired"},
		{"nbf in the future", map[string]string{"authorization": "Bearer " + is.Token(t, futureClaims)}, "jwt_not_yet_valid"},
		{"wrong iss", map[string]string{"authorization": "Bearer " + is.Token(t, wrongIss)}, "jwt_bad_issuer"},
		{"azp not allowed", map[string]string{"authorization": "Bearer " + is.Token(t, wrongAZP)}, "jwt_bad_azp"},
		{"lifetime beyond revocation retention", map[string]string{"authorization": "Bearer " + is.Token(t, longLived)}, "jwt_lifetime_too_long"},
		{"tampered payload", map[string]string{"authorization": "Bearer " + tamper(token)}, "jwt_bad_signature"},
		{"garbage segments", map[string]string{"authorization": "Bearer aaa.bbb.ccc"}, "jwt_malformed"},
		{"jwt in api-key", map[string]string{"api-key": token}, "api_key_header_not_a_key"},
		{"64 KiB token", map[string]string{"authorization": "Bearer " + strings.Repeat("a", 32<<10) + "." + strings.Repeat("b", 32<<10) + ".c"}, "oversized"},
	}
	jkuToken := is.Token(t, jku)
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + jkuToken})); got != 200 {
		t.Errorf("a jku header must be ignored, not followed nor refused: status %d", got)
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.Check(t, tt.headers)
			if got := authztest.HTTPStatus(resp); got != 401 {
				t.Fatalf("status %d, want 401", got)
			}
			if b := authztest.DeniedBody(t, resp); b.Error.Code != "UNAUTHORIZED" {
				t.Errorf("body %+v", b)
			}
			if !strings.Contains(r.Logs.String(), `"reason":"`+tt.reason+`"`) {
				t.Errorf("no denial logged with reason %s", tt.reason)
			}
		})
	}
	t.Run("no token in logs", func(t *testing.T) {
		if strings.Contains(r.Logs.String(), token[:40]) {
			t.Fatal("a token appears in the logs")
		}
	})
}

// noneToken re-encodes a token's payload with alg none and no signature.
func noneToken(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	return hdr + "." + parts[1] + ".c2ln" // a non-empty "signature", as attackers send
}

func tamper(token string) string {
	parts := strings.Split(token, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = []byte(strings.Replace(string(payload), "user_carol", "user_admin", 1))
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
}

// Logging a session out denies every token of it on every replica: cached
// ones and new ones.
func TestSessionRevocationAcrossReplicas(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	a, b := authztest.StartReplica(t, authztest.JWTConfig(f, is)), authztest.StartReplica(t, authztest.JWTConfig(f, is))
	claims := devissuer.Claims{Subject: "user_dave", SessionID: "sess_dave", AuthorizedParty: "https://app.odin.test"}
	tok := is.Token(t, claims)
	other := is.Token(t, devissuer.Claims{Subject: "user_erin", SessionID: "sess_erin", AuthorizedParty: "https://app.odin.test"})
	for _, r := range []*authztest.Replica{a, b} {
		for _, tk := range []string{tok, other} {
			if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tk})); got != 200 {
				t.Fatalf("before logout: %d", got)
			}
		}
		if r == a { // a writes the verified sessions to Redis in the background
			waitSessionEntries(t, f, 2)
		}
	}
	if b.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "redis"}) < 1 {
		t.Error("replica b verified tokens replica a had already cached in Redis")
	}
	start := time.Now()
	if _, err := f.Manager.RevokeSession(context.Background(), authztest.TestActor, "sess_dave", "logout"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*authztest.Replica{b, a} {
		for authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tok})) != 401 {
			if time.Since(start) > 2*time.Second {
				t.Fatal("revoked session still allowed after 2s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Logf("session revoke → denied on both replicas in %v", time.Since(start))
	fresh := is.Token(t, claims) // a new token of the same session
	for _, r := range []*authztest.Replica{a, b} {
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + fresh})); got != 401 {
			t.Errorf("new token of a revoked session: %d", got)
		}
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + other})); got != 200 {
			t.Errorf("another session was affected: %d", got)
		}
	}
	// A replica started after the revocation loads it from PostgreSQL.
	c := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	if got := authztest.HTTPStatus(c.Check(t, map[string]string{"authorization": "Bearer " + fresh})); got != 401 {
		t.Errorf("new replica allowed a revoked session: %d", got)
	}
}

// A JWKS that was never reachable: JWTs get 503, API keys are unaffected,
// and start-up does not hang.
func TestJWKSUnreachable(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	is.SetDown(true)
	cfg := authztest.JWTConfig(f, is)
	start := time.Now()
	r := authztest.StartReplica(t, cfg)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("start-up took %v with the JWKS down", took)
	}
	tok := is.Token(t, devissuer.Claims{AuthorizedParty: "https://app.odin.test"})
	resp := r.Check(t, map[string]string{"authorization": "Bearer " + tok})
	if got := authztest.HTTPStatus(resp); got != 503 || authztest.DeniedBody(t, resp).Error.Code != "UNAVAILABLE" {
		t.Fatalf("JWT with JWKS unreachable: %d %s", got, resp.GetDeniedResponse().GetBody())
	}
	key, _ := f.CreateKey(t, keystore.NewKey{})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 200 {
		t.Errorf("API key with JWKS unreachable: %d", got)
	}
	is.SetDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tok})) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("JWT still refused 5s after the JWKS came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A token signed by a key rotated out of the JWKS is refused once the
// replica has refreshed the set.
func TestRotatedOutKey(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	r := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	oldKID := is.KeyID("RS256")
	newKID, err := is.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	oldTok := is.Token(t, devissuer.Claims{AuthorizedParty: "https://app.odin.test", KeyID: oldKID})
	is.Retire(oldKID)
	time.Sleep(150 * time.Millisecond) // past MinRefreshInterval
	newTok := is.Token(t, devissuer.Claims{AuthorizedParty: "https://app.odin.test", KeyID: newKID})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + newTok})); got != 200 {
		t.Fatalf("token of the new key: %d", got)
	}
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + oldTok})); got != 401 {
		t.Fatalf("token of the retired key: %d, want 401", got)
	}
}

// waitSessionEntries waits until Redis holds n verified sessions (jwt:
// entries) under the fixture's prefix.
func waitSessionEntries(t *testing.T, f *authztest.Fixture, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		names, err := f.RedisNames("jwt:*")
		if err != nil {
			t.Fatal(err)
		}
		got := len(names)
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d verified sessions in Redis after 5s, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
