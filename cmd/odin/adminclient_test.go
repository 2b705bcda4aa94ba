package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

const testAdminToken = "cli-operator-token-0123456789abcdef0123456789"

// adminAPI is a real `odin admin` on a fresh database, served with
// httptest, with a dev identity provider for session tokens.
type adminAPI struct {
	url    string
	db     string
	store  *pgstore.Store
	issuer *devissuer.Provider
}

func startAdminAPI(t *testing.T) adminAPI {
	t.Helper()
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is := authztest.NewIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := adminsvc.New(ctx, adminsvc.Config{
		DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		JWT: is.Trust(), OperatorToken: testAdminToken, Scopes: []string{"scans:read", "scans:write"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(checkOpenAPI(t, svc.Handler()))
	t.Cleanup(srv.Close)
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 2})
	return adminAPI{url: srv.URL, db: db, store: store, issuer: is.Provider}
}

// checkOpenAPI checks what the CLI sends and gets against the admin API's
// OpenAPI document: every answer matches it, and every request the server
// accepts does too. (admin/openapi_test.go holds the full contract test.)
func checkOpenAPI(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	raw, err := os.ReadFile("../../admin/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:                func(context.Context, *openapi3filter.AuthenticationInput) error { return nil },
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())

		req := r.Clone(context.Background())
		req.Body = io.NopCloser(bytes.NewReader(body))
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("the CLI called %s %s, which the OpenAPI document does not have", r.Method, r.URL.Path)
			return
		}
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && rec.Code < 400 {
			t.Errorf("the CLI sent %s %s, which the OpenAPI document refuses: %v", r.Method, r.URL.Path, err)
		}
		if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: rec.Code, Header: rec.Header(), Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: opts,
		}); err != nil {
			t.Errorf("%s %s answered %d, which the OpenAPI document does not allow: %v", r.Method, r.URL.Path, rec.Code, err)
		}
	})
}

// useAPI points the CLI at the admin API with token, and at no database.
func useAPI(t *testing.T, url, token string) {
	t.Setenv("ODIN_ADMIN_URL", url)
	t.Setenv("ODIN_ADMIN_TOKEN", token)
	t.Setenv("ODIN_DATABASE_URL", "")
	t.Setenv("ODIN_REDIS_URL", "")
}

// useDatabase points the CLI at the database, and at no admin API.
func useDatabase(t *testing.T, db string) {
	t.Setenv("ODIN_ADMIN_URL", "")
	t.Setenv("ODIN_ADMIN_TOKEN", "")
	t.Setenv("ODIN_DATABASE_URL", db)
	t.Setenv("ODIN_REDIS_URL", "")
}

// cli runs odin and fails the test if the admin token shows anywhere in
// what it printed or returned.
func cli(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	out, errOut, err := odin(t, args...)
	secrets := []string{testAdminToken}
	if tok := os.Getenv("ODIN_ADMIN_TOKEN"); len(tok) > 8 {
		secrets = append(secrets, tok)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) || strings.Contains(errOut, s) || (err != nil && strings.Contains(err.Error(), s)) {
			t.Fatalf("odin %v printed the admin token", args)
		}
	}
	return out, errOut, err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, args...)
	if err != nil {
		t.Fatalf("odin %v: %v\n%s", args, err, errOut)
	}
	return out
}

func decodeJSON[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	return v
}

func TestKeysOverAdminAPI(t *testing.T) {
	api := startAdminAPI(t)
	useAPI(t, api.url, testAdminToken)

	out := mustCLI(t, "keys", "create", "--name", "GitHub Actions - Production", "--owner", "user_ci", "--scopes", "scans:read,scans:write", "--tier", "pro", "--expires-in", "720h")
	key := strings.TrimSuffix(out, "\n")
	if strings.Contains(key, "\n") || !keystore.ValidKey(key) {
		t.Fatalf("create printed %q: want the key alone on stdout", out)
	}
	created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "org key", "--owner", "org_acme", "--json"))
	if !keystore.ValidKey(created.Plaintext) || created.OrgID != "org_acme" || !strings.HasPrefix(created.ID, "key_") || created.Revoked {
		t.Fatalf("create --json = %+v", created)
	}

	out = mustCLI(t, "keys", "list")
	if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, keystore.KeyHint(key)) || strings.Contains(out, key) || strings.Contains(out, created.Plaintext) {
		t.Fatalf("list must be a table of hints, never keys:\n%s", out)
	}
	page := decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", "org_acme", "--json"))
	if len(page.Keys) != 1 || page.Keys[0].ID != created.ID {
		t.Fatalf("list --owner org_acme --json = %+v", page)
	}
	page = decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", "user_ci", "--json"))
	if len(page.Keys) != 1 {
		t.Fatalf("list --owner user_ci --json = %+v", page)
	}
	id := page.Keys[0].ID

	// get: the record and its hourly usage.
	hour := time.Now().UTC().Truncate(time.Hour)
	if err := api.store.RecordUsage(context.Background(), []keystore.Usage{{KeyID: id, Hour: hour, Count: 42, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	out = mustCLI(t, "keys", "get", id)
	for _, want := range []string{id, keystore.KeyHint(key), "scans:read,scans:write", "pro", "active", hour.Format("2006-01-02 15:00"), "42"} {
		if !strings.Contains(out, want) {
			t.Errorf("keys get does not show %q:\n%s", want, out)
		}
	}
	got := decodeJSON[keyRecord](t, mustCLI(t, "keys", "get", id, "--json"))
	if len(got.Usage) != 1 || got.Usage[0].Count != 42 || got.LastUsedAt.IsZero() {
		t.Errorf("keys get --json = %+v", got)
	}

	// roll: the new key alone; the old one works for the grace period.
	out = mustCLI(t, "keys", "roll", id, "--grace", "1h")
	newKey := strings.TrimSuffix(out, "\n")
	if !keystore.ValidKey(newKey) || newKey == key {
		t.Fatalf("roll printed %q: want the new key alone", out)
	}
	old := decodeJSON[keyRecord](t, mustCLI(t, "keys", "get", id, "--json"))
	if d := time.Until(old.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("the old key expires in %s, want 1h", d)
	}
	page = decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", "user_ci", "--revoked", "no", "--limit", "1", "--json"))
	newID := page.Keys[0].ID
	rolled := decodeJSON[rolledKeyRecord](t, mustCLI(t, "keys", "roll", newID, "--json"))
	if !keystore.ValidKey(rolled.Plaintext) || rolled.Previous.ID != newID || rolled.ID == newID || !rolled.Previous.Expired {
		t.Errorf("roll --json = %+v", rolled)
	}

	// revoke, then the list shows it revoked.
	out = mustCLI(t, "keys", "revoke", rolled.ID)
	if !strings.HasPrefix(out, "revoked "+rolled.ID) {
		t.Errorf("revoke printed %q", out)
	}
	if r := decodeJSON[keyRecord](t, mustCLI(t, "keys", "revoke", created.ID, "--json")); !r.Revoked || r.RevokedAt.IsZero() {
		t.Errorf("revoke --json = %+v", r)
	}
	out = mustCLI(t, "keys", "list", "--revoked", "yes")
	if !strings.Contains(out, rolled.ID) || !strings.Contains(out, created.ID) || !strings.Contains(out, "revoked") {
		t.Errorf("list --revoked yes:\n%s", out)
	}

	out = mustCLI(t, "sessions", "revoke", "sess_123")
	if !strings.HasPrefix(out, "revoked session sess_123 at ") {
		t.Errorf("sessions revoke printed %q", out)
	}
	if r := decodeJSON[keystore.RevokedSession](t, mustCLI(t, "sessions", "revoke", "sess_456", "--json")); r.SessionID != "sess_456" || r.ExpiresAt.IsZero() {
		t.Errorf("sessions revoke --json = %+v", r)
	}

	// The API, not the CLI, names the actor in the audit log.
	events, _, err := api.store.ListAudit(context.Background(), keystore.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 8 || slices.ContainsFunc(events, func(ev keystore.AuditEvent) bool { return ev.Actor != "operator" }) {
		t.Errorf("audit log: %+v", events)
	}
}

func TestAdminAPIErrors(t *testing.T) {
	api := startAdminAPI(t)
	useAPI(t, api.url, testAdminToken)
	created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "x", "--owner", "user_1", "--json"))
	mustCLI(t, "keys", "revoke", created.ID)
	first := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "y", "--owner", "user_1", "--json"))
	graced := decodeJSON[rolledKeyRecord](t, mustCLI(t, "keys", "roll", first.ID, "--grace", "1h", "--json"))

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown key", []string{"keys", "revoke", "key_doesnotexist"}, nil, []string{"keys revoke: admin API: NOT_FOUND: no such key [HTTP 404, request req-"}},
		{"unknown key get", []string{"keys", "get", "key_doesnotexist"}, nil, []string{"NOT_FOUND"}},
		{"unknown key roll", []string{"keys", "roll", "key_doesnotexist"}, nil, []string{"NOT_FOUND"}},
		{"unknown scope", []string{"keys", "create", "--name", "x", "--owner", "user_1", "--scopes", "root"}, nil, []string{"INVALID_REQUEST", `unknown scope "root"`, "field scopes"}},
		{"no owner", []string{"keys", "create", "--name", "x"}, nil, []string{"INVALID_REQUEST", "field user_id"}},
		{"no name", []string{"keys", "create", "--owner", "user_1"}, nil, []string{"INVALID_REQUEST", "field name"}},
		{"roll a revoked key", []string{"keys", "roll", created.ID}, nil, []string{"CONFLICT", "only an active key can be rolled"}},
		{"roll a rolled key", []string{"keys", "roll", graced.Previous.ID}, nil, []string{"CONFLICT", "already been rolled; its successor is " + graced.ID, "[HTTP 409"}},
		{"bad session id", []string{"sessions", "revoke", "bad id"}, nil, []string{"INVALID_REQUEST", "field sid"}},
		{"wrong token", []string{"keys", "list"}, map[string]string{"ODIN_ADMIN_TOKEN": testAdminToken + "x"}, []string{"UNAUTHORIZED", "Invalid or expired authentication token"}},
		{"no token", []string{"keys", "list"}, map[string]string{"ODIN_ADMIN_TOKEN": ""}, []string{"an admin token is required with --admin-url"}},
		{"not an http url", []string{"keys", "list", "--admin-url", "ftp://example.com"}, nil, []string{"--admin-url"}},
		{"url with a query", []string{"keys", "list", "--admin-url", api.url + "?x=1"}, nil, []string{"--admin-url"}},
		{"a path for a key id", []string{"keys", "get", ".."}, nil, []string{`".." is not a key id`}},
		{"negative grace", []string{"keys", "roll", created.ID, "--grace", "-1s"}, nil, []string{"--grace"}},
		{"fractional grace", []string{"keys", "roll", created.ID, "--grace", "1.5s"}, nil, []string{"whole seconds"}},
		{"grace too long", []string{"keys", "roll", created.ID, "--grace", "721h"}, nil, []string{"--grace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			out, _, err := cli(t, tt.args...)
			if err == nil || out != "" {
				t.Fatalf("odin %v: out %q, err %v; want an error and nothing on stdout", tt.args, out, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("odin %v: %v; want it to contain %q", tt.args, err, w)
				}
			}
		})
	}
}

// The token goes to the admin API and nowhere else, and a server that is
// down, slow or not the admin API fails the command quickly and clearly.
func TestAdminAPITransport(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			elsewhere.Add(1)
		}
	}))
	defer other.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/redirect/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/proxy/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
	})
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name, url string
		want      string
	}{
		{"redirect", srv.URL + "/redirect", "HTTP 307 Temporary Redirect, and not an admin API answer"},
		{"not the admin API", srv.URL + "/proxy", "HTTP 502 Bad Gateway, and not an admin API answer"},
		{"slow", srv.URL + "/slow", "Client.Timeout exceeded"},
		{"down", closed, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useAPI(t, tt.url, testAdminToken)
			start := time.Now()
			out, _, err := cli(t, "keys", "revoke", "key_x", "--admin-timeout", "300ms")
			if err == nil || out != "" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("out %q, err %v; want an error containing %q", out, err, tt.want)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
	if elsewhere.Load() != 0 {
		t.Error("the admin token was sent to the server a redirect named")
	}
}

// A Clerk user manages their own keys with their session token.
func TestAdminAPISessionToken(t *testing.T) {
	api := startAdminAPI(t)
	tok, err := api.issuer.Mint(devissuer.Claims{Subject: "user_zoe", SessionID: "sess_zoe"})
	if err != nil {
		t.Fatal(err)
	}
	useAPI(t, api.url, tok)
	key := strings.TrimSpace(mustCLI(t, "keys", "create", "--name", "laptop", "--scopes", "scans:read"))
	if !keystore.ValidKey(key) {
		t.Fatalf("create printed %q", key)
	}
	page := decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", "me", "--json"))
	if len(page.Keys) != 1 || page.Keys[0].UserID != "user_zoe" || page.Keys[0].Hint != keystore.KeyHint(key) {
		t.Fatalf("list --owner me = %+v", page)
	}
	if _, _, err := cli(t, "keys", "list", "--owner", "org"); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
		t.Errorf("list --owner org without an organisation: %v", err)
	}
	if _, _, err := cli(t, "sessions", "revoke", "sess_someone_else"); err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Errorf("revoke another's session: %v", err)
	}
	mustCLI(t, "sessions", "revoke", "sess_zoe")
	deadline := time.Now().Add(2 * time.Second)
	for {
		_, _, err := cli(t, "keys", "list")
		if err != nil && strings.Contains(err.Error(), "UNAUTHORIZED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a logged-out session still works: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keys get and keys roll work on the database too, with the same output.
func TestKeysGetAndRollOnDatabase(t *testing.T) {
	api := startAdminAPI(t)
	useDatabase(t, api.db)
	// With the bus: without it, a roll is unconfirmed (exit 3), which
	// TestUnconfirmedRevokes covers.
	redisURL, prefix := testenv.Redis(t)
	t.Setenv("ODIN_REDIS_URL", redisURL)
	t.Setenv("ODIN_REDIS_PREFIX", prefix)
	t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
	created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "db", "--owner", "user_db", "--json"))
	if err := api.store.RecordUsage(context.Background(), []keystore.Usage{{KeyID: created.ID, Hour: time.Now().UTC().Truncate(time.Hour), Count: 7, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, "keys", "get", created.ID); !strings.Contains(out, created.Hint) || !regexp.MustCompile(`(?m)^total +7$`).MatchString(out) {
		t.Errorf("keys get:\n%s", out)
	}
	out := mustCLI(t, "keys", "roll", created.ID, "--grace", "10m")
	if !keystore.ValidKey(strings.TrimSpace(out)) {
		t.Fatalf("roll printed %q", out)
	}
	// A key is rolled once: in its grace period a second roll is refused,
	// naming the successor, which can be rolled in turn.
	successor := decodeJSON[keyRecord](t, mustCLI(t, "keys", "get", created.ID, "--json")).ReplacedBy
	if _, _, err := cli(t, "keys", "roll", created.ID); err == nil || successor == "" ||
		!strings.Contains(err.Error(), "already been rolled; its successor is "+successor) {
		t.Errorf("roll a key in its grace period again: %v (successor %q)", err, successor)
	}
	rolled := decodeJSON[rolledKeyRecord](t, mustCLI(t, "keys", "roll", successor, "--json"))
	if rolled.Previous.ID != successor || rolled.Previous.ReplacedBy != rolled.ID || !keystore.ValidKey(rolled.Plaintext) {
		t.Errorf("roll --json = %+v", rolled)
	}
	if _, _, err := cli(t, "keys", "roll", successor); err == nil || !strings.Contains(err.Error(), "only an active key can be rolled") {
		t.Errorf("roll an expired key: %v", err)
	}
	if _, _, err := cli(t, "keys", "get", "key_doesnotexist"); err == nil || !strings.Contains(err.Error(), `no key with id "key_doesnotexist"`) {
		t.Errorf("get unknown: %v", err)
	}
	if _, _, err := cli(t, "keys", "list", "--owner", "me"); err == nil || !strings.Contains(err.Error(), "needs --admin-url") {
		t.Errorf("list --owner me on the database: %v", err)
	}

	// The same record, field for field, over the admin API.
	dbGet := mustCLI(t, "keys", "get", created.ID, "--json")
	useAPI(t, api.url, testAdminToken)
	apiGet := mustCLI(t, "keys", "get", created.ID, "--json")
	var a, b map[string]any
	_ = json.Unmarshal([]byte(dbGet), &a)
	_ = json.Unmarshal([]byte(apiGet), &b)
	if len(a) == 0 || !slices.Equal(sortedKeys(a), sortedKeys(b)) || a["id"] != b["id"] || a["hint"] != b["hint"] {
		t.Errorf("keys get --json differs between the database and the admin API:\n%s\n%s", dbGet, apiGet)
	}
}

func sortedKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// -h names the admin API flags and never shows the token.
func TestHelpNamesAdminFlags(t *testing.T) {
	t.Setenv("ODIN_ADMIN_TOKEN", testAdminToken)
	for _, cmd := range [][]string{{"keys", "create"}, {"keys", "list"}, {"keys", "get"}, {"keys", "roll"}, {"keys", "revoke"}, {"sessions", "revoke"}} {
		_, stderr, err := cli(t, append(cmd, "-h")...)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v -h: %v", cmd, err)
		}
		for _, env := range []string{"[ODIN_ADMIN_URL]", "[ODIN_ADMIN_TOKEN]", "[ODIN_ADMIN_TIMEOUT]", "[ODIN_DATABASE_URL]"} {
			if !strings.Contains(stderr, env) {
				t.Errorf("%v -h does not name %s", cmd, env)
			}
		}
	}
}
