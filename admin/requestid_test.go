package admin_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/requestid"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/keystore"
)

// serviceOn builds another admin service with cfg (the env's database and
// Redis), for tests that call its handler directly: a request carrying
// bytes that no HTTP client would send still reaches it that way.
func serviceOn(t *testing.T, cfg adminsvc.Config) *adminsvc.Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := adminsvc.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// A client's X-Request-Id reaches the audit log only when it is short
// printable ASCII; anything else is replaced by a fresh id, the one the
// answer carries, and the request is served.
func TestOddRequestIDsAreReplaced(t *testing.T) {
	e := newEnv(t)
	h := serviceOn(t, e.Config).Handler()
	create := func(t *testing.T, reqID string, network bool) {
		t.Helper()
		body := `{"name":"rid","scopes":[],"user_id":"user_rid"}`
		var status int
		var header http.Header
		var raw []byte
		if network { // over a real connection, as a client sends it
			req, _ := http.NewRequest("POST", e.URL+"/v1/keys", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
			req.Header.Set("X-Request-Id", reqID)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			status, header = resp.StatusCode, resp.Header
			raw, _ = io.ReadAll(resp.Body)
		} else {
			req := httptest.NewRequest("POST", "/v1/keys", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
			req.Header["X-Request-Id"] = []string{reqID}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			status, header, raw = rec.Code, rec.Result().Header, rec.Body.Bytes()
		}
		if status != 201 {
			t.Fatalf("create with X-Request-Id %q: %d %s", reqID, status, raw)
		}
		got := header.Get("X-Request-Id")
		if !requestid.Valid(got) || got == reqID || !strings.HasPrefix(got, "req-") {
			t.Fatalf("X-Request-Id %q answered as %q", reqID, got)
		}
		events, _, err := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyCreated, Owners: []string{"user_rid"}, Limit: 1})
		if err != nil || len(events) != 1 {
			t.Fatalf("audit: %v %v", events, err)
		}
		if events[0].RequestID != got {
			t.Fatalf("audited request id %q, answered %q", events[0].RequestID, got)
		}
	}
	for _, tc := range []struct {
		name, id string
		network  bool
	}{
		{"non-UTF-8", "req-\xff\xfe\xc3", true},
		{"tab", "req-a\tb", true},
		{"non-UTF-8 direct", "\xc3\x28", false},
		{"control characters", "req-\x00\x01\x1b[31m", false},
		{"newline", "req-a\nX-Injected: 1", false},
		{"delete", "req-\x7f", false},
		{"over-long", "req-" + strings.Repeat("a", requestid.MaxLen), true},
	} {
		t.Run(tc.name, func(t *testing.T) { create(t, tc.id, tc.network) })
	}
	// A sane id is kept as it is, up to the bound.
	id := "req-" + strings.Repeat("b", requestid.MaxLen-4)
	req, _ := http.NewRequest("GET", e.URL+"/v1/keys", nil)
	req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != id {
		t.Fatalf("a valid id of %d bytes came back as %q", len(id), got)
	}
}
