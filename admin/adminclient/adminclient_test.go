package adminclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

const operatorToken = "adminclient-test-operator-token-0123456789"

// serve starts a real admin API on a fresh database, with redisURL as its
// Redis, and returns a client of it.
func serve(t *testing.T, redisURL, prefix string) *Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := adminsvc.New(ctx, adminsvc.Config{
		DatabaseURL: testenv.Postgres(t), RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		OperatorToken: operatorToken, Scopes: []string{"scans:read", "scans:write"},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return New(Options{BaseURL: srv.URL + "/", Token: operatorToken, Timeout: 10 * time.Second, UserAgent: "adminclient-test"})
}

// TestKeyLifecycle creates, reads, lists, rolls and revokes a key through
// the client, in the API's own types.
func TestKeyLifecycle(t *testing.T) {
	redisURL, prefix := testenv.Redis(t)
	c := serve(t, redisURL, prefix)
	ctx := context.Background()

	created, err := c.CreateKey(ctx, api.CreateKeyRequest{Name: "ci", UserID: "user_ci"})
	if err != nil {
		t.Fatal(err)
	}
	if !keystore.ValidKey(created.Plaintext) || created.UserID != "user_ci" || created.Scopes == nil || created.Revoked {
		t.Fatalf("CreateKey = %+v", created)
	}
	got, err := c.Key(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UsageTotals == nil || *got.UsageTotals != (keystore.UsageTotals{}) {
		t.Errorf("Key: usage totals %+v, want zeros", got.UsageTotals)
	}
	got.UsageTotals = nil // the answers of changes carry none
	if diff := cmp.Diff(created.Key, got.Key); diff != "" {
		t.Errorf("Key (-created, +got):\n%s", diff)
	}
	page, err := c.ListKeys(ctx, ListKeysQuery{UserID: "user_ci", Revoked: new(false), Limit: 10})
	if err != nil || len(page.Keys) != 1 || page.Keys[0].ID != created.ID || page.NextCursor != "" {
		t.Fatalf("ListKeys = %+v, %v", page, err)
	}
	if page, err := c.ListKeys(ctx, ListKeysQuery{UserID: "user_ci", ExpiresWithin: time.Hour}); err != nil || len(page.Keys) != 0 {
		t.Errorf("keys expiring within an hour: %v, %v", page, err)
	}
	if page, err := c.ListKeys(ctx, ListKeysQuery{UserID: "user_ci", UnusedFor: 90 * 24 * time.Hour}); err != nil || len(page.Keys) != 0 {
		t.Fatalf("ListKeys(unused for 90d) = %+v, %v; want none: the key is new", page, err)
	}
	rolled, err := c.RollKey(ctx, created.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rolled.Previous.ID != created.ID || rolled.ID == created.ID || !keystore.ValidKey(rolled.Plaintext) {
		t.Errorf("RollKey = %+v", rolled)
	}
	if d := time.Until(rolled.Previous.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("the old key expires in %s, want 1h", d)
	}
	revoked, err := c.RevokeKey(ctx, rolled.ID)
	if err != nil || !revoked.Revoked || revoked.RevokedAt.IsZero() {
		t.Errorf("RevokeKey = %+v, %v", revoked, err)
	}
	rs, err := c.RevokeSession(ctx, "sess_adminclient")
	if err != nil || rs.SessionID != "sess_adminclient" || rs.RevokedAt.IsZero() {
		t.Errorf("RevokeSession = %+v, %v", rs, err)
	}
}

// TestErrors: the API's error answers are *Error with their code; an answer
// that is not the API's has no code; ids that would change the path are
// refused before any request.
func TestErrors(t *testing.T) {
	redisURL, prefix := testenv.Redis(t)
	c := serve(t, redisURL, prefix)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
	}))
	t.Cleanup(proxy.Close)
	notAPI := New(Options{BaseURL: proxy.URL, Token: operatorToken, Timeout: 10 * time.Second})
	ctx := context.Background()
	type outcome struct {
		Status      int
		Code, Field string
	}
	for _, tc := range []struct {
		name string
		call func() error
		want outcome
	}{
		{"unknown key", func() error { _, err := c.Key(ctx, "key_doesnotexist"); return err }, outcome{404, "NOT_FOUND", ""}},
		{"unknown scope", func() error {
			_, err := c.CreateKey(ctx, api.CreateKeyRequest{Name: "x", UserID: "user_1", Scopes: []string{"root"}})
			return err
		}, outcome{400, "INVALID_REQUEST", "scopes"}},
		{"bad session id", func() error { _, err := c.RevokeSession(ctx, "bad id"); return err }, outcome{400, "INVALID_REQUEST", "sid"}},
		{"wrong token", func() error {
			_, err := New(Options{BaseURL: c.base, Token: operatorToken + "x"}).ListKeys(ctx, ListKeysQuery{})
			return err
		}, outcome{401, "UNAUTHORIZED", ""}},
		{"not the admin API", func() error { _, err := notAPI.RevokeKey(ctx, "key_x"); return err }, outcome{Status: 502}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *Error
			if err := tc.call(); !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			if diff := cmp.Diff(tc.want, outcome{e.Status, e.Code, e.Field}); diff != "" {
				t.Errorf("(-want, +got):\n%s", diff)
			}
		})
	}
	for _, id := range []string{"", ".", "..", "key/../x", "key?x", "key#x"} {
		if _, err := c.Key(ctx, id); err == nil || errors.As(err, new(*Error)) {
			t.Errorf("Key(%q): %v, want refused before any request", id, err)
		}
	}
}

// TestUnconfirmed: with the invalidation bus down, a revoke is committed
// but not confirmed: the result comes back with an *UnconfirmedError
// naming the retry.
func TestUnconfirmed(t *testing.T) {
	c := serve(t, fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t)), "")
	ctx := context.Background()
	created, err := c.CreateKey(ctx, api.CreateKeyRequest{Name: "u", UserID: "user_u"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := c.RevokeKey(ctx, created.ID)
	var ue *UnconfirmedError
	if !errors.As(err, &ue) || !errors.Is(err, keystore.ErrNotPropagated) {
		t.Fatalf("RevokeKey: %v, want an *UnconfirmedError", err)
	}
	if want := "POST /v1/keys/" + created.ID + "/revoke"; ue.Retry != want || ue.DeniedBy.IsZero() || ue.RequestID == "" {
		t.Errorf("UnconfirmedError = %+v, want retry %q", ue, want)
	}
	if revoked.ID != created.ID || !revoked.Revoked {
		t.Errorf("the result beside the error = %+v, want the revoked key", revoked)
	}
}

// TestReverificationError: the 403 of a session that must verify a factor
// again says so, with the level and max age of Clerk's hint.
func TestReverificationError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b := denial.NewReverification("second_factor", 10, "req-1", time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write(b.Compact())
	}))
	t.Cleanup(srv.Close)
	_, err := New(Options{BaseURL: srv.URL, Token: "session-token", Timeout: 10 * time.Second}).CreateKey(context.Background(), api.CreateKeyRequest{Name: "x"})
	var e *Error
	if !errors.As(err, &e) || e.Code != "FORBIDDEN" {
		t.Fatalf("error %v, want a FORBIDDEN *Error", err)
	}
	if diff := cmp.Diff(&denial.Reverification{Level: "second_factor", AfterMinutes: 10}, e.Reverification); diff != "" {
		t.Errorf("Reverification (-want, +got):\n%s", diff)
	}
	if !strings.Contains(err.Error(), "must verify its second_factor again (within 10 minutes)") {
		t.Errorf("message %q", err)
	}
}
