package admin_test

import (
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// Revokes while the bus is broken. The promise checked: a 2xx answer means
// that no replica allows the credential in a check that began after the
// answer; any other answer is a 503 saying the revoke is committed, by when
// every replica denies the credential (denied_by), and how to propagate it
// again, and no replica allows it in a check that began after denied_by.
// The bounds are short here (cache TTL 2s, session sync 1s) so that the
// tests wait them out in seconds.
const (
	outageCacheTTL    = 2 * time.Second
	outageSessionSync = time.Second
	// settle is how long new replicas take to be in bus contact and in
	// the heartbeat set revokers read (a probe and a heartbeat every 200ms).
	settle = 600 * time.Millisecond
)

// outageEnv is an admin API with short bounds; adjust changes its Config
// further (nil: as is).
func outageEnv(t *testing.T, adjust func(*adminsvc.Config)) *env {
	return newEnvWith(t, func(c *adminsvc.Config) {
		c.CacheTTL, c.SessionSync = outageCacheTTL, outageSessionSync
		if adjust != nil {
			adjust(c)
		}
	})
}

// outageEnvOwnRedis is outageEnv on a Redis server of the test's own, for
// the test to stop.
func outageEnvOwnRedis(t *testing.T) (*env, *testenv.PrivateRedis) {
	rs := testenv.StartRedis(t)
	return outageEnv(t, func(c *adminsvc.Config) { c.RedisURL = rs.URL() }), rs
}

// outageEnvAdminProxied is outageEnv with odin admin reaching Redis through
// a proxy the test can cut (replicas on the env's Redis reach it directly).
func outageEnvAdminProxied(t *testing.T) (*env, *testenv.Proxy) {
	var proxy *testenv.Proxy
	e := outageEnv(t, func(c *adminsvc.Config) {
		u, _ := url.Parse(c.RedisURL)
		proxy = testenv.NewProxy(t, u.Host)
		u.Host = proxy.Addr()
		c.RedisURL = u.String()
	})
	return e, proxy
}

// eachKind runs test for a key and for a session, each in its own subtest.
func eachKind(t *testing.T, test func(t *testing.T, kind string)) {
	for _, kind := range []string{"key", "session"} {
		t.Run(kind, func(t *testing.T) { test(t, kind) })
	}
}

// replicaConfig is an odin authz replica with the env's bounds and JWTs, on
// redisURL (empty: the env's Redis).
func (e *env) replicaConfig(redisURL string) authzsvc.Config {
	cfg := e.authzConfig()
	if redisURL != "" {
		cfg.RedisURL = redisURL
	}
	cfg.Cache.TTL, cfg.SessionSync = outageCacheTTL, outageSessionSync
	cfg.JWT, cfg.JWTDefaultScopes = e.Config.JWT, []string{"read", "write", "scans:read", "scans:write"}
	return cfg
}

// proxied is the env's Redis URL through a proxy the test can cut.
func (e *env) proxied(t *testing.T) (string, *testenv.Proxy) {
	u, err := url.Parse(e.Config.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

// credential is a key or a session to revoke: how a check presents it and
// the admin API path that revokes it.
type credential struct {
	kind    string
	headers map[string]string
	revoke  string
}

func (e *env) newCredential(t *testing.T, kind string) credential {
	t.Helper()
	if kind == "key" {
		r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "outage", "scopes": []string{"scans:read"}, "user_id": "user_o"})
		e.MustStatus(r, 201)
		return credential{kind, map[string]string{"api-key": r.Str("key")}, "/v1/keys/" + r.Str("id") + "/revoke"}
	}
	sid := "sess_outage" + testenv.RandomSuffix()
	tok, err := e.Issuer.Mint(devissuer.Claims{Subject: "user_o", SessionID: sid})
	if err != nil {
		t.Fatal(err)
	}
	return credential{kind, map[string]string{"authorization": "Bearer " + tok}, "/v1/sessions/" + sid + "/revoke"}
}

// watchNew makes a credential of kind, lets new replicas settle, and
// watches the credential on the replicas' checks.
func (e *env) watchNew(t *testing.T, kind string, checks ...func(map[string]string) int) (credential, *watcher) {
	t.Helper()
	c := e.newCredential(t, kind)
	time.Sleep(settle)
	return c, watch(t, c, checks...)
}

// watcher checks a credential on every replica, continuously, and records
// when each allowed check began.
type watcher struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	allows [][]time.Time // per replica
}

// watch primes every replica with c (each must allow it: it is cached from
// then on) and starts checking.
func watch(t *testing.T, c credential, checks ...func(map[string]string) int) *watcher {
	t.Helper()
	for i, check := range checks {
		if got := check(c.headers); got != 200 {
			t.Fatalf("replica %d before the revoke: %d for the %s", i, got, c.kind)
		}
	}
	w := &watcher{stop: make(chan struct{}), allows: make([][]time.Time, len(checks))}
	for i, check := range checks {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				select {
				case <-w.stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				began := time.Now()
				if check(c.headers) == 200 {
					w.mu.Lock()
					w.allows[i] = append(w.allows[i], began)
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

// answer is a revoke's answer: when it came, and the time after which no
// check may allow the credential (the answer itself for a 2xx, denied_by
// for a 503).
type answer struct {
	status       int
	at, deniedBy time.Time
	retry        string
}

// revoke sends c's revoke and checks the answer's form: 200, or 503 with
// the documented body.
func (e *env) revoke(t *testing.T, c credential) answer {
	t.Helper()
	r := e.Do("POST", c.revoke, admintest.OperatorToken, nil)
	a := answer{status: r.Status, at: time.Now()}
	switch r.Status {
	case 200:
		a.deniedBy = a.at
	case 503:
		deniedBy, err := time.Parse(time.RFC3339Nano, r.Str("denied_by"))
		if r.ErrorCode() != "UNAVAILABLE" || r.Body["committed"] != true || err != nil || r.Str("retry") == "" || r.Body["result"] == nil {
			t.Fatalf("unconfirmed revoke of a %s: not the documented body: %s", c.kind, r.Raw)
		}
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("unconfirmed revoke of a %s: no Retry-After", c.kind)
		}
		bound := outageCacheTTL
		if c.kind == "session" {
			bound = outageSessionSync
		}
		if limit := a.at.Add(bound + keystore.PropagationSlack); deniedBy.After(limit) {
			t.Errorf("denied_by %v is later than the bound the replicas keep (%v)", deniedBy, limit)
		}
		a.deniedBy, a.retry = deniedBy, r.Str("retry")
	default:
		t.Fatalf("revoke of a %s: %d %s", c.kind, r.Status, r.Raw)
	}
	return a
}

// verify lets the watcher run past every answer's limit, stops it, and
// reports every allow that began after an answer's limit.
func (w *watcher) verify(t *testing.T, kind string, answers ...answer) {
	t.Helper()
	last := time.Now().Add(500 * time.Millisecond)
	for _, a := range answers {
		if until := a.deniedBy.Add(500 * time.Millisecond); until.After(last) {
			last = until
		}
	}
	time.Sleep(time.Until(last))
	close(w.stop)
	w.wg.Wait()
	for _, a := range answers {
		for i, allows := range w.allows {
			after, late := 0, 0
			for _, began := range allows {
				if began.After(a.at) {
					after++
				}
				if began.After(a.deniedBy) {
					late++
				}
			}
			if late > 0 {
				t.Errorf("replica %d allowed the revoked %s %d times after the revoke answered %d (deadline %v after the answer)",
					i, kind, late, a.status, a.deniedBy.Sub(a.at).Round(time.Millisecond))
			}
			t.Logf("answer %d: replica %d allowed the %s %d times after it, %d after its deadline", a.status, i, kind, after, late)
		}
	}
}

// odin admin cannot reach Redis, the replicas can: nothing reaches them, so
// the revoke cannot be confirmed and says so; once Redis is back, the retry
// propagates and answers 200, after which no replica allows the credential.
func TestRevokeWithRedisUnreachableFromAdmin(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		e, proxy := outageEnvAdminProxied(t)
		check := startReplica(t, e.replicaConfig(""))
		c, w := e.watchNew(t, kind, check)
		metricKind := kind + "_revoke"
		if got := e.unconfirmed(t, metricKind); got != 0 {
			t.Errorf("unconfirmed %s before any revoke: %v", metricKind, got)
		}
		proxy.SetDown(true)
		first := e.revoke(t, c)
		if first.status != 503 {
			w.verify(t, kind, first)
			t.Fatalf("revoke with Redis unreachable answered %d", first.status)
		}
		if got := e.unconfirmed(t, metricKind); got != 1 {
			t.Errorf("unconfirmed %s after a 503: %v, want 1", metricKind, got)
		}
		proxy.SetDown(false)
		retry := e.revoke(t, c)
		if retry.status != 200 {
			t.Errorf("retry with Redis back answered %d, want 200", retry.status)
		}
		if got := e.unconfirmed(t, metricKind); got != 1 {
			t.Errorf("unconfirmed %s after a confirmed retry: %v, want still 1", metricKind, got)
		}
		w.verify(t, kind, first, retry)
	})
}

// Redis dies just before the revoke, for everyone: the publish fails, so the
// revoke is unconfirmed (503); the replicas fence themselves and deny the
// credential well within denied_by.
func TestRevokeWithRedisKilled(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		e, rs := outageEnvOwnRedis(t)
		check := startReplica(t, e.replicaConfig(rs.URL()))
		c, w := e.watchNew(t, kind, check)
		rs.Stop()
		a := e.revoke(t, c)
		if a.status != 503 {
			t.Errorf("revoke with Redis dead answered %d, want 503", a.status)
		}
		w.verify(t, kind, a)
	})
}

// Redis dies while the revoke waits for a partitioned replica's
// acknowledgement: the message went out, so waiting out the fence makes the
// revoke final on every replica, and it answers 200.
func TestRevokeWithRedisKilledWhileWaiting(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		e, rs := outageEnvOwnRedis(t)
		u, _ := url.Parse(rs.URL())
		proxy := testenv.NewProxy(t, u.Host)
		u.Host = proxy.Addr()
		near, far := startReplica(t, e.replicaConfig(rs.URL())), startReplica(t, e.replicaConfig(u.String()))
		c, w := e.watchNew(t, kind, near, far)
		proxy.SetDown(true)
		killed := make(chan struct{})
		go func() { defer close(killed); time.Sleep(300 * time.Millisecond); rs.Stop() }()
		a := e.revoke(t, c)
		<-killed
		if a.status != 200 {
			t.Errorf("revoke published before Redis died answered %d, want 200", a.status)
		}
		w.verify(t, kind, a)
	})
}

// One replica is cut off from Redis: it cannot acknowledge, the revoke
// waits out the fence and answers 200, and by then the cut-off replica
// denies the credential: a key because it no longer answers from its LRU,
// a session because it re-reads the revoked sessions before accepting one.
func TestRevokeWithReplicaPartitioned(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		e := outageEnv(t, nil)
		farURL, proxy := e.proxied(t)
		farCfg := e.replicaConfig(farURL)
		farCfg.SessionSync = time.Minute // the periodic sync is not what saves it
		near, far := startReplica(t, e.replicaConfig("")), startReplica(t, farCfg)
		c, w := e.watchNew(t, kind, near, far)
		proxy.SetDown(true)
		start := time.Now()
		a := e.revoke(t, c)
		if a.status != 200 {
			t.Errorf("revoke with one replica partitioned answered %d, want 200", a.status)
		}
		if took := a.at.Sub(start); took < keystore.DefaultFenceAfter {
			t.Errorf("revoke answered in %v without the partitioned replica's acknowledgement", took)
		}
		w.verify(t, kind, a)
	})
}

// A user.deleted webhook whose revokes cannot be confirmed answers 503, not
// 2xx, so Svix retries it; the retry (same delivery id) is applied again,
// not taken for a replay: it propagates the keys the first attempt revoked
// and answers 200, after which no replica allows them.
func TestWebhookRetryPropagatesAgain(t *testing.T) {
	e, proxy := outageEnvAdminProxied(t)
	check := startReplica(t, e.replicaConfig(""))
	_, w := e.watchNew(t, "key", check) // owned by user_o
	proxy.SetDown(true)
	body := `{"type":"user.deleted","data":{"id":"user_o","deleted":true}}`
	at := time.Now()
	r := e.webhook("msg_retry", at, body, true)
	first := answer{status: r.Status, at: time.Now()}
	if r.Status != 503 || r.Body["committed"] != true {
		t.Fatalf("user.deleted with Redis unreachable: %d %s", r.Status, r.Raw)
	}
	if first.deniedBy, _ = time.Parse(time.RFC3339Nano, r.Str("denied_by")); first.deniedBy.IsZero() {
		t.Fatalf("no denied_by: %s", r.Raw)
	}
	proxy.SetDown(false)
	r = e.webhook("msg_retry", at, body, true)
	retry := answer{status: r.Status, at: time.Now(), deniedBy: time.Now()}
	if r.Status != 200 || r.Str("status") != "processed" || r.Str("revoked_keys") != "1" {
		t.Errorf("Svix's retry: %d %s, want 200 processed with the key propagated again", r.Status, r.Raw)
	}
	if r := e.webhook("msg_retry", at, body, true); r.Str("status") != "duplicate" {
		t.Errorf("a replay of the delivery that succeeded: %s", r.Raw)
	}
	w.verify(t, "key", first, retry)
}

// unconfirmed is odin_admin_unconfirmed_changes_total{kind} as the admin's
// /metrics shows it.
func (e *env) unconfirmed(t *testing.T, kind string) float64 {
	t.Helper()
	resp, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if f := families["odin_admin_unconfirmed_changes_total"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("odin_admin_unconfirmed_changes_total{kind=%q} is not exported", kind)
	return 0
}
