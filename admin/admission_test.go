package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/credential/credentialtest"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// doAuthorization is do with a raw Authorization value.
func (e *env) doAuthorization(method, path, authorization string) admintest.Response {
	e.T.Helper()
	req, _ := http.NewRequest(method, e.URL+path, nil)
	req.Header.Set("Authorization", authorization)
	return admintest.Send(e.T, http.DefaultClient, req)
}

// TestSessionAdmission runs the admission table odin authz is tested with
// (credentialtest) against the admin API: the two must agree on every row.
func TestSessionAdmission(t *testing.T) {
	strict := newEnv(t)
	lenient := newEnvWith(t, func(c *adminsvc.Config) { c.JWTAllowNoSessionID = true })
	for _, tc := range credentialtest.AdmissionCases() {
		t.Run(tc.Name, func(t *testing.T) {
			e := strict
			if tc.AllowNoSID {
				e = lenient
			}
			e.T = t
			claims := tc.Claims(devissuer.Claims{Subject: "user_adm"}, time.Now())
			tok, err := e.Issuer.Mint(claims)
			if err != nil {
				t.Fatal(err)
			}
			r := e.doAuthorization("GET", "/v1/keys", tc.Header(tok))
			if tc.Allow {
				e.MustStatus(r, 200)
				return
			}
			if r.Status != 401 || r.ErrorCode() != "UNAUTHORIZED" || r.Header.Get("Www-Authenticate") == "" {
				t.Fatalf("status %d %s, want 401 UNAUTHORIZED", r.Status, r.Raw)
			}
			if !strings.Contains(e.Logs.String(), "(reason "+tc.Reason+")") {
				t.Errorf("refusal not logged with reason %s", tc.Reason)
			}
		})
	}
}

// An impersonated session (Clerk's act claim) cannot mint keys unless the
// setting allows it; what it does is audited under the impersonator's name.
func TestImpersonation(t *testing.T) {
	impersonating := func(e *env) string {
		tok, err := e.Issuer.Mint(devissuer.Claims{Subject: "user_x", SessionID: "sess_imp",
			Extra: map[string]any{"act": map[string]any{"sub": "user_admin", "iss": "https://dashboard.clerk.com", "sid": "sess_admin"}}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	audit := func(e *env, action string) map[string]any {
		r := e.Do("GET", "/v1/audit-log?owner=user_x&action="+action, admintest.OperatorToken, nil)
		e.MustStatus(r, 200)
		events, _ := r.Body["events"].([]any)
		if len(events) != 1 {
			t.Fatalf("%s events: %s", action, r.Raw)
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
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "x's", "scopes": []string{"scans:read"}, "user_id": "user_x"})
	e.MustStatus(r, 201)
	id := r.Str("id")
	for _, req := range []struct{ method, path string }{{"POST", "/v1/keys"}, {"POST", "/v1/keys/" + id + "/roll"}} {
		var body any
		if req.path == "/v1/keys" {
			body = map[string]any{"name": "by the impersonator", "scopes": []string{"scans:read"}}
		}
		if r := e.Do(req.method, req.path, tok, body); r.Status != 403 || r.ErrorCode() != "FORBIDDEN" || r.Str("requestId") == "" {
			t.Fatalf("%s %s while impersonating: %d %s, want 403 FORBIDDEN", req.method, req.path, r.Status, r.Raw)
		}
	}
	e.MustStatus(e.Do("GET", "/v1/keys", tok, nil), 200) // reading is allowed
	e.MustStatus(e.Do("POST", "/v1/keys/"+id+"/revoke", tok, nil), 200)
	wantImpersonator(audit(e, "key.revoked"))

	allowed := newEnvWith(t, func(c *adminsvc.Config) { c.AllowImpersonatedKeys = true })
	r = allowed.Do("POST", "/v1/keys", impersonating(allowed), map[string]any{"name": "by the impersonator", "scopes": []string{"scans:read"}})
	allowed.MustStatus(r, 201)
	wantImpersonator(audit(allowed, "key.created"))
}
