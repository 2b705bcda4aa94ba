package extauthz_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/credential/credentialtest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// forwardCheck asks the forward-auth port about GET /v1/scans as Envoy's
// http_service sends it, and returns the status and the decoded denial.
func forwardCheck(t *testing.T, r *authztest.Replica, authorization string) (int, authztest.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest("GET", r.HTTPURL+"/v1/scans", nil)
	req.Header.Set("Authorization", authorization)
	req.Header.Set("X-Request-Id", "req-admission")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var b authztest.ErrorBody
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(raw, &b); err != nil || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("denial %d without the JSON body: %s", resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, b
}

// TestSessionAdmission runs the admission table that odin admin is tested
// with too (credentialtest), through gRPC Check and forward-auth: a token
// without sid is refused unless --jwt-allow-no-sid, a missing iat counts
// from nbf (neither: refused), a tab after Bearer is a separator.
func TestSessionAdmission(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	strict := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	lenientCfg := authztest.JWTConfig(f, is)
	lenientCfg.JWTAllowNoSessionID = true
	lenient := authztest.StartReplica(t, lenientCfg)
	for _, tc := range credentialtest.AdmissionCases() {
		t.Run(tc.Name, func(t *testing.T) {
			r := strict
			if tc.AllowNoSID {
				r = lenient
			}
			claims := tc.Claims(devissuer.Claims{Subject: "user_adm", AuthorizedParty: "https://app.odin.test"}, time.Now())
			authz := tc.Header(is.Token(t, claims))
			want, wantCode := 200, ""
			if !tc.Allow {
				want, wantCode = 401, "UNAUTHORIZED"
			}
			before := strings.Count(r.Logs.String(), `"reason":"`+tc.Reason+`"`)
			resp := r.Check(t, map[string]string{"authorization": authz})
			if got := authztest.HTTPStatus(resp); got != want {
				t.Fatalf("gRPC: status %d, want %d; body %s", got, want, resp.GetDeniedResponse().GetBody())
			}
			if want != 200 && authztest.DeniedBody(t, resp).Error.Code != wantCode {
				t.Errorf("gRPC: body %s", resp.GetDeniedResponse().GetBody())
			}
			status, body := forwardCheck(t, r, authz)
			if status != want || body.Error.Code != wantCode {
				t.Fatalf("forward-auth: status %d %+v, want %d", status, body, want)
			}
			if !tc.Allow {
				if after := strings.Count(r.Logs.String(), `"reason":"`+tc.Reason+`"`); after < before+2 {
					t.Errorf("the two denials were not logged with reason %q", tc.Reason)
				}
			}
		})
	}
}

// A Clerk impersonation (act claim) is allowed as the impersonated user,
// and the impersonator is logged and sent as dynamic metadata.
func TestImpersonatedSession(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	r := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	tok := is.Token(t, devissuer.Claims{Subject: "user_x", AuthorizedParty: "https://app.odin.test",
		Extra: map[string]any{"act": map[string]any{"sub": "user_admin", "iss": "https://dashboard.clerk.com", "sid": "sess_admin"}}})
	resp := r.Check(t, map[string]string{"authorization": "Bearer " + tok})
	if resp.GetOkResponse() == nil {
		t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
	}
	if got := authztest.HeaderMap(resp.GetOkResponse().GetHeaders())["x-odin-subject"]; got != "user_x" {
		t.Errorf("x-odin-subject = %q, want the impersonated user", got)
	}
	meta := resp.GetDynamicMetadata().GetFields()
	if meta["actor"].GetStringValue() != "user_admin" || meta["subject"].GetStringValue() != "user_x" {
		t.Errorf("dynamic metadata %v: want actor user_admin, subject user_x", meta)
	}
	if !strings.Contains(r.Logs.String(), `"actor":"user_admin"`) {
		t.Error("the impersonator is not logged with the decision")
	}
}

// An emergency key rotation: once a refresh of the JWKS has removed the key
// that signed a session, the session is refused, from the LRU and from the
// Redis entry another replica wrote, though both caches would hold it for
// up to --session-ttl. While the JWKS is down the last good set stands, and
// so do the sessions it verified. Each replica learns of the removal on its
// own refresh: here the one a token of the new key triggers (an unknown kid).
func TestSessionOfRemovedKeyRefused(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	cfg := authztest.JWTConfig(f, is)
	cfg.JWT.RefreshInterval = time.Hour // only unknown kids refresh the set here
	a, b := authztest.StartReplica(t, cfg), authztest.StartReplica(t, cfg)
	check := func(r *authztest.Replica, tok string) int {
		t.Helper()
		return authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tok}))
	}
	oldKID := is.KeyID("RS256")
	tok := is.Token(t, devissuer.Claims{Subject: "user_rot", AuthorizedParty: "https://app.odin.test"})
	if got := check(a, tok); got != 200 {
		t.Fatalf("replica a before the rotation: %d", got)
	}
	waitSessionEntries(t, f, 1) // a writes the verified session to Redis in the background
	// b's first sight of the token is a's Redis entry, read without verifying.
	if got := check(b, tok); got != 200 {
		t.Fatalf("replica b before the rotation: %d", got)
	}
	if b.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "redis"}) != 1 {
		t.Fatal("replica b did not answer from a's Redis entry")
	}
	if _, err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	is.Retire(oldKID)
	fresh := is.Token(t, devissuer.Claims{Subject: "user_rot", AuthorizedParty: "https://app.odin.test"})

	// The JWKS is down: the refresh the new kid asks for fails, the last
	// good set stays, and with it the session. The wait puts replica a past
	// the 100 ms between refreshes (its start-up fetch may be more recent):
	// within them an unknown kid is refused (401) without asking.
	is.SetDown(true)
	time.Sleep(150 * time.Millisecond)
	if got := check(a, fresh); got != 503 {
		t.Fatalf("token of a new kid with the JWKS down: %d, want 503", got)
	}
	if got := check(a, tok); got != 200 {
		t.Fatalf("with the JWKS down the last good set must stand: %d", got)
	}
	is.SetDown(false)
	time.Sleep(150 * time.Millisecond) // past the 100 ms between unknown-kid refreshes

	// Replica a refreshes: its LRU entry of the removed key is refused.
	if got := check(a, fresh); got != 200 {
		t.Fatalf("token of the new key: %d", got)
	}
	resp := a.Check(t, map[string]string{"authorization": "Bearer " + tok})
	if got := authztest.HTTPStatus(resp); got != 401 || authztest.DeniedBody(t, resp).Error.Code != "UNAUTHORIZED" {
		t.Fatalf("replica a, LRU entry of a removed key: %d, want 401", got)
	}
	if !strings.Contains(a.Logs.String(), `"reason":"jwt_unknown_kid"`) {
		t.Error("the refusal is not logged with reason jwt_unknown_kid")
	}

	// A replica that has the new set finds a's Redis entry: refused too.
	c := authztest.StartReplica(t, cfg)
	if got := check(c, tok); got != 401 {
		t.Fatalf("replica c, Redis entry of a removed key: %d, want 401", got)
	}
	if c.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "redis"}) != 0 {
		t.Error("replica c answered from the Redis entry of a removed key")
	}

	// Replica b has not refreshed: the documented bound (--jwks-refresh).
	if got := check(b, tok); got != 200 {
		t.Fatalf("replica b before its own refresh: %d", got)
	}
	if got := check(b, fresh); got != 200 { // its refresh
		t.Fatalf("replica b, token of the new key: %d", got)
	}
	if got := check(b, tok); got != 401 {
		t.Fatalf("replica b after its refresh: %d, want 401", got)
	}
}
