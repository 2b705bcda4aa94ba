package adminsvc

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/credential/credentialtest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// doAuthorization is do with a raw Authorization value.
func (e *env) doAuthorization(method, path, authorization string) response {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, nil)
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// TestSessionAdmission runs the admission table odin authz is tested with
// (credentialtest) against the admin API: the two must agree on every row.
func TestSessionAdmission(t *testing.T) {
	strict := newEnv(t)
	lenient := newEnvWith(t, func(c *Config) { c.JWTAllowNoSessionID = true })
	for _, tc := range credentialtest.AdmissionCases() {
		t.Run(tc.Name, func(t *testing.T) {
			e := strict
			if tc.AllowNoSID {
				e = lenient
			}
			e.t = t
			claims := tc.Claims(devissuer.Claims{Subject: "user_adm"}, time.Now())
			tok, err := e.issuer.Mint(claims)
			if err != nil {
				t.Fatal(err)
			}
			r := e.doAuthorization("GET", "/v1/keys", tc.Header(tok))
			if tc.Allow {
				e.mustStatus(r, 200)
				return
			}
			if r.status != 401 || r.errorCode() != "UNAUTHORIZED" || r.header.Get("Www-Authenticate") == "" {
				t.Fatalf("status %d %s, want 401 UNAUTHORIZED", r.status, r.raw)
			}
			if !strings.Contains(e.logs.String(), "(reason "+tc.Reason+")") {
				t.Errorf("refusal not logged with reason %s", tc.Reason)
			}
		})
	}
}

// An impersonated session (Clerk's act claim) cannot mint keys unless the
// setting allows it; what it does is audited under the impersonator's name.
func TestImpersonation(t *testing.T) {
	impersonating := func(e *env) string {
		tok, err := e.issuer.Mint(devissuer.Claims{Subject: "user_x", SessionID: "sess_imp",
			Extra: map[string]any{"act": map[string]any{"sub": "user_admin", "iss": "https://dashboard.clerk.com", "sid": "sess_admin"}}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	audit := func(e *env, action string) map[string]any {
		r := e.do("GET", "/v1/audit-log?owner=user_x&action="+action, operatorToken, nil)
		e.mustStatus(r, 200)
		events, _ := r.body["events"].([]any)
		if len(events) != 1 {
			t.Fatalf("%s events: %s", action, r.raw)
		}
		return events[0].(map[string]any)
	}
	wantImpersonator := func(ev map[string]any) {
		t.Helper()
		details, _ := ev["details"].(map[string]any)
		if ev["actor"] != "user_admin" || details["impersonating"] != "user_x" {
			t.Errorf("audit event %v: want actor user_admin, details.impersonating user_x", ev)
		}
	}

	e := newEnv(t)
	tok := impersonating(e)
	r := e.do("POST", "/v1/keys", operatorToken, map[string]any{"name": "x's", "scopes": []string{"scans:read"}, "user_id": "user_x"})
	e.mustStatus(r, 201)
	id := r.str("id")
	for _, req := range []struct{ method, path string }{{"POST", "/v1/keys"}, {"POST", "/v1/keys/" + id + "/roll"}} {
		var body any
		if req.path == "/v1/keys" {
			body = map[string]any{"name": "by the impersonator", "scopes": []string{"scans:read"}}
		}
		if r := e.do(req.method, req.path, tok, body); r.status != 403 || r.errorCode() != "FORBIDDEN" || r.str("requestId") == "" {
			t.Fatalf("%s %s while impersonating: %d %s, want 403 FORBIDDEN", req.method, req.path, r.status, r.raw)
		}
	}
	e.mustStatus(e.do("GET", "/v1/keys", tok, nil), 200) // reading is allowed
	e.mustStatus(e.do("POST", "/v1/keys/"+id+"/revoke", tok, nil), 200)
	wantImpersonator(audit(e, "key.revoked"))

	allowed := newEnvWith(t, func(c *Config) { c.AllowImpersonatedKeys = true })
	r = allowed.do("POST", "/v1/keys", impersonating(allowed), map[string]any{"name": "by the impersonator", "scopes": []string{"scans:read"}})
	allowed.mustStatus(r, 201)
	wantImpersonator(audit(allowed, "key.created"))
}
