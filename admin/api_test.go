package admin_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

// env is an admintest.Env with the requests these tests add.
type env struct{ *admintest.Env }

func newEnv(t *testing.T) *env { t.Helper(); return &env{admintest.NewEnv(t)} }

// newEnvWith is newEnv with the admin's Config adjusted by adjust (nil: as is).
func newEnvWith(t *testing.T, adjust func(*adminsvc.Config)) *env {
	t.Helper()
	return &env{admintest.NewEnvWith(t, adjust)}
}

func TestKeysEndpoints(t *testing.T) {
	e := newEnv(t)
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "CI", "scopes": []string{"scans:read"}, "user_id": "user_a", "tier": "pro"})
	e.MustStatus(r, 201)
	key, id := r.Str("key"), r.Str("id")
	if !keystore.ValidKey(key) || !strings.HasPrefix(id, "key_") || r.Str("hint") != keystore.KeyHint(key) || r.Str("tier") != "pro" {
		t.Fatalf("create: %s", r.Raw)
	}
	r = e.Do("GET", "/v1/keys/"+id, admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if strings.Contains(r.Raw, key) || r.Body["key"] != nil {
		t.Fatal("GET shows the key again")
	}
	r = e.Do("GET", "/v1/keys?user_id=user_a", admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if keys, _ := r.Body["keys"].([]any); len(keys) != 1 || strings.Contains(r.Raw, key) {
		t.Fatalf("list: %s", r.Raw)
	}

	r = e.Do("POST", "/v1/keys/"+id+"/roll", admintest.OperatorToken, map[string]any{"grace_seconds": 60})
	e.MustStatus(r, 201)
	newKey, newID := r.Str("key"), r.Str("id")
	prev, _ := r.Body["previous"].(map[string]any)
	if !keystore.ValidKey(newKey) || newID == id || prev["id"] != id || prev["expires_at"] == nil {
		t.Fatalf("roll: %s", r.Raw)
	}

	r = e.Do("POST", "/v1/keys/"+newID+"/revoke", admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	if r.Body["revoked"] != true {
		t.Fatalf("revoke: %s", r.Raw)
	}
	e.MustStatus(e.Do("POST", "/v1/keys/"+newID+"/revoke", admintest.OperatorToken, nil), 200) // idempotent
	if r := e.Do("POST", "/v1/keys/"+newID+"/roll", admintest.OperatorToken, nil); r.Status != 409 || r.ErrorCode() != "CONFLICT" {
		t.Fatalf("roll of a revoked key: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/keys/key_nope", admintest.OperatorToken, nil); r.Status != 404 || r.ErrorCode() != "NOT_FOUND" {
		t.Fatalf("unknown key: %d %s", r.Status, r.Raw)
	}

	r = e.Do("GET", "/v1/audit-log?owner=user_a", admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	var actions []string
	for _, ev := range r.Body["events"].([]any) {
		m := ev.(map[string]any)
		actions = append(actions, m["action"].(string))
		if m["request_id"] != "req-admin-test" || m["actor"] != "operator" {
			t.Errorf("event %v", m)
		}
	}
	if strings.Join(actions, ",") != "key.revoked,key.rolled,key.created" {
		t.Errorf("audit actions %v", actions)
	}
	logs := e.Logs.String()
	for _, secret := range []string{key, newKey, keystore.HashKey(key).String()} {
		if strings.Contains(logs, secret) || strings.Contains(r.Raw, secret) {
			t.Fatal("a key or hash leaked into logs or the audit log")
		}
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		method string
		path   string
		bearer string
		body   any
		status int
		code   string
		field  string
	}{
		{"no credentials", "GET", "/v1/keys", "", nil, 401, "UNAUTHORIZED", ""},
		{"wrong operator token", "GET", "/v1/keys", admintest.OperatorToken + "x", nil, 401, "UNAUTHORIZED", ""},
		{"invalid JSON", "POST", "/v1/keys", admintest.OperatorToken, "{", 400, "INVALID_REQUEST", ""},
		{"unknown field", "POST", "/v1/keys", admintest.OperatorToken, `{"name":"x","scopes":[],"user_id":"u","admin":true}`, 400, "INVALID_REQUEST", ""},
		{"wrong type", "POST", "/v1/keys", admintest.OperatorToken, `{"name":5,"scopes":[],"user_id":"u"}`, 400, "INVALID_REQUEST", "name"},
		{"missing name", "POST", "/v1/keys", admintest.OperatorToken, map[string]any{"scopes": []string{}, "user_id": "user_a"}, 400, "INVALID_REQUEST", "name"},
		{"missing scopes", "POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "x", "user_id": "user_a"}, 400, "INVALID_REQUEST", "scopes"},
		{"unknown scope", "POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "x", "scopes": []string{"root"}, "user_id": "user_a"}, 400, "INVALID_REQUEST", "scopes"},
		{"expiry in the past", "POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_a", "expires_at": "2020-01-01T00:00:00Z"}, 400, "INVALID_REQUEST", "expires_at"},
		{"body too large", "POST", "/v1/keys", admintest.OperatorToken, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 400, "INVALID_REQUEST", ""},
		{"bad limit", "GET", "/v1/keys?limit=0", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "limit"},
		{"bad cursor", "GET", "/v1/keys?cursor=not-a-cursor!", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", ""},
		{"bad unused_for", "GET", "/v1/keys?unused_for=soon", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "unused_for"},
		{"zero unused_for", "GET", "/v1/keys?unused_for=0d", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "unused_for"},
		{"negative unused_for", "GET", "/v1/keys?unused_for=-3h", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "unused_for"},
		{"bad grace", "POST", "/v1/keys/key_x/roll", admintest.OperatorToken, map[string]any{"grace_seconds": -1}, 400, "INVALID_REQUEST", "grace_seconds"},
		{"bad session id", "POST", "/v1/sessions/bad%20id/revoke", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "sid"},
		{"unknown endpoint", "GET", "/v1/nope", admintest.OperatorToken, nil, 404, "NOT_FOUND", ""},
		{"bad audit time", "GET", "/v1/audit-log?since=yesterday", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", "since"},
		{"malformed query escape", "GET", "/v1/keys?limit=%zz", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", ""},
		{"malformed audit cursor escape", "GET", "/v1/audit-log?cursor=%%25", admintest.OperatorToken, nil, 400, "INVALID_REQUEST", ""},
		{"body not an object", "POST", "/v1/keys", admintest.OperatorToken, `[]`, 400, "INVALID_REQUEST", ""},
		{"expiry not a time", "POST", "/v1/keys", admintest.OperatorToken, `{"name":"x","scopes":[],"user_id":"u","expires_at":"tomorrow"}`, 400, "INVALID_REQUEST", "expires_at"},
		{"expiry a number", "PATCH", "/v1/keys/key_x", admintest.OperatorToken, `{"expires_at":5}`, 400, "INVALID_REQUEST", "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.Do(tt.method, tt.path, tt.bearer, tt.body)
			if r.Status != tt.status || r.ErrorCode() != tt.code || (tt.field != "" && r.ErrorField() != tt.field) {
				t.Fatalf("%d %s, want %d %s field %q", r.Status, r.Raw, tt.status, tt.code, tt.field)
			}
			if r.Header.Get("Content-Type") != "application/json" || r.Str("requestId") != "req-admin-test" || r.Str("timestamp") == "" {
				t.Errorf("not the error body: %v %s", r.Header, r.Raw)
			}
			if tt.status == 401 && r.Header.Get("Www-Authenticate") == "" {
				t.Error("401 without www-authenticate")
			}
		})
	}
}

// TestBadInputMessages checks that a malformed body or query string is told
// apart in words a caller can act on, not in encoding/json's or time's.
func TestBadInputMessages(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name, method, path, body, want string
	}{
		{"unknown field", "POST", "/v1/keys", `{"name":"x","scopes":[],"user_id":"u","admin":true}`, `unknown field "admin"`},
		{"not an object", "POST", "/v1/keys", `["x"]`, "request body must be a JSON object, not array"},
		{"expiry not a time", "POST", "/v1/keys", `{"name":"x","scopes":[],"user_id":"u","expires_at":"tomorrow"}`, "expires_at: must be an RFC 3339 time, e.g. 2030-01-15T10:30:00Z"},
		{"malformed query", "GET", "/v1/keys?limit=%zz", "", "the query string is not valid: a malformed %-escape or a ';' separator"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.body != "" {
				body = tt.body
			}
			r := e.Do(tt.method, tt.path, admintest.OperatorToken, body)
			if got := r.Body["error"].(map[string]any)["message"]; r.Status != 400 || got != tt.want {
				t.Errorf("%d %q, want 400 %q", r.Status, got, tt.want)
			}
		})
	}
}

// Users manage their own keys; organisation admins their organisation's;
// anyone else's key is a 404.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	alice := e.Token("user_alice", "", "")
	bob := e.Token("user_bob", "", "")
	orgAdmin := e.Token("user_carol", "org_acme", "admin")
	orgMember := e.Token("user_dave", "org_acme", "member")

	r := e.Do("POST", "/v1/keys", alice, map[string]any{"name": "alice's", "scopes": []string{"scans:read"}})
	e.MustStatus(r, 201)
	aliceKey := r.Str("id")
	r = e.Do("POST", "/v1/keys", orgAdmin, map[string]any{"name": "acme CI", "scopes": []string{"scans:read"}, "org_id": "org_acme"})
	e.MustStatus(r, 201)
	orgKey := r.Str("id")
	if r.Str("org_id") != "org_acme" || r.Str("user_id") != "user_carol" {
		t.Fatalf("org key: %s", r.Raw)
	}

	for _, c := range []struct {
		name, bearer, key string
	}{{"bob on alice's key", bob, aliceKey}, {"org member on org key", orgMember, orgKey}, {"org admin on alice's key", orgAdmin, aliceKey}, {"alice on org key", alice, orgKey}} {
		for _, op := range []struct{ method, path string }{{"GET", ""}, {"POST", "/revoke"}, {"POST", "/roll"}} {
			if r := e.Do(op.method, "/v1/keys/"+c.key+op.path, c.bearer, nil); r.Status != 404 {
				t.Errorf("%s %s: %d, want 404", c.name, op.path, r.Status)
			}
		}
	}
	if r := e.Do("GET", "/v1/keys", bob, nil); strings.Contains(r.Raw, aliceKey) {
		t.Error("bob's list shows alice's key")
	}
	if r := e.Do("GET", "/v1/keys?owner=org", orgMember, nil); r.Status != 403 {
		t.Errorf("member lists org keys: %d", r.Status)
	}
	if r := e.Do("GET", "/v1/keys?owner=org", orgAdmin, nil); !strings.Contains(r.Raw, orgKey) {
		t.Errorf("admin cannot list org keys: %s", r.Raw)
	}
	if r := e.Do("POST", "/v1/keys", orgMember, map[string]any{"name": "x", "scopes": []string{}, "org_id": "org_acme"}); r.Status != 403 {
		t.Errorf("member creates an org key: %d", r.Status)
	}
	if r := e.Do("POST", "/v1/keys", alice, map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_bob"}); r.Status != 403 {
		t.Errorf("alice creates bob's key: %d", r.Status)
	}
	// Scopes wider than the caller's own.
	limited := e.Token("user_erin", "org_acme", "admin", "scans:read")
	if r := e.Do("POST", "/v1/keys", limited, map[string]any{"name": "x", "scopes": []string{"scans:write"}, "org_id": "org_acme"}); r.Status != 403 || !strings.Contains(r.Raw, "wider") {
		t.Errorf("wider scopes: %d %s", r.Status, r.Raw)
	}
	// Audit: alice sees her events, not the organisation's.
	r = e.Do("GET", "/v1/audit-log", alice, nil)
	if !strings.Contains(r.Raw, aliceKey) || strings.Contains(r.Raw, orgKey) {
		t.Errorf("alice's audit log: %s", r.Raw)
	}
	e.MustStatus(e.Do("POST", "/v1/keys/"+aliceKey+"/revoke", alice, nil), 200)
}

func (e *env) webhook(id string, at time.Time, payload string, sign bool) admintest.Response {
	e.T.Helper()
	req, _ := http.NewRequest("POST", e.URL+"/v1/webhooks/clerk", strings.NewReader(payload))
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", fmt.Sprint(at.Unix()))
	if sign {
		wh, _ := svix.NewWebhook(admintest.WebhookSecret)
		sig, _ := wh.Sign(id, at, []byte(payload))
		req.Header.Set("svix-signature", sig)
	} else {
		req.Header.Set("svix-signature", "v1,"+base64.StdEncoding.EncodeToString([]byte("forged signature 32 bytes long!!")))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.T.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := admintest.Response{Status: resp.StatusCode, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

func (e *env) sessionRevoked(sid string) bool {
	e.T.Helper()
	revs, err := e.Store.RevokedSessions(context.Background(), time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		e.T.Fatal(err)
	}
	for _, r := range revs {
		if r.SessionID == sid {
			return true
		}
	}
	return false
}

func TestClerkWebhook(t *testing.T) {
	e := newEnv(t)
	ended := `{"type":"session.ended","data":{"id":"sess_w1","user_id":"user_w"}}`
	if r := e.webhook("msg_bad", time.Now(), ended, false); r.Status != 401 || e.sessionRevoked("sess_w1") {
		t.Fatalf("bad signature: %d, revoked=%v", r.Status, e.sessionRevoked("sess_w1"))
	}
	if r := e.webhook("msg_stale", time.Now().Add(-10*time.Minute), ended, true); r.Status != 401 || e.sessionRevoked("sess_w1") {
		t.Fatalf("stale timestamp: %d", r.Status)
	}
	if r := e.webhook("msg_1", time.Now(), ended, true); r.Status != 200 || !e.sessionRevoked("sess_w1") {
		t.Fatalf("good delivery: %d %s", r.Status, r.Raw)
	}
	if r := e.webhook("msg_1", time.Now(), ended, true); r.Status != 200 || r.Str("status") != "duplicate" {
		t.Fatalf("replay: %d %s", r.Status, r.Raw)
	}
	events, _, _ := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Target: "sess_w1"})
	if len(events) != 1 || events[0].Actor != "clerk-webhook" {
		t.Fatalf("audit events for the session: %+v", events)
	}

	for _, id := range []string{"user_gone", "user_gone"} {
		e.MustStatus(e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "k", "scopes": []string{}, "user_id": id}), 201)
	}
	r := e.webhook("msg_2", time.Now(), `{"type":"user.deleted","data":{"id":"user_gone","deleted":true}}`, true)
	if r.Status != 200 || r.Str("revoked_keys") != "2" {
		t.Fatalf("user.deleted: %d %s", r.Status, r.Raw)
	}
	if r := e.webhook("msg_3", time.Now(), `{"type":"email.created","data":{"id":"x"}}`, true); r.Str("status") != "ignored" {
		t.Errorf("other event: %s", r.Raw)
	}
}

func TestSessionRevokeEndpoint(t *testing.T) {
	e := newEnv(t)
	tok := e.Token("user_frank", "", "")
	if r := e.Do("POST", "/v1/sessions/sess_other/revoke", tok, nil); r.Status != 404 {
		t.Errorf("user revokes someone else's session: %d", r.Status)
	}
	e.MustStatus(e.Do("POST", "/v1/sessions/sess_user_frank/revoke", tok, nil), 200)
	if !e.sessionRevoked("sess_user_frank") {
		t.Fatal("session not revoked")
	}
	// The logged-out session can no longer call the admin API.
	deadline := time.Now().Add(2 * time.Second)
	for e.Do("GET", "/v1/keys", tok, nil).Status != 401 {
		if time.Now().After(deadline) {
			t.Fatal("logged-out session still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.MustStatus(e.Do("POST", "/v1/sessions/sess_any/revoke", admintest.OperatorToken, nil), 200)
}

// Regressions: an overflowing grace is refused, not wrapped into a tiny
// one; an empty chunked body is "no body"; a delivery signed with the
// webhook-* headers is deduplicated on the id the signature covered.
func TestAdminEdgeCases(t *testing.T) {
	e := newEnv(t)
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "edge", "scopes": []string{}, "user_id": "user_e"})
	e.MustStatus(r, 201)
	id := r.Str("id")
	if r := e.Do("POST", "/v1/keys/"+id+"/roll", admintest.OperatorToken, `{"grace_seconds":18446744074}`); r.Status != 400 || r.ErrorField() != "grace_seconds" {
		t.Fatalf("overflowing grace: %d %s", r.Status, r.Raw)
	}
	req, _ := http.NewRequest("POST", e.URL+"/v1/keys/"+id+"/roll", io.NopCloser(strings.NewReader("")))
	req.ContentLength = -1 // sent chunked
	req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("roll with an empty chunked body: %d", resp.StatusCode)
	}

	payload := `{"type":"session.ended","data":{"id":"sess_hdr"}}`
	wh, _ := svix.NewWebhook(admintest.WebhookSecret)
	send := func(prefix, id string) string {
		now := time.Now()
		sig, _ := wh.Sign(id, now, []byte(payload))
		req, _ := http.NewRequest("POST", e.URL+"/v1/webhooks/clerk", strings.NewReader(payload))
		req.Header.Set(prefix+"-id", id)
		req.Header.Set(prefix+"-timestamp", fmt.Sprint(now.Unix()))
		req.Header.Set(prefix+"-signature", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body["status"]
	}
	if got := send("webhook", "msg_h1"); got != "processed" || !e.sessionRevoked("sess_hdr") {
		t.Fatalf("webhook-* delivery: %q", got)
	}
	if got := send("svix", "msg_h1"); got != "duplicate" {
		t.Errorf("same id over svix-* headers: %q, want duplicate", got)
	}
}

// Guessing credentials is throttled per client address: after the burst of
// failures, further failures from that address are 429, while successes
// never spend the budget and a good credential is always served.
func TestFailedAuthIsThrottled(t *testing.T) {
	e := newEnv(t)
	for range 30 { // successes do not count
		e.MustStatus(e.Do("GET", "/v1/keys", admintest.OperatorToken, nil), 200)
	}
	for i := range 20 {
		if r := e.Do("GET", "/v1/keys", "wrong-token-"+fmt.Sprint(i), nil); r.Status != 401 {
			t.Fatalf("failure %d: %d", i, r.Status)
		}
	}
	r := e.Do("GET", "/v1/keys", "wrong-token-again", nil)
	if r.Status != 429 || r.ErrorCode() != "RATE_LIMITED" || r.Header.Get("Retry-After") == "" || r.Str("requestId") == "" {
		t.Fatalf("after 20 failures: %d %v %s", r.Status, r.Header, r.Raw)
	}
	// The operator (or anyone holding a good credential: a leaked key's
	// owner revoking it) is served from a throttled address.
	if r := e.Do("GET", "/v1/keys", admintest.OperatorToken, nil); r.Status != 200 {
		t.Errorf("a good token from a throttled address: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/keys", e.Token("user_t", "", ""), nil); r.Status != 200 {
		t.Errorf("a good session token from a throttled address: %d %s", r.Status, r.Raw)
	}
	if r := e.Do("GET", "/v1/keys", "wrong-token-still", nil); r.Status != 429 {
		t.Errorf("a bad token after the good ones: %d", r.Status)
	}
}

// A path with an empty, "." or ".." segment gets the API's 404 error
// body, not net/http's redirect to the cleaned path (with an HTML body),
// on the API and under the console alike.
func TestUncleanPathsGetTheErrorBody(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/v1//keys", "/v1/keys/.", "/v1/keys/./x", "/v1/audit-log/../keys", "//v1/keys", "/console//keys"} {
		r := e.Do("GET", p, admintest.OperatorToken, nil)
		if r.Status != http.StatusNotFound || r.ErrorCode() != "NOT_FOUND" || r.Header.Get("Location") != "" {
			t.Errorf("GET %s: %d %q, location %q; want 404 NOT_FOUND with the error body", p, r.Status, r.Raw, r.Header.Get("Location"))
		}
	}
	if r := e.Do("GET", "/v1/keys", admintest.OperatorToken, nil); r.Status != http.StatusOK {
		t.Errorf("GET /v1/keys: %d", r.Status)
	}
}

// With --key-tiers the operator can only give a key one of those tiers, at
// creation and by PATCH; a user's own tier is not judged by it (a user
// naming another tier is 403 as before), and without the setting any
// well-formed tier is accepted.
func TestKeyTiers(t *testing.T) {
	e := newEnvWith(t, func(c *adminsvc.Config) { c.Tiers = []string{"free", "pro", "enterprise"} })
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "gold", "scopes": []string{}, "user_id": "user_t", "tier": "gold"})
	if r.Status != http.StatusBadRequest || r.ErrorField() != "tier" || !strings.Contains(r.Raw, `unknown tier \"gold\" (known: enterprise, free, pro)`) {
		t.Errorf("create with an unknown tier: %d %s", r.Status, r.Raw)
	}
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "pro", "scopes": []string{}, "user_id": "user_t", "tier": "pro"})
	e.MustStatus(r, 201)
	id := r.Str("id")
	if r := e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"tier": "platinum"}); r.Status != http.StatusBadRequest || r.ErrorField() != "tier" {
		t.Errorf("change to an unknown tier: %d %s", r.Status, r.Raw)
	}
	e.MustStatus(e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"tier": "enterprise"}), 200)
	e.MustStatus(e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "default", "scopes": []string{}, "user_id": "user_t"}), 201)

	open := newEnv(t)
	open.MustStatus(open.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "gold", "scopes": []string{}, "user_id": "user_t", "tier": "gold"}), 201)
}
