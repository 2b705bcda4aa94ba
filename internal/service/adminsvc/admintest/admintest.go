// Package admintest starts `odin admin` on a real PostgreSQL and Redis for
// tests, as net/http/httptest starts servers: an admin API on a fresh
// database with a dev identity provider (Env), and requests to it.
package admintest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// OperatorToken is the env's operator token.
const OperatorToken = "op-token-0123456789abcdef0123456789abcdef"

// WebhookSecret is the env's Clerk webhook signing secret.
var WebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// Env is an admin API on a fresh database, with a dev identity provider.
type Env struct {
	T      *testing.T
	URL    string // the admin API, served by httptest
	Issuer *devissuer.Provider
	Store  *pgstore.Store // a store of the env's own on the same database
	Logs   *testenv.LogBuffer
	Config adminsvc.Config // what the admin API was started with
}

// NewEnv starts an admin API on a fresh database and Redis prefix, trusting
// a dev identity provider, with the operator token and webhook secret
// above, until the test ends.
func NewEnv(t *testing.T) *Env { t.Helper(); return NewEnvWith(t, nil) }

// NewEnvWith is NewEnv with the admin's Config adjusted by adjust (nil: as
// is).
func NewEnvWith(t *testing.T, adjust func(*adminsvc.Config)) *Env {
	t.Helper()
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is := authztest.NewIssuer(t)
	cfg := adminsvc.Config{
		DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		JWT: is.Trust(), OperatorToken: OperatorToken, WebhookSecret: WebhookSecret,
		Scopes: []string{"scans:read", "scans:write", "admin"},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := adminsvc.New(ctx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 2})
	return &Env{T: t, URL: srv.URL, Issuer: is.Provider, Store: store, Logs: logs, Config: cfg}
}

// Token mints a session token for a user, optionally in an organisation.
func (e *Env) Token(user, org, role string, perms ...string) string {
	e.T.Helper()
	c := devissuer.Claims{Subject: user, SessionID: "sess_" + user}
	if org != "" {
		c.Org = &devissuer.Org{ID: org, Slug: org, Role: role, Permissions: perms}
	}
	tok, err := e.Issuer.Mint(c)
	if err != nil {
		e.T.Fatal(err)
	}
	return tok
}

// Response is an answer of the admin API.
type Response struct {
	Status int
	Header http.Header
	Body   map[string]any // the JSON body decoded, when it is an object
	Raw    string
}

// Do sends a request with an optional bearer token and body (a string as
// is, anything else as JSON), with X-Request-Id req-admin-test.
func (e *Env) Do(method, path, bearer string, body any) Response {
	e.T.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.URL+path, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("X-Request-Id", "req-admin-test")
	return Send(e.T, http.DefaultClient, req)
}

// Send sends req with c and reads the answer, its JSON body decoded when
// it is JSON.
func Send(t testing.TB, c *http.Client, req *http.Request) Response {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// ErrorCode is the error JSON's code.
func (r Response) ErrorCode() string {
	e, _ := r.Body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// ErrorField is the error JSON's field.
func (r Response) ErrorField() string {
	e, _ := r.Body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

// Str is the body's string member k.
func (r Response) Str(k string) string { v, _ := r.Body[k].(string); return v }

// MustStatus fails the test unless r has status want.
func (e *Env) MustStatus(r Response, want int) {
	e.T.Helper()
	if r.Status != want {
		e.T.Fatalf("status %d, want %d: %s", r.Status, want, r.Raw)
	}
}
