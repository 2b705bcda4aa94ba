package extauthz_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Two replicas share Redis and PostgreSQL; a revoke written by a third
// process (the CLI's Manager) is denied by both, and we record how fast.
func TestRevocationPropagatesAcrossReplicas(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	a, b := authztest.StartReplica(t, f.Config()), authztest.StartReplica(t, f.Config())
	const n = 20
	var times []time.Duration
	for i := range n {
		key, k := f.CreateKey(t, keystore.NewKey{Name: fmt.Sprintf("key %d", i)})
		for _, r := range []*authztest.Replica{a, b} { // warm both LRUs
			if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 200 {
				t.Fatalf("key before revoke: %d", got)
			}
		}
		start := time.Now()
		if _, err := f.Manager.Revoke(context.Background(), authztest.TestActor, k.ID); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		for _, r := range []*authztest.Replica{b, a} {
			for authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})) != 401 {
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
	if a.Counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "received"}) < n {
		t.Errorf("replica a received fewer than %d bus messages", n)
	}
}

// An unknown key is cached as unknown; creating it clears that at once.
func TestCreatingAKeyClearsTheNegativeCache(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	r := authztest.StartReplica(t, f.Config())
	plaintext, _ := keystore.GenerateKey()
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": plaintext})); got != 401 {
		t.Fatalf("unknown key: %d", got)
	}
	if _, err := f.Manager.Issue(context.Background(), authztest.TestActor, keystore.NewKey{UserID: "user_x", Name: "late", Scopes: []string{"scans:read"}}, plaintext); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": plaintext})) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("a new key is still refused 1s after creation (stale negative cache)")
		}
		time.Sleep(time.Millisecond)
	}
}

// With Redis killed, checks go LRU → PostgreSQL and keep answering; Redis
// failures are counted, never a denial.
func TestRedisDown(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	rs := testenv.StartRedis(t)
	f.RedisURL, f.Prefix = rs.URL(), "odin:"
	cfg := f.Config()
	r := authztest.StartReplica(t, cfg)
	cached, _ := f.CreateKey(t, keystore.NewKey{})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": cached})); got != 200 {
		t.Fatalf("before: %d", got)
	}
	rs.Stop()
	fresh, _ := f.CreateKey(t, keystore.NewKey{}) // Manager without Redis: PostgreSQL only
	unknown, _ := keystore.GenerateKey()
	for _, c := range []struct {
		key  string
		want int
	}{{cached, 200}, {fresh, 200}, {unknown, 401}, {cached, 200}} {
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": c.key})); got != c.want {
			t.Errorf("with Redis down: status %d, want %d", got, c.want)
		}
	}
	if r.Counter(t, "odin_keystore_redis_errors_total", nil) == 0 {
		t.Error("Redis errors not counted")
	}
	// Redis comes back: the bus resubscribes and revocations propagate again.
	rs.Start()
	mgr := newManagerOn(t, f, rs.URL())
	deadline := time.Now().Add(10 * time.Second)
	for r.Counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "resubscribed"}) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("bus did not resubscribe after Redis returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
	key, k := f.CreateKey(t, keystore.NewKey{})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 200 {
		t.Fatalf("after Redis returned: %d", got)
	}
	if _, err := mgr.Revoke(context.Background(), authztest.TestActor, k.ID); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, r, key, 401, time.Second)
}

func newManagerOn(t *testing.T, f *authztest.Fixture, redisURL string) *keystore.Manager {
	t.Helper()
	return keystore.NewManager(f.Store, authztest.OpenRedis(t, redisURL, "odin:"), keystore.ManagerOptions{})
}

func waitStatus(t *testing.T, r *authztest.Replica, key string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key}))
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
	f := authztest.NewFixture(t, authztest.NoRedis)
	proxy := testenv.NewProxy(t, "127.0.0.1:5432")
	cfg := f.Config()
	cfg.DatabaseURL = authztest.ReplaceHost(t, f.DBURL, proxy.Addr())
	cfg.Cache.TTL = 300 * time.Millisecond
	r := authztest.StartReplica(t, cfg)
	cached, _ := f.CreateKey(t, keystore.NewKey{})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": cached})); got != 200 {
		t.Fatalf("before: %d", got)
	}
	uncached, _ := f.CreateKey(t, keystore.NewKey{})
	unknown, _ := keystore.GenerateKey()

	proxy.SetDown(true)
	time.Sleep(400 * time.Millisecond) // past the TTL: only stale-if-error keeps it
	for _, c := range []struct {
		name string
		key  string
		want int
	}{{"cached", cached, 200}, {"uncached", uncached, 503}, {"unknown", unknown, 503}, {"cached again", cached, 200}} {
		resp := r.Check(t, map[string]string{"api-key": c.key})
		if got := authztest.HTTPStatus(resp); got != c.want {
			t.Fatalf("%s key with PostgreSQL down: status %d, want %d", c.name, got, c.want)
		}
		if c.want == 503 {
			if b := authztest.DeniedBody(t, resp); b.Error.Code != "UNAVAILABLE" || resp.GetStatus().GetCode() != int32(codes.Unavailable) {
				t.Errorf("503 body %+v", b)
			}
		}
	}
	if r.Counter(t, "odin_keystore_lookups_total", map[string]string{"tier": "stale"}) == 0 {
		t.Error("stale serving not counted")
	}
	r.Svc.Readiness().Probe(context.Background())
	if !r.Svc.Readiness().Report().Ready {
		t.Error("not ready with a warm cache while PostgreSQL is down")
	}

	proxy.SetDown(false)
	waitStatus(t, r, uncached, 200, 5*time.Second)
}

// PostgreSQL unreachable from the start (nothing listens): not ready, and a
// well-formed key gets 503, not 401.
func TestPostgresUnreachableFromStart(t *testing.T) {
	cfg := authzsvc.Config{DatabaseURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/none?sslmode=disable", testenv.FreePort(t))}
	r := authztest.StartReplica(t, cfg)
	key, _ := keystore.GenerateKey()
	resp := r.Check(t, map[string]string{"authorization": "Bearer " + key})
	if got := authztest.HTTPStatus(resp); got != 503 {
		t.Fatalf("status %d, want 503", got)
	}
	res, err := http.Get(r.OpsURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 503 {
		t.Errorf("/readyz = %d, want 503", res.StatusCode)
	}
	hc := healthpb.NewHealthClient(r.Conn)
	hr, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health = %v, %v; want NOT_SERVING", hr.GetStatus(), err)
	}
}

// A reachable database on which no migration ran is not ready: /readyz
// names the schema version it has and the one needed, the start-up log says
// what to run, and a key check is a 503, never a 401.
func TestUnmigratedDatabaseIsNotReady(t *testing.T) {
	r := authztest.StartReplica(t, authzsvc.Config{DatabaseURL: testenv.PostgresEmpty(t)})
	key, _ := keystore.GenerateKey()
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + key})); got != 503 {
		t.Fatalf("check against an unmigrated database: status %d, want 503", got)
	}
	r.Svc.Readiness().Probe(context.Background())
	res, err := http.Get(r.OpsURL + "/readyz")
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
	for !strings.Contains(r.Logs.String(), "database schema is behind") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if logs := r.Logs.String(); !strings.Contains(logs, "database schema is behind") || !strings.Contains(logs, "odin migrate") {
		t.Errorf("the start-up log does not say what to run:\n%s", logs)
	}
}

// The metrics the fenced-replica and dependency-down alerts read follow the
// bus and the readiness probes: odin_keystore_bus_fenced turns 1 once Redis
// has been gone for the contact window, odin_component_up{component="redis"}
// turns 0 at the next probe, and both recover with Redis.
func TestFenceAndComponentMetrics(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	rs := testenv.StartRedis(t)
	f.RedisURL, f.Prefix = rs.URL(), "odin:"
	r := authztest.StartReplica(t, f.Config())
	gauge := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := r.Metric(t, name, labels)
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
