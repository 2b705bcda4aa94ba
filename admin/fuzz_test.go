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
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	svix "github.com/svix/svix-webhooks/go"

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

// createRequest is the contract's POST /v1/keys body as this test reads it.
type createRequest struct {
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	Tier      string     `json:"tier"`
	ExpiresAt *time.Time `json:"expires_at"`
	OrgID     string     `json:"org_id"`
	UserID    string     `json:"user_id"`
	// AllowedCIDRs is read by keystore.ParseCIDRs, the oracle of its
	// entries (its own tests check it).
	AllowedCIDRs []string `json:"allowed_cidrs"`
}

// The documented limits of a key request (keystore.NewKey.Validate).
var (
	namePattern  = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,200}$`)
	tierPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
)

// validCreate reports whether an operator's body is a valid create request:
// one JSON value and nothing else, an object with known fields of the right
// types, an owner, a name, known scopes (a list, at most 64), a tier name,
// an expiry in the future and networks keystore.ParseCIDRs reads.
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
	_, cidrsErr := keystore.ParseCIDRs(req.AllowedCIDRs)
	ok := namePattern.MatchString(req.Name) && (req.Tier == "" || tierPattern.MatchString(req.Tier)) &&
		(req.ExpiresAt == nil || (req.ExpiresAt.After(now) && req.ExpiresAt.UTC().Year() <= 9999)) && cidrsErr == nil
	return req, ok
}

// errorCodes maps each 4xx the endpoint may answer to its error code.
var errorCodes = map[int]string{
	http.StatusBadRequest: "INVALID_REQUEST", http.StatusUnauthorized: "UNAUTHORIZED",
	http.StatusForbidden: "FORBIDDEN", http.StatusNotFound: "NOT_FOUND", http.StatusConflict: "CONFLICT",
}

// FuzzAdminCreateKeyBody posts arbitrary bytes as the operator's POST
// /v1/keys body to the admin API on a real PostgreSQL database: the answer
// is 201 exactly for a valid request, with a working key that is stored as
// asked, and otherwise a 4xx (never a 5xx) with the error body.
func FuzzAdminCreateKeyBody(f *testing.F) {
	store := testenv.OpenStore(f, testenv.Postgres(f), pgstore.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	srv, err := admin.New(admin.Options{
		// One process and no replicas: every change is final when made.
		Store: store, Manager: keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}}),
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
	if want, _ := keystore.ParseCIDRs(req.AllowedCIDRs); !slices.Equal(got.AllowedCIDRs, want) {
		t.Fatalf("allowed_cidrs %v, asked %v", got.AllowedCIDRs, req.AllowedCIDRs)
	}
	stored, err := store.KeyByHash(context.Background(), keystore.HashKey(extra.Key))
	if err != nil || stored.ID != got.ID {
		t.Fatalf("the created key %s is not found by its hash: %v", got.ID, err)
	}
}

// checkError asserts a refusal: a 4xx with the error body JSON.
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
		t.Fatalf("error body %s is not the contract's error JSON: %v", w.Body, err)
	}
	if b.Error.Code != errorCodes[w.Code] || b.Error.Message == "" || b.RequestID != "req-fuzz" {
		t.Fatalf("%d error body %s", w.Code, w.Body)
	}
	if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || ts.Location() != time.UTC {
		t.Fatalf("timestamp %q is not RFC 3339 UTC", b.Timestamp)
	}
}

// fuzzWebhookSecret is a Svix signing secret (whsec_ and base64 key).
const fuzzWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// webhookEvent is how the handler reads a Clerk event (same shape, same
// encoding/json rules), the oracle of FuzzClerkWebhookBody.
type webhookEvent struct {
	Type string `json:"type"`
	Data struct {
		ID string `json:"id"`
	} `json:"data"`
}

// FuzzClerkWebhookBody posts arbitrary bytes as a Clerk webhook to the
// admin API on a real PostgreSQL database, once correctly signed and once
// with the signature of other bytes. The forged one is always 401; the
// signed one is processed exactly as its type says (a session event with a
// valid id revokes that session; user.deleted revokes the user's keys;
// other types are ignored), a body that is not a Clerk event is a 400 with
// the error body, and nothing is ever a 5xx.
func FuzzClerkWebhookBody(f *testing.F) {
	ctx := context.Background()
	store := testenv.OpenStore(f, testenv.Postgres(f), pgstore.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	// One process and no replicas: every change is final when made.
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
	srv, err := admin.New(admin.Options{
		Store: store, Manager: mgr, Revoked: keystore.NewRevokedSessions(store, nil, 0, quiet),
		OperatorToken: fuzzOperatorToken, WebhookSecret: fuzzWebhookSecret, Scopes: fuzzScopes, Logger: quiet,
	})
	if err != nil {
		f.Fatal(err)
	}
	handler := srv.Handler()
	wh, err := svix.NewWebhook(fuzzWebhookSecret)
	if err != nil {
		f.Fatal(err)
	}
	var delivery atomic.Int64
	post := func(t *testing.T, body []byte, signed bool) *httptest.ResponseRecorder {
		id := "msg_fuzz_" + strconv.FormatInt(delivery.Add(1), 10) + "_" + strconv.FormatInt(time.Now().UnixNano(), 36)
		now := time.Now()
		signedBody := body
		if !signed {
			signedBody = append([]byte("not "), body...)
		}
		sig, err := wh.Sign(id, now, signedBody)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/webhooks/clerk", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Request-Id", "req-fuzz")
		r.Header.Set("svix-id", id)
		r.Header.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
		r.Header.Set("svix-signature", sig)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		if w := post(t, body, false); w.Code != http.StatusUnauthorized {
			t.Fatalf("a forged signature was answered %d: %s", w.Code, w.Body)
		}
		// A key of the user a user.deleted event may name.
		_, victim, err := mgr.Create(ctx, keystore.Actor{ID: "fuzz"}, keystore.NewKey{UserID: "user_victim", Name: "victim", Scopes: fuzzScopes})
		if err != nil {
			t.Fatal(err)
		}
		w := post(t, body, true)
		var ev webhookEvent
		isEvent := json.Unmarshal(body, &ev) == nil && ev.Type != ""
		switch {
		case !isEvent:
			if w.Code != http.StatusBadRequest {
				t.Fatalf("%d for a body that is not a Clerk event %q: %s", w.Code, body, w.Body)
			}
			checkError(t, w)
		case ev.Type == "session.ended" || ev.Type == "session.removed" || ev.Type == "session.revoked":
			if !keystore.ValidSessionID(ev.Data.ID) {
				if w.Code != http.StatusBadRequest {
					t.Fatalf("%d for session id %q: %s", w.Code, ev.Data.ID, w.Body)
				}
				checkError(t, w)
				return
			}
			if w.Code != http.StatusOK {
				t.Fatalf("%d for %s of %q: %s", w.Code, ev.Type, ev.Data.ID, w.Body)
			}
			revoked, err := store.RevokedSessions(ctx, time.Time{}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(revoked, func(r keystore.RevokedSession) bool { return r.SessionID == ev.Data.ID }) {
				t.Fatalf("%s of %q answered 200 but the session is not revoked", ev.Type, ev.Data.ID)
			}
		case ev.Type == "user.deleted":
			if ev.Data.ID == "" {
				if w.Code != http.StatusBadRequest {
					t.Fatalf("%d for user.deleted without an id: %s", w.Code, w.Body)
				}
				checkError(t, w)
				return
			}
			if w.Code != http.StatusOK {
				t.Fatalf("%d for user.deleted of %q: %s", w.Code, ev.Data.ID, w.Body)
			}
			k, err := store.Key(ctx, victim.ID)
			if err != nil {
				t.Fatal(err)
			}
			if (ev.Data.ID == "user_victim") != !k.RevokedAt.IsZero() {
				t.Fatalf("user.deleted of %q: the key of user_victim revoked=%v", ev.Data.ID, !k.RevokedAt.IsZero())
			}
		default:
			if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"ignored"`)) {
				t.Fatalf("%d for event type %q: %s, want 200 ignored", w.Code, ev.Type, w.Body)
			}
		}
	})
}
