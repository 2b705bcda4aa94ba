package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// TestMain drops the package's template database when the tests (or a fuzz
// worker) end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const fuzzOperatorToken = "fuzz-operator-token-0123456789abcdef"

var fuzzScopes = []string{"scans:read", "scans:write"}

// createRequest is SPEC §9's POST /v1/keys body as this test reads it.
type createRequest struct {
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	Tier      string     `json:"tier"`
	ExpiresAt *time.Time `json:"expires_at"`
	OrgID     string     `json:"org_id"`
	UserID    string     `json:"user_id"`
}

// The documented limits of a key request (keystore.NewKey.Validate).
var (
	namePattern  = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,200}$`)
	tierPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
)

// validCreate reports whether an operator's body is a valid create request:
// one JSON value and nothing else, an object with known fields of the right
// types, an owner, a name, known scopes (a list, at most 64), a tier name
// and an expiry in the future.
func validCreate(body []byte, now time.Time) (createRequest, bool) {
	var req createRequest
	if !json.Valid(body) {
		return req, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if dec.Decode(&req) != nil || req.Scopes == nil || len(req.Scopes) > 64 {
		return req, false
	}
	for _, s := range req.Scopes {
		if !slices.Contains(fuzzScopes, s) {
			return req, false
		}
	}
	if req.UserID == "" && req.OrgID == "" {
		return req, false
	}
	for _, id := range []string{req.UserID, req.OrgID} {
		if id != "" && !ownerPattern.MatchString(id) {
			return req, false
		}
	}
	ok := namePattern.MatchString(req.Name) && (req.Tier == "" || tierPattern.MatchString(req.Tier)) &&
		(req.ExpiresAt == nil || (req.ExpiresAt.After(now) && req.ExpiresAt.UTC().Year() <= 9999))
	return req, ok
}

// errorCodes maps each 4xx the endpoint may answer to its SPEC code.
var errorCodes = map[int]string{
	http.StatusBadRequest: "INVALID_REQUEST", http.StatusUnauthorized: "UNAUTHORIZED",
	http.StatusForbidden: "FORBIDDEN", http.StatusNotFound: "NOT_FOUND", http.StatusConflict: "CONFLICT",
}

// FuzzAdminCreateKeyBody posts arbitrary bytes as the operator's POST
// /v1/keys body to the admin API on a real PostgreSQL database: the answer
// is 201 exactly for a valid request, with a working key that is stored as
// asked, and otherwise a 4xx (never a 5xx) with the SPEC error body.
func FuzzAdminCreateKeyBody(f *testing.F) {
	ctx := context.Background()
	store, err := pgstore.Open(ctx, testenv.Postgres(f), pgstore.Options{MaxConns: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(store.Close)
	quiet := slog.New(slog.DiscardHandler)
	srv, err := admin.New(admin.Options{
		Store: store, Manager: keystore.NewManager(store, nil, keystore.ManagerOptions{}),
		Revoked:       keystore.NewRevokedSessions(store, nil, 0, quiet),
		OperatorToken: fuzzOperatorToken, Scopes: fuzzScopes, Logger: quiet,
	})
	if err != nil {
		f.Fatal(err)
	}
	handler := srv.Handler()

	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/keys", bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+fuzzOperatorToken)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Request-Id", "req-fuzz")
		w := httptest.NewRecorder()
		now := time.Now()
		handler.ServeHTTP(w, r)

		req, valid := validCreate(body, now)
		switch {
		case w.Code == http.StatusCreated && !valid:
			t.Fatalf("201 for an invalid body %q: %s", body, w.Body)
		case w.Code != http.StatusCreated && valid:
			t.Fatalf("%d for a valid body %q: %s", w.Code, body, w.Body)
		case w.Code == http.StatusCreated:
			checkCreated(t, store, req, w)
		default:
			checkError(t, w)
		}
	})
}

// checkCreated asserts a 201: the body is the stored key as asked, with a
// valid plaintext key whose hash finds it.
func checkCreated(t *testing.T, store keystore.Store, req createRequest, w *httptest.ResponseRecorder) {
	t.Helper()
	var got keystore.Key
	var extra struct {
		Key              string
		Revoked, Expired bool
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("201 body %s: %v", w.Body, err)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &extra); err != nil {
		t.Fatalf("201 body %s: %v", w.Body, err)
	}
	wantTier := req.Tier
	if wantTier == "" {
		wantTier = keystore.DefaultTier
	}
	switch {
	case !keystore.ValidKey(extra.Key):
		t.Fatalf("201 without a valid key: %s", w.Body)
	case got.Name != req.Name || !slices.Equal(got.Scopes, req.Scopes) || got.Tier != wantTier ||
		got.UserID != req.UserID || got.OrgID != req.OrgID || extra.Revoked || extra.Expired:
		t.Fatalf("201 body %s does not match the request %+v", w.Body, req)
	case req.ExpiresAt != nil && got.ExpiresAt.Sub(*req.ExpiresAt).Abs() >= time.Microsecond:
		t.Fatalf("expires_at %v, asked %v", got.ExpiresAt, req.ExpiresAt)
	}
	stored, err := store.KeyByHash(context.Background(), keystore.HashKey(extra.Key))
	if err != nil || stored.ID != got.ID {
		t.Fatalf("the created key %s is not found by its hash: %v", got.ID, err)
	}
}

// checkError asserts a refusal: a 4xx with the SPEC error JSON.
func checkError(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code < 400 || w.Code >= 500 || errorCodes[w.Code] == "" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
		Timestamp string `json:"timestamp"`
		RequestID string `json:"requestId"`
	}
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || dec.More() {
		t.Fatalf("error body %s is not the SPEC JSON: %v", w.Body, err)
	}
	if b.Error.Code != errorCodes[w.Code] || b.Error.Message == "" || b.RequestID != "req-fuzz" {
		t.Fatalf("%d error body %s", w.Code, w.Body)
	}
	if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || ts.Location() != time.UTC {
		t.Fatalf("timestamp %q is not RFC 3339 UTC", b.Timestamp)
	}
}
