package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/crc32"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// fuzzLeakedKey is a well-formed key with a fixed secret, so that seeds
// can name it: the only key in the fuzz database.
var fuzzLeakedKey = func() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	body := "odin_sk_" + strings.Repeat("Fuzz", 10) + "Key"
	n := crc32.ChecksumIEEE([]byte(body))
	sum := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		sum[i] = alphabet[n%62]
		n /= 62
	}
	return body + string(sum)
}()

// FuzzSecretScanningReport posts arbitrary bytes as a GitHub secret
// scanning report to the admin API on a real PostgreSQL database, once
// signed by GitHub's key and once signed over other bytes. The forged one
// is always 401. The signed one is a 200 exactly when it is a JSON array
// of at most MaxLeakMatches matches, answering one entry per match, in
// order, with the token's SHA-256 and type, true_positive exactly for the
// one stored key (which is then revoked); anything else is a 4xx with the
// error body, never a 5xx.
func FuzzSecretScanningReport(f *testing.F) {
	if !keystore.ValidKey(fuzzLeakedKey) {
		f.Fatal("fuzzLeakedKey is not a valid key")
	}
	ctx := context.Background()
	store := testenv.OpenStore(f, testenv.Postgres(f), pgstore.Options{MaxConns: 4})
	quiet := slog.New(slog.DiscardHandler)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
	leaked, err := mgr.Issue(ctx, keystore.Actor{ID: "fuzz"}, keystore.NewKey{UserID: "user_fuzz", Name: "leaked"}, fuzzLeakedKey)
	if err != nil {
		f.Fatal(err)
	}
	gh := newGHSigner(f, "fuzz-key")
	ks := newGHKeyServerTB(f, gh)
	srv, err := admin.New(admin.Options{
		Store: store, Manager: mgr, Revoked: keystore.NewRevokedSessions(store, nil, 0, quiet),
		OperatorToken: fuzzOperatorToken, Scopes: fuzzScopes, Logger: quiet,
		GitHubSecretScanning: admin.GitHubSecretScanning{Enabled: true, KeysURL: ks.URL, MinRefreshInterval: time.Hour},
	})
	if err != nil {
		f.Fatal(err)
	}
	handler := srv.Handler()
	post := func(body []byte, headers map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, leakPath, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Request-Id", "req-fuzz")
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		return w
	}
	for _, seed := range []string{
		`[{"token":"` + fuzzLeakedKey + `","type":"odin_api_key","url":"https://github.com/o/r/blob/x/f","source":"content"}]`,
		`[{"token":"odin_sk_x","type":"t","url":"","source":"commit","extra":1},{"token":"` + fuzzLeakedKey + `"}]`,
		`[]`, `null`, `{}`, `[null]`, `[{"token":5}]`, `[{"TOKEN":"` + fuzzLeakedKey + `"}]`, `[1]`, `[] x`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if w := post(body, gh.sign(t, "not "+string(body))); w.Code != http.StatusUnauthorized {
			t.Fatalf("a forged signature was answered %d: %s", w.Code, w.Body)
		}
		w := post(body, gh.sign(t, string(body)))
		var matches []struct { // every field the handler reads must be a string (or null)
			Token  string `json:"token"`
			Type   string `json:"type"`
			URL    string `json:"url"`
			Source string `json:"source"`
		}
		valid := json.Unmarshal(body, &matches) == nil && matches != nil && len(matches) <= admin.MaxLeakMatches
		switch {
		case !valid:
			checkError(t, w)
			return
		case w.Code != http.StatusOK:
			t.Fatalf("%d for a valid report %q: %s", w.Code, body, w.Body)
		}
		var got []struct {
			TokenHash string `json:"token_hash"`
			TokenType string `json:"token_type"`
			Label     string `json:"label"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got) != len(matches) {
			t.Fatalf("answer %s to %d matches: %v", w.Body, len(matches), err)
		}
		named := false
		for i, m := range matches {
			label := "false_positive"
			if m.Token == fuzzLeakedKey {
				label, named = "true_positive", true
			}
			if got[i].TokenHash != tokenHash(m.Token) || got[i].TokenType != m.Type || got[i].Label != label {
				t.Fatalf("match %d (%q): %+v, want label %s", i, m.Token, got[i], label)
			}
		}
		if named {
			k, err := store.Key(ctx, leaked.ID)
			if err != nil || k.RevokedAt.IsZero() {
				t.Fatalf("the reported key is not revoked: %v", err)
			}
		}
	})
}
