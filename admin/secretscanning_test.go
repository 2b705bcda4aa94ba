package admin_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// GitHub's secret scanning partner program, played locally: a key server
// serving a key document in GitHub's format with P-256 keys the test
// generates, and reports signed with them as GitHub signs (base64 of the
// ASN.1 DER ECDSA signature of the body's SHA-256), sent to a real admin
// API on PostgreSQL and Redis.

const leakPath = "/v1/secret-scanning/github"

// ghSigner is one of GitHub's signing keys.
type ghSigner struct {
	id  string
	key *ecdsa.PrivateKey
}

func newGHSigner(t testing.TB, id string) ghSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ghSigner{id: id, key: k}
}

// sign returns the report's signature headers.
func (s ghSigner) sign(t testing.TB, body string) map[string]string {
	t.Helper()
	digest := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"Github-Public-Key-Identifier": s.id, "Github-Public-Key-Signature": base64.StdEncoding.EncodeToString(sig)}
}

// ghKeyServer serves GitHub's key document with the signers published,
// counting fetches; down makes it answer 503.
type ghKeyServer struct {
	URL     string
	mu      sync.Mutex
	signers []ghSigner
	fetches atomic.Int64
	down    atomic.Bool
}

func newGHKeyServer(t *testing.T, signers ...ghSigner) *ghKeyServer {
	t.Helper()
	return newGHKeyServerTB(t, signers...)
}

// newGHKeyServerTB is newGHKeyServer for a fuzz target or benchmark.
func newGHKeyServerTB(t testing.TB, signers ...ghSigner) *ghKeyServer {
	t.Helper()
	ks := &ghKeyServer{signers: signers}
	srv := httptest.NewServer(http.HandlerFunc(ks.serve))
	t.Cleanup(srv.Close)
	ks.URL = srv.URL + "/meta/public_keys/secret_scanning"
	return ks
}

func (ks *ghKeyServer) serve(w http.ResponseWriter, _ *http.Request) {
	ks.fetches.Add(1)
	if ks.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var entries []map[string]any
	for i, s := range ks.signers {
		der, _ := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
		entries = append(entries, map[string]any{
			"key_identifier": s.id,
			"key":            string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
			"is_current":     i == len(ks.signers)-1,
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"public_keys": entries})
}

func (ks *ghKeyServer) publish(signers ...ghSigner) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.signers = signers
}

// leakEnv is an admin API with GitHub secret scanning enabled against a
// local key server.
type leakEnv struct {
	*env
	keys   *ghKeyServer
	github ghSigner
}

// newLeakEnv starts it with the refresh interval given; adjust changes the
// Config further (nil: as is).
func newLeakEnv(t *testing.T, refresh time.Duration, adjust func(*adminsvc.Config)) *leakEnv {
	t.Helper()
	gh := newGHSigner(t, "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a")
	ks := newGHKeyServer(t, gh)
	e := newEnvWith(t, func(c *adminsvc.Config) {
		c.GitHubSecretScanning = admin.GitHubSecretScanning{Enabled: true, KeysURL: ks.URL, MinRefreshInterval: refresh}
		if adjust != nil {
			adjust(c)
		}
	})
	return &leakEnv{env: e, keys: ks, github: gh}
}

// report POSTs a report body with the headers given.
func (e *leakEnv) report(t *testing.T, body string, headers map[string]string) admintest.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", e.URL+leakPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "req-leak-test")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return admintest.Send(t, http.DefaultClient, req)
}

// signed POSTs a report signed by GitHub's key.
func (e *leakEnv) signed(t *testing.T, body string) admintest.Response {
	t.Helper()
	return e.report(t, body, e.github.sign(t, body))
}

// newKey issues a key through the API and returns it and its id.
func (e *leakEnv) newKey(t *testing.T, name string) (string, string) {
	t.Helper()
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": name, "scopes": []string{"scans:read"}, "user_id": "user_leak"})
	e.MustStatus(r, 201)
	return r.Str("key"), r.Str("id")
}

// revokedEvents are the key.revoked events of key id.
func (e *leakEnv) revokedEvents(t *testing.T, id string) []keystore.AuditEvent {
	t.Helper()
	r := e.Do("GET", "/v1/audit-log?action=key.revoked&target="+url.QueryEscape(id), admintest.OperatorToken, nil)
	e.MustStatus(r, 200)
	var page struct {
		Events []keystore.AuditEvent `json:"events"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &page); err != nil {
		t.Fatal(err)
	}
	return page.Events
}

// leakMatch is a match of a report as GitHub sends it.
type leakMatch struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

func reportBody(t testing.TB, matches ...leakMatch) string {
	t.Helper()
	raw, err := json.Marshal(matches)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// feedback is one entry of the answer.
type feedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

func feedbackOf(t *testing.T, r admintest.Response) []feedback {
	t.Helper()
	var out []feedback
	if err := json.Unmarshal([]byte(r.Raw), &out); err != nil {
		t.Fatalf("answer %d %s: %v", r.Status, r.Raw, err)
	}
	return out
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

const leakType = "odin_api_key"

// A mixed report: a live key (named twice, from two places), a key revoked
// before, a well-formed key that does not exist, a bad checksum and
// something else. The live key is revoked before the answer, which odin
// authz then denies; the answer labels every match in order; the audit log
// names GitHub, the reason and where the key was found; a redelivery
// changes nothing and answers the same.
func TestLeakedKeysAreRevoked(t *testing.T) {
	e := newLeakEnv(t, time.Hour, nil)
	check := startAuthz(t, e.authzConfig())
	live, liveID := e.newKey(t, "live")
	revoked, revokedID := e.newKey(t, "revoked")
	e.MustStatus(e.Do("POST", "/v1/keys/"+revokedID+"/revoke", admintest.OperatorToken, nil), 200)
	unknown, err := keystore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	last := byte('A')
	if live[len(live)-1] == last {
		last = 'B'
	}
	badChecksum := live[:len(live)-1] + string(last)
	if keystore.ValidKey(badChecksum) {
		t.Fatal("the bad checksum is valid")
	}
	if got := check(live); got != 200 {
		t.Fatalf("live key before the report: %d", got)
	}
	const where = "https://github.com/octocat/Hello-World/blob/12345600b9cbe38a219f39a9941c9319b600c002/foo/bar.txt"
	body := reportBody(t,
		leakMatch{Token: live, Type: leakType, URL: where, Source: "content"},
		leakMatch{Token: revoked, Type: leakType, URL: "https://github.com/o/r/issues/1", Source: "issue_comment"},
		leakMatch{Token: unknown, Type: leakType, URL: "", Source: "commit"},
		leakMatch{Token: badChecksum, Type: leakType, URL: "https://gist.github.com/x", Source: "gist_content"},
		leakMatch{Token: "odin_sk_short", Type: "other_type", URL: "", Source: "npm"},
		leakMatch{Token: live, Type: leakType, URL: "https://github.com/o/fork/blob/x/f", Source: "commit"},
	)
	r := e.signed(t, body)
	e.MustStatus(r, 200)
	// Any check that begins after the answer is denied.
	if got := check(live); got != 401 {
		t.Errorf("leaked key after the report: %d, want 401", got)
	}
	want := []feedback{
		{tokenHash(live), leakType, "true_positive"},
		{tokenHash(revoked), leakType, "true_positive"},
		{tokenHash(unknown), leakType, "false_positive"},
		{tokenHash(badChecksum), leakType, "false_positive"},
		{tokenHash("odin_sk_short"), "other_type", "false_positive"},
		{tokenHash(live), leakType, "true_positive"},
	}
	if diff := cmp.Diff(want, feedbackOf(t, r)); diff != "" {
		t.Errorf("answer (-want, +got):\n%s", diff)
	}
	for _, tok := range []string{live, revoked, unknown, badChecksum} {
		if strings.Contains(r.Raw, tok) || strings.Contains(e.Logs.String(), tok) {
			t.Error("a reported token is in the answer or the logs")
		}
	}

	checkEvents := func(when string) {
		t.Helper()
		events := e.revokedEvents(t, liveID)
		if len(events) != 1 {
			t.Fatalf("%s: %d key.revoked events of the leaked key, want 1: %+v", when, len(events), events)
		}
		ev := events[0]
		wantDetails := map[string]any{"reason": "leaked", "url": where, "source": "content", "type": leakType}
		if ev.Actor != "github-secret-scanning" || ev.RequestID != "req-leak-test" || !cmp.Equal(wantDetails, ev.Details) {
			t.Errorf("%s: event %+v, want actor github-secret-scanning and details %v", when, ev, wantDetails)
		}
		if events := e.revokedEvents(t, revokedID); len(events) != 1 || events[0].Actor != "operator" || events[0].Details["reason"] != "operator" {
			t.Errorf("%s: the key revoked before: %+v, want only the operator's revoke", when, events)
		}
	}
	checkEvents("first delivery")

	// GitHub delivers the same report again.
	again := e.signed(t, body)
	e.MustStatus(again, 200)
	if diff := cmp.Diff(want, feedbackOf(t, again)); diff != "" {
		t.Errorf("redelivery (-want, +got):\n%s", diff)
	}
	checkEvents("redelivery")
	if got := check(live); got != 401 {
		t.Errorf("leaked key after the redelivery: %d", got)
	}

	metrics := e.Do("GET", "/metrics", "", nil).Raw
	for _, line := range []string{
		`odin_admin_secret_scanning_reports_total{result="processed"} 2`,
		`odin_admin_secret_scanning_tokens_total{label="true_positive",outcome="revoked"} 2`,
		`odin_admin_secret_scanning_tokens_total{label="true_positive",outcome="already_revoked"} 4`,
		`odin_admin_secret_scanning_tokens_total{label="false_positive",outcome="malformed"} 4`,
		`odin_admin_secret_scanning_tokens_total{label="false_positive",outcome="unknown"} 2`,
		`odin_admin_secret_scanning_key_fetches_total{result="ok"} 1`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
}

// Reports that GitHub did not sign change nothing and are answered 401
// with the error body: a forged or missing signature, a signature of other
// bytes, an identifier the key document does not have (after one fetch;
// a flood of unknown identifiers fetches no more).
func TestUnsignedReportsAreRefused(t *testing.T) {
	e := newLeakEnv(t, time.Hour, nil)
	check := startAuthz(t, e.authzConfig())
	live, liveID := e.newKey(t, "live")
	body := reportBody(t, leakMatch{Token: live, Type: leakType, URL: "https://github.com/o/r", Source: "content"})
	other := reportBody(t, leakMatch{Token: "odin_sk_x", Type: leakType})
	forger := newGHSigner(t, e.github.id) // GitHub's identifier, another key
	stranger := newGHSigner(t, "unknown-key-id")
	refused := []struct {
		name    string
		headers map[string]string
	}{
		{"no headers", nil},
		{"no signature", map[string]string{"Github-Public-Key-Identifier": e.github.id}},
		{"no identifier", map[string]string{"Github-Public-Key-Signature": e.github.sign(t, body)["Github-Public-Key-Signature"]}},
		{"not base64", map[string]string{"Github-Public-Key-Identifier": e.github.id, "Github-Public-Key-Signature": "%%%"}},
		{"signature of another", e.github.sign(t, other)}, // the first to need the keys: fetches them
		{"forged with its id", forger.sign(t, body)},
		{"unknown identifier", stranger.sign(t, body)}, // right after a fetch: no other
	}
	for _, tc := range refused {
		r := e.report(t, body, tc.headers)
		if r.Status != 401 || r.ErrorCode() != "UNAUTHORIZED" || r.Header.Get("Www-Authenticate") == "" || r.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s: %d %s, want 401 with the error body", tc.name, r.Status, r.Raw)
		}
	}
	if n := e.keys.fetches.Load(); n != 1 {
		t.Errorf("key document fetched %d times, want once (the unknown identifier came right after it)", n)
	}
	for i := range 10 {
		e.report(t, body, newGHSigner(t, fmt.Sprint("flood-", i)).sign(t, body))
	}
	if n := e.keys.fetches.Load(); n != 1 {
		t.Errorf("after a flood of unknown identifiers: %d fetches, want still 1", n)
	}
	if got := check(live); got != 200 {
		t.Errorf("the key after refused reports: %d, want 200 (nothing changed)", got)
	}
	if events := e.revokedEvents(t, liveID); len(events) != 0 {
		t.Errorf("refused reports wrote events: %+v", events)
	}
	metrics := e.Do("GET", "/metrics", "", nil).Raw
	for _, line := range []string{
		`odin_admin_secret_scanning_reports_total{result="unauthorized"} 17`,
		`odin_admin_secret_scanning_signature_failures_total{reason="unknown_key"} 11`,
		`odin_admin_secret_scanning_signature_failures_total{reason="missing_signature"} 3`,
		`odin_admin_secret_scanning_key_fetches_total{result="rate_limited"} 11`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
}

// GitHub rotates its signing key: the first report signed by the new
// identifier fetches the document again (once the refresh interval has
// passed since the last fetch) and is processed.
func TestGitHubKeyRotation(t *testing.T) {
	const refresh = 50 * time.Millisecond
	e := newLeakEnv(t, refresh, nil)
	live, liveID := e.newKey(t, "second")
	e.MustStatus(e.signed(t, reportBody(t, leakMatch{Token: "odin_sk_nothing", Type: leakType})), 200)

	rotated := newGHSigner(t, "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c")
	e.keys.publish(e.github, rotated)
	time.Sleep(2 * refresh)
	body := reportBody(t, leakMatch{Token: live, Type: leakType, URL: "https://github.com/o/r", Source: "commit"})
	r := e.report(t, body, rotated.sign(t, body))
	e.MustStatus(r, 200)
	if got := feedbackOf(t, r); len(got) != 1 || got[0].Label != "true_positive" {
		t.Fatalf("report signed by the rotated key: %s", r.Raw)
	}
	if n := e.keys.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	if events := e.revokedEvents(t, liveID); len(events) != 1 {
		t.Errorf("%d events, want 1", len(events))
	}
}

// Reports that are not a batch of matches: 400; a body over 1 MiB: 413;
// more than MaxLeakMatches matches: 400; an empty batch: 200 []. The key
// document unreachable for an identifier never seen: 503 (GitHub retries),
// nothing changed.
func TestMalformedReports(t *testing.T) {
	e := newLeakEnv(t, time.Hour, nil)
	for name, body := range map[string]string{
		"not json":     "[{",
		"an object":    `{"token":"x"}`,
		"null":         "null",
		"token number": `[{"token":5,"type":"t"}]`,
		"trailing":     `[] []`,
	} {
		r := e.signed(t, body)
		if r.Status != 400 || r.ErrorCode() != "INVALID_REQUEST" {
			t.Errorf("%s: %d %s, want 400", name, r.Status, r.Raw)
		}
	}
	if r := e.signed(t, "[]"); r.Status != 200 || strings.TrimSpace(r.Raw) != "[]" {
		t.Errorf("empty batch: %d %s", r.Status, r.Raw)
	}
	many := make([]leakMatch, admin.MaxLeakMatches+1)
	for i := range many {
		many[i] = leakMatch{Token: "odin_sk_x", Type: leakType}
	}
	if r := e.signed(t, reportBody(t, many...)); r.Status != 400 || !strings.Contains(r.Raw, "1000") {
		t.Errorf("%d matches: %d %s, want 400", len(many), r.Status, r.Raw)
	}
	if r := e.signed(t, reportBody(t, many[:admin.MaxLeakMatches]...)); r.Status != 200 {
		t.Errorf("%d matches: %d, want 200", admin.MaxLeakMatches, r.Status)
	}
	huge := reportBody(t, leakMatch{Token: "odin_sk_x", Type: leakType, URL: strings.Repeat("a", 1<<20)})
	if r := e.signed(t, huge); r.Status != 413 || r.ErrorCode() != "INVALID_REQUEST" {
		t.Errorf("body over 1 MiB: %d %s, want 413 with the error body", r.Status, r.Raw)
	}

	down := newLeakEnv(t, time.Hour, nil)
	down.keys.down.Store(true)
	live, id := down.newKey(t, "live")
	body := reportBody(t, leakMatch{Token: live, Type: leakType})
	if r := down.signed(t, body); r.Status != 503 || r.ErrorCode() != "UNAVAILABLE" {
		t.Errorf("key document down: %d %s, want 503", r.Status, r.Raw)
	}
	if events := down.revokedEvents(t, id); len(events) != 0 {
		t.Errorf("an unverified report revoked: %+v", events)
	}
}

// The bus is down when a leaked key is revoked: the revocation is
// committed and the answer still says true_positive (the key is GitHub's
// find; every replica denies it by the cache TTL), counted as unconfirmed;
// the replica denies it by then.
func TestLeakRevokeUnconfirmed(t *testing.T) {
	var proxy *testenv.Proxy
	e := newLeakEnv(t, time.Hour, func(c *adminsvc.Config) {
		c.CacheTTL, c.SessionSync = outageCacheTTL, outageSessionSync
		u, _ := url.Parse(c.RedisURL)
		proxy = testenv.NewProxy(t, u.Host)
		u.Host = proxy.Addr()
		c.RedisURL = u.String()
	})
	check := startReplica(t, e.replicaConfig(""))
	live, id := e.newKey(t, "live")
	time.Sleep(settle)
	if got := check(map[string]string{"api-key": live}); got != 200 {
		t.Fatalf("before: %d", got)
	}
	proxy.SetDown(true)
	body := reportBody(t, leakMatch{Token: live, Type: leakType, URL: "https://github.com/o/r", Source: "content"})
	r := e.signed(t, body)
	e.MustStatus(r, 200)
	if got := feedbackOf(t, r); len(got) != 1 || got[0].Label != "true_positive" {
		t.Fatalf("answer: %s", r.Raw)
	}
	deniedBy := time.Now().Add(outageCacheTTL + keystore.PropagationSlack)
	k, err := e.Store.Key(t.Context(), id)
	if err != nil || k.RevokedAt.IsZero() {
		t.Fatalf("the key is not revoked in the store: %v %+v", err, k)
	}
	if got := e.unconfirmed(t, "key_revoke"); got != 1 {
		t.Errorf("unconfirmed key revokes: %v, want 1", got)
	}
	proxy.SetDown(false)
	time.Sleep(time.Until(deniedBy))
	if got := check(map[string]string{"api-key": live}); got != 401 {
		t.Errorf("replica after denied_by: %d, want 401", got)
	}
	if events := e.revokedEvents(t, id); len(events) != 1 || events[0].Details["reason"] != "leaked" {
		t.Errorf("events: %+v", events)
	}
}

// The operator's and a user's revokes through the API record their reason.
func TestRevokeReasons(t *testing.T) {
	e := newLeakEnv(t, time.Hour, nil)
	_, byOperator := e.newKey(t, "op")
	e.MustStatus(e.Do("POST", "/v1/keys/"+byOperator+"/revoke", admintest.OperatorToken, nil), 200)
	alice := e.Token("user_alice", "", "")
	r := e.Do("POST", "/v1/keys", alice, map[string]any{"name": "mine", "scopes": []string{"scans:read"}})
	e.MustStatus(r, 201)
	byUser := r.Str("id")
	e.MustStatus(e.Do("POST", "/v1/keys/"+byUser+"/revoke", alice, nil), 200)
	for id, want := range map[string]string{byOperator: "operator", byUser: "user"} {
		if events := e.revokedEvents(t, id); len(events) != 1 || events[0].Details["reason"] != want {
			t.Errorf("revoke of %s: %+v, want reason %s", id, events, want)
		}
	}
}

// contractSecretScanning exercises every documented answer of the
// endpoint through the contract client: 200, 400, 401, 404, 413 and 503.
func contractSecretScanning(t *testing.T, e *env, client func(string) contractClient) {
	gh := newGHSigner(t, "contract-key")
	ks := newGHKeyServer(t, gh)
	cfg := e.Config
	cfg.GitHubSecretScanning = admin.GitHubSecretScanning{Enabled: true, KeysURL: ks.URL, MinRefreshInterval: time.Hour}
	c := client(startService(t, cfg))
	post := func(c contractClient, body string, h map[string]string, status int, exp expectation) {
		t.Helper()
		c.do(t, call{method: "POST", path: leakPath, body: body, header: h, status: status, expect: exp})
	}
	r := c.do(t, call{method: "POST", path: "/v1/keys", bearer: admintest.OperatorToken, status: 201,
		body: map[string]any{"name": "leaks", "scopes": []string{"scans:read"}, "user_id": "user_contract_leak"}})
	body := reportBody(t, leakMatch{Token: r.Str("key"), Type: leakType, URL: "https://github.com/o/r", Source: "content"},
		leakMatch{Token: "odin_sk_nope", Type: leakType})
	post(c, body, gh.sign(t, body), 200, expectation{})
	post(c, body, gh.sign(t, body), 200, expectation{}) // redelivered
	post(c, body, nil, 401, expectation{requestInvalid: true})
	post(c, body, newGHSigner(t, gh.id).sign(t, body), 401, expectation{})
	for _, bad := range []string{`{"token":"x"}`, `[{"token":5}]`, "[{"} {
		post(c, bad, gh.sign(t, bad), 400, invalid)
	}
	many := make([]leakMatch, admin.MaxLeakMatches+1)
	for i := range many {
		many[i] = leakMatch{Token: "odin_sk_x", Type: leakType}
	}
	tooMany := reportBody(t, many...)
	post(c, tooMany, gh.sign(t, tooMany), 400, invalid)
	huge := reportBody(t, leakMatch{Token: "odin_sk_x", Type: leakType, URL: strings.Repeat("a", 1<<20)})
	post(c, huge, gh.sign(t, huge), 413, expectation{})

	post(client(startService(t, e.Config)), body, gh.sign(t, body), 404, expectation{})

	down := newGHKeyServer(t, gh)
	down.down.Store(true)
	cfg.GitHubSecretScanning.KeysURL = down.URL
	post(client(startService(t, cfg)), body, gh.sign(t, body), 503, expectation{})
}

// The regular expression registered with GitHub finds every key odin
// issues, alone or in text, and nothing that is not a key of the format:
// another prefix, a character outside base62, one character more or less,
// a key glued to a word. docs/ADMIN.md shows it as it is.
func TestGitHubSecretPattern(t *testing.T) {
	re := regexp.MustCompile(admin.GitHubSecretPattern)
	if n := keystore.KeyLen - len(keystore.KeyPrefix); !strings.Contains(admin.GitHubSecretPattern, fmt.Sprintf("{%d}", n)) {
		t.Fatalf("the pattern does not count %d characters after the prefix", n)
	}
	for range 1000 {
		key, err := keystore.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		for _, text := range []string{key, `ODIN_API_KEY="` + key + `"`, "api-key: " + key + "\n", "(" + key + ")"} {
			if got := re.FindString(text); got != key {
				t.Fatalf("%q: found %q, want the key", text, got)
			}
		}
		near := []string{
			key[:len(key)-1],          // one short
			key + "A",                 // one long
			"odin_pk_" + key[8:],      // another prefix
			"Odin_sk_" + key[8:],      // another case
			key[:20] + "-" + key[21:], // outside base62
			key[:20] + "_" + key[21:], // a word character, but not base62
			"x" + key,                 // glued to a word
			"odin_sk" + key[8:],       // no separator
			strings.Replace(key, "_", "-", 1),
		}
		for _, s := range near {
			if re.MatchString(s) {
				t.Fatalf("the pattern matches the near miss %q", s)
			}
		}
	}
	doc, err := os.ReadFile("../docs/ADMIN.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("\n"+admin.GitHubSecretPattern+"\n")) {
		t.Errorf("docs/ADMIN.md does not show the pattern %s on a line of its own", admin.GitHubSecretPattern)
	}
}
