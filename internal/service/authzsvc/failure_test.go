package authzsvc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Two replicas share Redis and PostgreSQL; a revoke written by a third
// process (the CLI's Manager) is denied by both, and we record how fast.
func TestRevocationPropagatesAcrossReplicas(t *testing.T) {
	f := newFixture(t, withRedis)
	a, b := startReplica(t, f.config()), startReplica(t, f.config())
	const n = 20
	var times []time.Duration
	for i := range n {
		key, k := f.createKey(t, keystore.NewKey{Name: fmt.Sprintf("key %d", i)})
		for _, r := range []*replica{a, b} { // warm both LRUs
			if got := httpStatus(r.check(t, map[string]string{"api-key": key})); got != 200 {
				t.Fatalf("key before revoke: %d", got)
			}
		}
		start := time.Now()
		if _, err := f.manager.Revoke(context.Background(), testActor, k.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		for _, r := range []*replica{b, a} {
			for httpStatus(r.check(t, map[string]string{"api-key": key})) != 401 {
				if time.Since(start) > 2*time.Second {
					t.Fatalf("key %d still allowed %v after the revoke", i, time.Since(start))
				}
				time.Sleep(time.Millisecond)
			}
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("revoke → denied on both replicas (%d keys, includes the revoke's own PostgreSQL and Redis writes): p50 %v, max %v",
		n, times[n/2], times[n-1])
	if a.counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "received"}) < n {
		t.Errorf("replica a received fewer than %d bus messages", n)
	}
}

// An unknown key is cached as unknown; creating it clears that at once.
func TestCreatingAKeyClearsTheNegativeCache(t *testing.T) {
	f := newFixture(t, withRedis)
	r := startReplica(t, f.config())
	plaintext, _ := keystore.GenerateKey()
	if got := httpStatus(r.check(t, map[string]string{"api-key": plaintext})); got != 401 {
		t.Fatalf("unknown key: %d", got)
	}
	if _, err := f.manager.Issue(context.Background(), testActor, keystore.NewKey{UserID: "user_x", Name: "late", Scopes: []string{"scans:read"}}, plaintext); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for httpStatus(r.check(t, map[string]string{"api-key": plaintext})) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("a new key is still refused 1s after creation (stale negative cache)")
		}
		time.Sleep(time.Millisecond)
	}
}

// With Redis killed, checks go LRU → PostgreSQL and keep answering; Redis
// failures are counted, never a denial.
func TestRedisDown(t *testing.T) {
	f := newFixture(t, noRedis)
	rs := testenv.StartRedis(t)
	f.redisURL, f.prefix = rs.URL(), "odin:"
	cfg := f.config()
	r := startReplica(t, cfg)
	cached, _ := f.createKey(t, keystore.NewKey{})
	if got := httpStatus(r.check(t, map[string]string{"api-key": cached})); got != 200 {
		t.Fatalf("before: %d", got)
	}
	rs.Stop()
	fresh, _ := f.createKey(t, keystore.NewKey{}) // Manager without Redis: PostgreSQL only
	unknown, _ := keystore.GenerateKey()
	for _, c := range []struct {
		key  string
		want int
	}{{cached, 200}, {fresh, 200}, {unknown, 401}, {cached, 200}} {
		if got := httpStatus(r.check(t, map[string]string{"api-key": c.key})); got != c.want {
			t.Errorf("with Redis down: status %d, want %d", got, c.want)
		}
	}
	if r.counter(t, "odin_keystore_redis_errors_total", nil) == 0 {
		t.Error("Redis errors not counted")
	}
	// Redis comes back: the bus resubscribes and revocations propagate again.
	rs.Start()
	mgr := newManagerOn(t, f, rs.URL())
	deadline := time.Now().Add(10 * time.Second)
	for r.counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "resubscribed"}) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("bus did not resubscribe after Redis returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
	key, k := f.createKey(t, keystore.NewKey{})
	if got := httpStatus(r.check(t, map[string]string{"api-key": key})); got != 200 {
		t.Fatalf("after Redis returned: %d", got)
	}
	if _, err := mgr.Revoke(context.Background(), testActor, k.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, r, key, 401, time.Second)
}

func newManagerOn(t *testing.T, f *fixture, redisURL string) *keystore.Manager {
	t.Helper()
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: redisURL, Prefix: "odin:", MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return keystore.NewManager(f.store, rd, keystore.ManagerOptions{})
}

func waitStatus(t *testing.T, r *replica, key string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := httpStatus(r.check(t, map[string]string{"api-key": key}))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d after %v, want %d", got, within, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// With PostgreSQL unreachable, cached keys keep working (even past their
// TTL, within stale-if-error), an uncached key gets 503 UNAVAILABLE — never
// 401, never an allow — and service resumes when PostgreSQL returns.
func TestPostgresDown(t *testing.T) {
	f := newFixture(t, noRedis)
	proxy := testenv.NewProxy(t, "127.0.0.1:5432")
	cfg := f.config()
	cfg.DatabaseURL = replaceHost(t, f.dbURL, proxy.Addr())
	cfg.Cache.TTL = 300 * time.Millisecond
	r := startReplica(t, cfg)
	cached, _ := f.createKey(t, keystore.NewKey{})
	if got := httpStatus(r.check(t, map[string]string{"api-key": cached})); got != 200 {
		t.Fatalf("before: %d", got)
	}
	uncached, _ := f.createKey(t, keystore.NewKey{})
	unknown, _ := keystore.GenerateKey()

	proxy.SetDown(true)
	time.Sleep(400 * time.Millisecond) // past the TTL: only stale-if-error keeps it
	for _, c := range []struct {
		name string
		key  string
		want int
	}{{"cached", cached, 200}, {"uncached", uncached, 503}, {"unknown", unknown, 503}, {"cached again", cached, 200}} {
		resp := r.check(t, map[string]string{"api-key": c.key})
		if got := httpStatus(resp); got != c.want {
			t.Fatalf("%s key with PostgreSQL down: status %d, want %d", c.name, got, c.want)
		}
		if c.want == 503 {
			if b := deniedBody(t, resp); b.Error.Code != "UNAVAILABLE" || resp.GetStatus().GetCode() != int32(codes.Unavailable) {
				t.Errorf("503 body %+v", b)
			}
		}
	}
	if r.counter(t, "odin_keystore_lookups_total", map[string]string{"tier": "stale"}) == 0 {
		t.Error("stale serving not counted")
	}
	r.svc.Readiness().Probe(context.Background())
	if !r.svc.Readiness().Report().Ready {
		t.Error("not ready with a warm cache while PostgreSQL is down")
	}

	proxy.SetDown(false)
	waitStatus(t, r, uncached, 200, 5*time.Second)
}

// PostgreSQL unreachable from the start (nothing listens): not ready, and a
// well-formed key gets 503, not 401.
func TestPostgresUnreachableFromStart(t *testing.T) {
	cfg := Config{DatabaseURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/none?sslmode=disable", testenv.FreePort(t))}
	r := startReplica(t, cfg)
	key, _ := keystore.GenerateKey()
	resp := r.check(t, map[string]string{"authorization": "Bearer " + key})
	if got := httpStatus(resp); got != 503 {
		t.Fatalf("status %d, want 503", got)
	}
	res, err := http.Get(r.opsURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Errorf("/readyz = %d, want 503", res.StatusCode)
	}
	hc := healthpb.NewHealthClient(r.conn)
	hr, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health = %v, %v; want NOT_SERVING", hr.GetStatus(), err)
	}
}

// SIGTERM (context cancelled) under load: health flips to NOT_SERVING, every
// check already started gets its answer, and Serve returns.
func TestDrainOnShutdown(t *testing.T) {
	f := newFixture(t, noRedis)
	r := startReplica(t, f.config())
	key, _ := f.createKey(t, keystore.NewKey{})
	hc := healthpb.NewHealthClient(r.conn)
	if hr, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before drain: %v %v", hr.GetStatus(), err)
	}
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		answered, refused int
		unexpected        []error
		stop              = make(chan struct{})
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := r.client.Check(context.Background(), envoyRequest("GET", "/", map[string]string{"api-key": key}), grpc.WaitForReady(false))
				mu.Lock()
				switch status.Code(err) {
				case codes.OK:
					answered++
				case codes.Unavailable: // after the listener closed: refused, never cut mid-answer
					refused++
				default:
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
		r.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after drain")
	}
	close(stop)
	wg.Wait()
	if len(unexpected) > 0 {
		t.Errorf("%d checks failed with unexpected errors, first: %v", len(unexpected), unexpected[0])
	}
	if answered == 0 {
		t.Error("no check answered before shutdown")
	}
	t.Logf("drain: %d checks answered, %d refused after close", answered, refused)
	if !r.svc.Readiness().Report().Draining {
		t.Error("readiness not draining")
	}
}

// A reachable database on which no migration ran is not ready: /readyz
// names the schema version it has and the one needed, the start-up log says
// what to run, and a key check is a 503, never a 401.
func TestUnmigratedDatabaseIsNotReady(t *testing.T) {
	r := startReplica(t, Config{DatabaseURL: testenv.PostgresEmpty(t)})
	key, _ := keystore.GenerateKey()
	if got := httpStatus(r.check(t, map[string]string{"authorization": "Bearer " + key})); got != 503 {
		t.Fatalf("check against an unmigrated database: status %d, want 503", got)
	}
	r.svc.Readiness().Probe(context.Background())
	res, err := http.Get(r.opsURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := fmt.Sprintf("schema version 0, needs %d: run odin migrate", pgstore.SchemaVersion())
	if res.StatusCode != 503 || !strings.Contains(string(body), want) {
		t.Errorf("/readyz = %d %s, want 503 naming %q", res.StatusCode, body, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(r.logs.String(), "database schema is behind") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "database schema is behind") || !strings.Contains(logs, "odin migrate") {
		t.Errorf("the start-up log does not say what to run:\n%s", logs)
	}
}

// The metrics the fenced-replica and dependency-down alerts read follow the
// bus and the readiness probes: odin_keystore_bus_fenced turns 1 once Redis
// has been gone for the contact window, odin_component_up{component="redis"}
// turns 0 at the next probe, and both recover with Redis.
func TestFenceAndComponentMetrics(t *testing.T) {
	f := newFixture(t, noRedis)
	rs := testenv.StartRedis(t)
	f.redisURL, f.prefix = rs.URL(), "odin:"
	r := startReplica(t, f.config())
	gauge := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := r.metric(t, name, labels)
		if !ok {
			t.Fatalf("%s%v is not exported", name, labels)
		}
		return v
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("still not %s after 10s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fenced := func() float64 { return gauge("odin_keystore_bus_fenced", nil) }
	redisUp := func() float64 { return gauge("odin_component_up", map[string]string{"component": "redis"}) }
	waitFor("in contact", func() bool { return fenced() == 0 && redisUp() == 1 })
	if got := gauge("odin_component_up", map[string]string{"component": "postgres"}); got != 1 {
		t.Errorf("postgres up = %v, want 1", got)
	}
	if got := gauge("odin_ready", nil); got != 1 {
		t.Errorf("ready = %v, want 1", got)
	}
	rs.Stop()
	waitFor("fenced with Redis gone", func() bool { return fenced() == 1 && redisUp() == 0 })
	rs.Start()
	waitFor("back in contact with Redis", func() bool { return fenced() == 0 && redisUp() == 1 })
}
