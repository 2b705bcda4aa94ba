package admin_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/denial/denialtest"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// fvaToken mints a session token for user with the given fva claim (nil:
// none).
func fvaToken(t *testing.T, e *env, user string, fva any) string {
	t.Helper()
	tok, err := e.Issuer.Mint(devissuer.Claims{Subject: user, SessionID: "sess_" + user, Extra: map[string]any{"fva": fva}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// With --admin-reverify second_factor:10m, creating and rolling a key with
// a session token needs a second factor verified in the last 10 minutes;
// anything else is 403 with Clerk's reverification hint. The operator
// token is exempt, and other operations are not affected.
func TestAdminReverification(t *testing.T) {
	rv, err := jwtauth.ParseReverification("second_factor:10m")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *adminsvc.Config) { c.Reverify = &rv })
	fresh := fvaToken(t, e, "user_alice", []int{0, 3})
	create := map[string]any{"name": "k", "scopes": []string{"scans:read"}}

	r := e.Do("POST", "/v1/keys", fresh, create)
	e.MustStatus(r, 201)
	keyID := r.Str("id")

	hint := denialtest.ClerkHint(t, "second_factor", 10)
	for name, tok := range map[string]string{
		"stale":          fvaToken(t, e, "user_alice", []int{0, 10}),
		"never verified": fvaToken(t, e, "user_alice", []int{-1, -1}),
		"fva missing":    fvaToken(t, e, "user_alice", nil),
		"fva malformed":  fvaToken(t, e, "user_alice", []string{"0", "0"}),
	} {
		for _, req := range []struct{ method, path string }{{"POST", "/v1/keys"}, {"POST", "/v1/keys/" + keyID + "/roll"}, {"POST", "/v1/keys/" + keyID + "/enable"}} {
			var body any
			if req.path == "/v1/keys" {
				body = create
			}
			r := e.Do(req.method, req.path, tok, body)
			if r.Status != 403 || r.ErrorCode() != "FORBIDDEN" {
				t.Errorf("%s: %s %s: %d %s, want 403 FORBIDDEN", name, req.method, req.path, r.Status, r.Raw)
				continue
			}
			if diff := cmp.Diff(hint, r.Body["clerk_error"]); diff != "" {
				t.Errorf("%s: clerk_error (-Clerk's shape, +ours):\n%s", name, diff)
			}
			if r.Str("requestId") != "req-admin-test" || r.Header.Get("X-Request-Id") != "req-admin-test" {
				t.Errorf("%s: request id: %s", name, r.Raw)
			}
		}
	}

	stale := fvaToken(t, e, "user_alice", nil)
	e.MustStatus(e.Do("GET", "/v1/keys/"+keyID, stale, nil), 200)
	// Disabling narrows what a key may do: no step-up. Enabling it again
	// widens it: the step-up above (403), or a fresh session.
	e.MustStatus(e.Do("POST", "/v1/keys/"+keyID+"/disable", stale, nil), 200)
	r = e.Do("POST", "/v1/keys/"+keyID+"/enable", stale, nil)
	if r.Status != 403 || r.Body["clerk_error"] == nil {
		t.Errorf("enable with a stale session: %d %s, want 403 with clerk_error", r.Status, r.Raw)
	}
	e.MustStatus(e.Do("POST", "/v1/keys/"+keyID+"/enable", fresh, nil), 200)
	e.MustStatus(e.Do("POST", "/v1/keys/"+keyID+"/roll", fresh, nil), 201)
	e.MustStatus(e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "op", "scopes": []string{}, "user_id": "user_a"}), 201)

	// Off by default: the same stale session may create keys.
	off := newEnv(t)
	off.MustStatus(off.Do("POST", "/v1/keys", fvaToken(t, off, "user_bob", nil), create), 201)
}
