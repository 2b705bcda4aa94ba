package admin_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// contractKeyChanges renames, narrows, re-scopes, disables and enables
// keys as each kind of caller, and every refusal of the rules.
func contractKeyChanges(t *testing.T, e *env, c contractClient) {
	op := admintest.OperatorToken
	gina, bob := e.Token("user_gina", "", ""), e.Token("user_bob", "", "")
	orgAdmin := e.Token("user_carol", "org_acme", "admin")
	r := c.do(t, call{method: "POST", path: keysPath, bearer: op, status: 201, body: map[string]any{
		"name": "gina's", "scopes": []string{"scans:read", "scans:write"}, "user_id": "user_gina"}})
	id := r.Str("id")
	path := keysPath + "/" + id
	patch := func(bearer string, body any, status int, exp expectation) admintest.Response {
		return c.do(t, call{method: "PATCH", path: path, bearer: bearer, body: body, status: status, expect: exp})
	}

	// The owner renames and narrows.
	if r := patch(gina, map[string]any{"name": "renamed"}, 200, expectation{}); r.Str("name") != "renamed" {
		t.Errorf("rename: %s", r.Raw)
	}
	if r := patch(gina, map[string]any{"scopes": []string{"scans:read"}}, 200, expectation{}); !strings.Contains(r.Raw, `"scopes":["scans:read"]`) {
		t.Errorf("narrow: %s", r.Raw)
	}
	patch(gina, map[string]any{"scopes": []string{"scans:read"}}, 200, expectation{}) // the same again: nothing changes
	for _, body := range []map[string]any{
		{"scopes": []string{"scans:read", "scans:write"}}, // widens
		{"tier": "pro"},
		{"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
		{"expires_at": nil},
	} {
		patch(gina, body, 403, expectation{})
	}
	patch(bob, map[string]any{"name": "mine"}, 404, expectation{})
	patch(orgAdmin, map[string]any{"name": "mine"}, 404, expectation{})
	c.do(t, call{method: "PATCH", path: keysPath + "/key_nope", bearer: op, body: map[string]any{"name": "x"}, status: 404})

	// The operator sets anything.
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r = patch(op, map[string]any{"scopes": []string{"scans:write"}, "tier": "enterprise", "expires_at": exp.Format(time.RFC3339)}, 200, expectation{})
	if r.Str("tier") != "enterprise" || r.Str("expires_at") != exp.Format(time.RFC3339) {
		t.Errorf("operator's change: %s", r.Raw)
	}
	if r := patch(op, map[string]any{"expires_at": nil}, 200, expectation{}); r.Body["expires_at"] != nil {
		t.Errorf("expires_at null keeps an expiry: %s", r.Raw)
	}

	// Bad requests: refused by the document and the server alike, or by
	// the server on what the document cannot know.
	for _, body := range []any{"{", "{}", `{"name":""}`, `{"name":"x","admin":true}`, `{"scopes":"scans:read"}`,
		`{"scopes":["BAD SCOPE"]}`, `{"tier":"Pro!"}`, `{"expires_at":"tomorrow"}`, `{"name":"x"} {}`} {
		exp := invalid
		if body == `{"name":"x"} {}` { // kin-openapi ignores trailing data
			exp = expectation{}
		}
		patch(op, body, 400, exp)
	}
	for _, body := range []map[string]any{{"scopes": []string{"root"}}, {"expires_at": "2020-01-01T00:00:00Z"}, {"expires_at": "0001-01-01T00:00:00Z"}} {
		patch(op, body, 400, expectation{})
	}

	// Disable and enable: the owner, an organisation admin for an
	// organisation key, the operator.
	for _, verb := range []string{"disable", "disable", "enable", "enable"} {
		r := c.do(t, call{method: "POST", path: path + "/" + verb, bearer: gina, status: 200})
		if want := verb == "disable"; r.Body["disabled"] != want || (r.Body["disabled_at"] != nil) != want {
			t.Errorf("%s: %s", verb, r.Raw)
		}
	}
	r = c.do(t, call{method: "POST", path: keysPath, bearer: orgAdmin, status: 201, body: map[string]any{"name": "acme", "scopes": []string{}, "org_id": "org_acme"}})
	orgKey := r.Str("id")
	c.do(t, call{method: "POST", path: keysPath + "/" + orgKey + "/disable", bearer: orgAdmin, status: 200})
	c.do(t, call{method: "POST", path: keysPath + "/" + orgKey + "/enable", bearer: op, status: 200})
	for _, verb := range []string{"disable", "enable"} {
		c.do(t, call{method: "POST", path: path + "/" + verb, bearer: bob, status: 404})
		c.do(t, call{method: "POST", path: keysPath + "/key_nope/" + verb, bearer: op, status: 404})
		c.do(t, call{method: "POST", path: path + "/" + verb, status: 401, expect: invalid})
	}
	c.do(t, call{method: "PATCH", path: path, body: map[string]any{"name": "x"}, status: 401, expect: invalid})

	// A revoked key can be neither changed nor enabled.
	c.do(t, call{method: "POST", path: path + "/revoke", bearer: gina, status: 200})
	patch(op, map[string]any{"name": "x"}, 409, expectation{})
	for _, verb := range []string{"disable", "enable"} {
		c.do(t, call{method: "POST", path: path + "/" + verb, bearer: op, status: 409})
	}

	// Each change is audited, with what changed.
	r = c.do(t, call{method: "GET", path: "/v1/audit-log?action=key.updated&target=" + id, bearer: op, status: 200})
	if events, _ := r.Body["events"].([]any); len(events) != 4 || !strings.Contains(r.Raw, `"from":"gina's","to":"renamed"`) {
		t.Errorf("key.updated events (want 4: rename, narrow, operator's, expiry removed): %s", r.Raw)
	}
	for _, action := range []string{"key.disabled", "key.enabled"} {
		r := c.do(t, call{method: "GET", path: "/v1/audit-log?action=" + action + "&target=" + id, bearer: op, status: 200})
		if events, _ := r.Body["events"].([]any); len(events) != 1 {
			t.Errorf("%s events (want 1: a second one changes nothing): %s", action, r.Raw)
		}
	}
}

// The same API on the embedded store of odin dev (SQLite, no Redis, the
// caches told synchronously): a change answered 200 is in force in the
// process's key cache.
func TestKeyChangesOnSQLite(t *testing.T) {
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "odin.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cache, err := keystore.NewCache(store, nil, keystore.CacheOptions{}, keystore.NoPrepare, keystore.NewMetrics(nil), logger)
	if err != nil {
		t.Fatal(err)
	}
	manager := keystore.NewManager(store, nil, keystore.ManagerOptions{Notify: cache.Invalidate, SingleProcess: true})
	srv, err := admin.New(admin.Options{Store: store, Manager: manager, Revoked: keystore.NewRevokedSessions(store, nil, 0, logger),
		OperatorToken: sqliteOperatorToken, Scopes: []string{"scans:read", "scans:write"},
		Logger: logger, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	do := func(method, path, body string, want int) admintest.Response {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+sqliteOperatorToken)
		r := admintest.Send(t, ts.Client(), req)
		if r.Status != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, r.Raw, want)
		}
		return r
	}
	r := do("POST", "/v1/keys", `{"name":"dev","scopes":["scans:read","scans:write"],"user_id":"user_dev"}`, 201)
	plaintext, id := r.Str("key"), r.Str("id")
	h, err := keystore.ParseKey(plaintext)
	if err != nil {
		t.Fatal(err)
	}
	usable := func() error {
		t.Helper()
		e, err := cache.Lookup(context.Background(), h, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return e.Usable(time.Now())
	}
	if err := usable(); err != nil { // cached
		t.Fatal(err)
	}
	if r := do("PATCH", "/v1/keys/"+id, `{"name":"renamed","scopes":["scans:read"],"tier":"pro"}`, 200); r.Str("tier") != "pro" || r.Str("name") != "renamed" {
		t.Errorf("PATCH: %s", r.Raw)
	}
	do("PATCH", "/v1/keys/"+id, `{"expires_at":"2020-01-01T00:00:00Z"}`, 400)
	do("POST", "/v1/keys/"+id+"/disable", "", 200)
	if err := usable(); !errors.Is(err, keystore.ErrDisabled) {
		t.Errorf("cached key after the disable answered: %v, want ErrDisabled", err)
	}
	do("POST", "/v1/keys/"+id+"/enable", "", 200)
	if err := usable(); err != nil {
		t.Errorf("cached key after the enable answered: %v", err)
	}
	do("POST", "/v1/keys/"+id+"/revoke", "", 200)
	do("POST", "/v1/keys/"+id+"/enable", "", 409)
	do("PATCH", "/v1/keys/"+id, `{"name":"x"}`, 409)
}

const sqliteOperatorToken = "operator-token-of-the-sqlite-test-0123456789"
