package adminsvc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const operatorToken = "op-token-0123456789abcdef0123456789abcdef"

var webhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// env is an admin API on a fresh database, with a dev identity provider.
type env struct {
	t      *testing.T
	url    string
	issuer *devissuer.Provider
	store  *pgstore.Store
	logs   *testenv.LogBuffer
	cfg    Config
}

func newEnv(t *testing.T) *env { t.Helper(); return newEnvWith(t, nil) }

// newEnvWith is newEnv with the admin's Config adjusted by adjust (nil: as is).
func newEnvWith(t *testing.T, adjust func(*Config)) *env {
	t.Helper()
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is, err := devissuer.New(devissuer.Options{Issuer: "https://clerk.odin.test"})
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(is.Handler())
	t.Cleanup(jwks.Close)
	cfg := Config{
		DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		JWT:           jwtauth.Config{JWKSURL: jwks.URL + devissuer.JWKSPath, Issuer: is.Issuer(), FetchTimeout: time.Second},
		OperatorToken: operatorToken, WebhookSecret: webhookSecret,
		Scopes: []string{"scans:read", "scans:write", "admin"},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := New(ctx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	store, err := pgstore.Open(ctx, db, pgstore.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &env{t: t, url: srv.URL, issuer: is, store: store, logs: logs, cfg: cfg}
}

// token mints a session token for a user, optionally in an organisation.
func (e *env) token(user, org, role string, perms ...string) string {
	e.t.Helper()
	c := devissuer.Claims{Subject: user, SessionID: "sess_" + user}
	if org != "" {
		c.Org = &devissuer.Org{ID: org, Slug: org, Role: role, Permissions: perms}
	}
	tok, err := e.issuer.Mint(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(method, path, bearer string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("X-Request-Id", "req-admin-test")
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

func (r response) errorCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errorField() string {
	e, _ := r.body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func (r response) str(k string) string { v, _ := r.body[k].(string); return v }

func (e *env) mustStatus(r response, want int) {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.raw)
	}
}

func TestKeysEndpoints(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/v1/keys", operatorToken, map[string]any{"name": "CI", "scopes": []string{"scans:read"}, "user_id": "user_a", "tier": "pro"})
	e.mustStatus(r, 201)
	key, id := r.str("key"), r.str("id")
	if !keystore.ValidKey(key) || !strings.HasPrefix(id, "key_") || r.str("hint") != keystore.KeyHint(key) || r.str("tier") != "pro" {
		t.Fatalf("create: %s", r.raw)
	}
	r = e.do("GET", "/v1/keys/"+id, operatorToken, nil)
	e.mustStatus(r, 200)
	if strings.Contains(r.raw, key) || r.body["key"] != nil {
		t.Fatal("GET shows the key again")
	}
	r = e.do("GET", "/v1/keys?user_id=user_a", operatorToken, nil)
	e.mustStatus(r, 200)
	if keys, _ := r.body["keys"].([]any); len(keys) != 1 || strings.Contains(r.raw, key) {
		t.Fatalf("list: %s", r.raw)
	}

	r = e.do("POST", "/v1/keys/"+id+"/roll", operatorToken, map[string]any{"grace_seconds": 60})
	e.mustStatus(r, 201)
	newKey, newID := r.str("key"), r.str("id")
	prev, _ := r.body["previous"].(map[string]any)
	if !keystore.ValidKey(newKey) || newID == id || prev["id"] != id || prev["expires_at"] == nil {
		t.Fatalf("roll: %s", r.raw)
	}

	r = e.do("POST", "/v1/keys/"+newID+"/revoke", operatorToken, nil)
	e.mustStatus(r, 200)
	if r.body["revoked"] != true {
		t.Fatalf("revoke: %s", r.raw)
	}
	e.mustStatus(e.do("POST", "/v1/keys/"+newID+"/revoke", operatorToken, nil), 200) // idempotent
	if r := e.do("POST", "/v1/keys/"+newID+"/roll", operatorToken, nil); r.status != 409 || r.errorCode() != "CONFLICT" {
		t.Fatalf("roll of a revoked key: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/keys/key_nope", operatorToken, nil); r.status != 404 || r.errorCode() != "NOT_FOUND" {
		t.Fatalf("unknown key: %d %s", r.status, r.raw)
	}

	r = e.do("GET", "/v1/audit-log?owner=user_a", operatorToken, nil)
	e.mustStatus(r, 200)
	var actions []string
	for _, ev := range r.body["events"].([]any) {
		m := ev.(map[string]any)
		actions = append(actions, m["action"].(string))
		if m["request_id"] != "req-admin-test" || m["actor"] != "operator" {
			t.Errorf("event %v", m)
		}
	}
	if strings.Join(actions, ",") != "key.revoked,key.rolled,key.created" {
		t.Errorf("audit actions %v", actions)
	}
	logs := e.logs.String()
	for _, secret := range []string{key, newKey, keystore.HashKey(key).String()} {
		if strings.Contains(logs, secret) || strings.Contains(r.raw, secret) {
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
		{"wrong operator token", "GET", "/v1/keys", operatorToken + "x", nil, 401, "UNAUTHORIZED", ""},
		{"invalid JSON", "POST", "/v1/keys", operatorToken, "{", 400, "INVALID_REQUEST", ""},
		{"unknown field", "POST", "/v1/keys", operatorToken, `{"name":"x","scopes":[],"user_id":"u","admin":true}`, 400, "INVALID_REQUEST", ""},
		{"wrong type", "POST", "/v1/keys", operatorToken, `{"name":5,"scopes":[],"user_id":"u"}`, 400, "INVALID_REQUEST", "name"},
		{"missing name", "POST", "/v1/keys", operatorToken, map[string]any{"scopes": []string{}, "user_id": "user_a"}, 400, "INVALID_REQUEST", "name"},
		{"missing scopes", "POST", "/v1/keys", operatorToken, map[string]any{"name": "x", "user_id": "user_a"}, 400, "INVALID_REQUEST", "scopes"},
		{"unknown scope", "POST", "/v1/keys", operatorToken, map[string]any{"name": "x", "scopes": []string{"root"}, "user_id": "user_a"}, 400, "INVALID_REQUEST", "scopes"},
		{"expiry in the past", "POST", "/v1/keys", operatorToken, map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_a", "expires_at": "2020-01-01T00:00:00Z"}, 400, "INVALID_REQUEST", "expires_at"},
		{"body too large", "POST", "/v1/keys", operatorToken, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 400, "INVALID_REQUEST", ""},
		{"bad limit", "GET", "/v1/keys?limit=0", operatorToken, nil, 400, "INVALID_REQUEST", "limit"},
		{"bad cursor", "GET", "/v1/keys?cursor=not-a-cursor!", operatorToken, nil, 400, "INVALID_REQUEST", ""},
		{"bad grace", "POST", "/v1/keys/key_x/roll", operatorToken, map[string]any{"grace_seconds": -1}, 400, "INVALID_REQUEST", "grace_seconds"},
		{"bad session id", "POST", "/v1/sessions/bad%20id/revoke", operatorToken, nil, 400, "INVALID_REQUEST", "sid"},
		{"unknown endpoint", "GET", "/v1/nope", operatorToken, nil, 404, "NOT_FOUND", ""},
		{"bad audit time", "GET", "/v1/audit-log?since=yesterday", operatorToken, nil, 400, "INVALID_REQUEST", "since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.bearer, tt.body)
			if r.status != tt.status || r.errorCode() != tt.code || (tt.field != "" && r.errorField() != tt.field) {
				t.Fatalf("%d %s, want %d %s field %q", r.status, r.raw, tt.status, tt.code, tt.field)
			}
			if r.header.Get("Content-Type") != "application/json" || r.str("requestId") != "req-admin-test" || r.str("timestamp") == "" {
				t.Errorf("not the error body: %v %s", r.header, r.raw)
			}
			if tt.status == 401 && r.header.Get("Www-Authenticate") == "" {
				t.Error("401 without www-authenticate")
			}
		})
	}
}

// Users manage their own keys; organisation admins their organisation's;
// anyone else's key is a 404.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	alice := e.token("user_alice", "", "")
	bob := e.token("user_bob", "", "")
	orgAdmin := e.token("user_carol", "org_acme", "admin")
	orgMember := e.token("user_dave", "org_acme", "member")

	r := e.do("POST", "/v1/keys", alice, map[string]any{"name": "alice's", "scopes": []string{"scans:read"}})
	e.mustStatus(r, 201)
	aliceKey := r.str("id")
	r = e.do("POST", "/v1/keys", orgAdmin, map[string]any{"name": "acme CI", "scopes": []string{"scans:read"}, "org_id": "org_acme"})
	e.mustStatus(r, 201)
	orgKey := r.str("id")
	if r.str("org_id") != "org_acme" || r.str("user_id") != "user_carol" {
		t.Fatalf("org key: %s", r.raw)
	}

	for _, c := range []struct {
		name, bearer, key string
	}{{"bob on alice's key", bob, aliceKey}, {"org member on org key", orgMember, orgKey}, {"org admin on alice's key", orgAdmin, aliceKey}, {"alice on org key", alice, orgKey}} {
		for _, op := range []struct{ method, path string }{{"GET", ""}, {"POST", "/revoke"}, {"POST", "/roll"}} {
			if r := e.do(op.method, "/v1/keys/"+c.key+op.path, c.bearer, nil); r.status != 404 {
				t.Errorf("%s %s: %d, want 404", c.name, op.path, r.status)
			}
		}
	}
	if r := e.do("GET", "/v1/keys", bob, nil); strings.Contains(r.raw, aliceKey) {
		t.Error("bob's list shows alice's key")
	}
	if r := e.do("GET", "/v1/keys?owner=org", orgMember, nil); r.status != 403 {
		t.Errorf("member lists org keys: %d", r.status)
	}
	if r := e.do("GET", "/v1/keys?owner=org", orgAdmin, nil); !strings.Contains(r.raw, orgKey) {
		t.Errorf("admin cannot list org keys: %s", r.raw)
	}
	if r := e.do("POST", "/v1/keys", orgMember, map[string]any{"name": "x", "scopes": []string{}, "org_id": "org_acme"}); r.status != 403 {
		t.Errorf("member creates an org key: %d", r.status)
	}
	if r := e.do("POST", "/v1/keys", alice, map[string]any{"name": "x", "scopes": []string{}, "user_id": "user_bob"}); r.status != 403 {
		t.Errorf("alice creates bob's key: %d", r.status)
	}
	// Scopes wider than the caller's own.
	limited := e.token("user_erin", "org_acme", "admin", "scans:read")
	if r := e.do("POST", "/v1/keys", limited, map[string]any{"name": "x", "scopes": []string{"scans:write"}, "org_id": "org_acme"}); r.status != 403 || !strings.Contains(r.raw, "wider") {
		t.Errorf("wider scopes: %d %s", r.status, r.raw)
	}
	// Audit: alice sees her events, not the organisation's.
	r = e.do("GET", "/v1/audit-log", alice, nil)
	if !strings.Contains(r.raw, aliceKey) || strings.Contains(r.raw, orgKey) {
		t.Errorf("alice's audit log: %s", r.raw)
	}
	e.mustStatus(e.do("POST", "/v1/keys/"+aliceKey+"/revoke", alice, nil), 200)
}

func (e *env) webhook(id string, at time.Time, payload string, sign bool) response {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/webhooks/clerk", strings.NewReader(payload))
	req.Header.Set("svix-id", id)
	req.Header.Set("svix-timestamp", fmt.Sprint(at.Unix()))
	if sign {
		wh, _ := svix.NewWebhook(webhookSecret)
		sig, _ := wh.Sign(id, at, []byte(payload))
		req.Header.Set("svix-signature", sig)
	} else {
		req.Header.Set("svix-signature", "v1,"+base64.StdEncoding.EncodeToString([]byte("forged signature 32 bytes long!!")))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (e *env) sessionRevoked(sid string) bool {
	e.t.Helper()
	revs, err := e.store.RevokedSessions(context.Background(), time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		e.t.Fatal(err)
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
	if r := e.webhook("msg_bad", time.Now(), ended, false); r.status != 401 || e.sessionRevoked("sess_w1") {
		t.Fatalf("bad signature: %d, revoked=%v", r.status, e.sessionRevoked("sess_w1"))
	}
	if r := e.webhook("msg_stale", time.Now().Add(-10*time.Minute), ended, true); r.status != 401 || e.sessionRevoked("sess_w1") {
		t.Fatalf("stale timestamp: %d", r.status)
	}
	if r := e.webhook("msg_1", time.Now(), ended, true); r.status != 200 || !e.sessionRevoked("sess_w1") {
		t.Fatalf("good delivery: %d %s", r.status, r.raw)
	}
	if r := e.webhook("msg_1", time.Now(), ended, true); r.status != 200 || r.str("status") != "duplicate" {
		t.Fatalf("replay: %d %s", r.status, r.raw)
	}
	events, _, _ := e.store.ListAudit(context.Background(), keystore.AuditFilter{Target: "sess_w1"})
	if len(events) != 1 || events[0].Actor != "clerk-webhook" {
		t.Fatalf("audit events for the session: %+v", events)
	}

	for _, id := range []string{"user_gone", "user_gone"} {
		e.mustStatus(e.do("POST", "/v1/keys", operatorToken, map[string]any{"name": "k", "scopes": []string{}, "user_id": id}), 201)
	}
	r := e.webhook("msg_2", time.Now(), `{"type":"user.deleted","data":{"id":"user_gone","deleted":true}}`, true)
	if r.status != 200 || r.str("revoked_keys") != "2" {
		t.Fatalf("user.deleted: %d %s", r.status, r.raw)
	}
	if r := e.webhook("msg_3", time.Now(), `{"type":"email.created","data":{"id":"x"}}`, true); r.str("status") != "ignored" {
		t.Errorf("other event: %s", r.raw)
	}
}

func TestSessionRevokeEndpoint(t *testing.T) {
	e := newEnv(t)
	tok := e.token("user_frank", "", "")
	if r := e.do("POST", "/v1/sessions/sess_other/revoke", tok, nil); r.status != 404 {
		t.Errorf("user revokes someone else's session: %d", r.status)
	}
	e.mustStatus(e.do("POST", "/v1/sessions/sess_user_frank/revoke", tok, nil), 200)
	if !e.sessionRevoked("sess_user_frank") {
		t.Fatal("session not revoked")
	}
	// The logged-out session can no longer call the admin API.
	deadline := time.Now().Add(2 * time.Second)
	for e.do("GET", "/v1/keys", tok, nil).status != 401 {
		if time.Now().After(deadline) {
			t.Fatal("logged-out session still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.mustStatus(e.do("POST", "/v1/sessions/sess_any/revoke", operatorToken, nil), 200)
}

// Regressions: an overflowing grace is refused, not wrapped into a tiny
// one; an empty chunked body is "no body"; a delivery signed with the
// webhook-* headers is deduplicated on the id the signature covered.
func TestAdminEdgeCases(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/v1/keys", operatorToken, map[string]any{"name": "edge", "scopes": []string{}, "user_id": "user_e"})
	e.mustStatus(r, 201)
	id := r.str("id")
	if r := e.do("POST", "/v1/keys/"+id+"/roll", operatorToken, `{"grace_seconds":18446744074}`); r.status != 400 || r.errorField() != "grace_seconds" {
		t.Fatalf("overflowing grace: %d %s", r.status, r.raw)
	}
	req, _ := http.NewRequest("POST", e.url+"/v1/keys/"+id+"/roll", io.NopCloser(strings.NewReader("")))
	req.ContentLength = -1 // sent chunked
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("roll with an empty chunked body: %d", resp.StatusCode)
	}

	payload := `{"type":"session.ended","data":{"id":"sess_hdr"}}`
	wh, _ := svix.NewWebhook(webhookSecret)
	send := func(prefix, id string) string {
		now := time.Now()
		sig, _ := wh.Sign(id, now, []byte(payload))
		req, _ := http.NewRequest("POST", e.url+"/v1/webhooks/clerk", strings.NewReader(payload))
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
		e.mustStatus(e.do("GET", "/v1/keys", operatorToken, nil), 200)
	}
	for i := range 20 {
		if r := e.do("GET", "/v1/keys", "wrong-token-"+fmt.Sprint(i), nil); r.status != 401 {
			t.Fatalf("failure %d: %d", i, r.status)
		}
	}
	r := e.do("GET", "/v1/keys", "wrong-token-again", nil)
	if r.status != 429 || r.errorCode() != "RATE_LIMITED" || r.header.Get("Retry-After") == "" || r.str("requestId") == "" {
		t.Fatalf("after 20 failures: %d %v %s", r.status, r.header, r.raw)
	}
	// The operator (or anyone holding a good credential: a leaked key's
	// owner revoking it) is served from a throttled address.
	if r := e.do("GET", "/v1/keys", operatorToken, nil); r.status != 200 {
		t.Errorf("a good token from a throttled address: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/keys", e.token("user_t", "", ""), nil); r.status != 200 {
		t.Errorf("a good session token from a throttled address: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/v1/keys", "wrong-token-still", nil); r.status != 429 {
		t.Errorf("a bad token after the good ones: %d", r.status)
	}
}
