package redistopo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
	"github.com/odin-scan/odin-authz/keystore/redisconn"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// long reports whether the long versions run (ODIN_LONG_TESTS=1).
func long() bool { return os.Getenv("ODIN_LONG_TESTS") == "1" }

// prefix is the key prefix: every Redis here is private to its test.
const prefix = "odin:"

// replica is one running `odin authz`, as the binary runs it.
type replica struct {
	name   string
	svc    *authzsvc.Service
	client authv3.AuthorizationClient
	logs   *testenv.LogBuffer
}

func startReplica(t *testing.T, name string, cfg authzsvc.Config) *replica {
	t.Helper()
	logs := &testenv.LogBuffer{}
	l := testenv.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		cancel()
		t.Fatalf("replica %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = svc.Serve(ctx, authzsvc.Listeners{GRPC: l}); close(done) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	return &replica{name: name, svc: svc, client: authv3.NewAuthorizationClient(conn), logs: logs}
}

// check sends one Envoy-shaped Check with the key and returns the status
// the client would see: 200 on allow, the denial's status otherwise, or an
// error when the RPC itself failed.
func (r *replica) check(key string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-" + testenv.RandomSuffix(), Method: "GET", Path: "/v1/scans", Host: "api.odin.test", Scheme: "https",
			Headers: map[string]string{":method": "GET", ":path": "/v1/scans", ":authority": "api.odin.test", "api-key": key},
		}},
	}})
	if err != nil {
		return 0, err
	}
	if d := resp.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode()), nil
	}
	return 200, nil
}

func (r *replica) mustStatus(t *testing.T, key string, want int, what string) {
	t.Helper()
	got, err := r.check(key)
	if err != nil {
		t.Fatalf("replica %s, %s: Check failed: %v", r.name, what, err)
	}
	if got != want {
		t.Fatalf("replica %s, %s: status %d, want %d", r.name, what, got, want)
	}
}

// counter sums a counter family's series whose labels include labels.
func (r *replica) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	sum, _ := authztest.Gathered(t, r.svc.Registry(), name, labels)
	return sum
}

// resubscribed counts the times the replica's bus came back after it may
// have lost messages: resubscribed, or found a probe of its own lost
// (a subscription held by a cluster replica survives its master's death).
func (r *replica) resubscribed(t *testing.T) float64 {
	t.Helper()
	return r.counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "resubscribed"}) +
		r.counter(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "resynced"})
}

// env is a database, a Manager (as odin keys and odin admin use it) and two
// replicas, all on one Redis topology.
type env struct {
	redisURL string
	ttl      time.Duration   // the cache TTL: the bound when a revoke's messages are lost
	redis    *keystore.Redis // the Manager's
	manager  *keystore.Manager
	mgrLogs  *testenv.LogBuffer
	replicas []*replica
}

// Tiers: "free" is the limited tier of the rate limit test; every other key
// is "pro", too generous to be limited.
var tiers = map[string]ratelimit.Tier{"free": {Rate: 5, Burst: 20}, "pro": {Rate: 1e5, Burst: 1e5}}

// newEnv starts the env; ttl is the cache TTL (0: the default, 30s).
func newEnv(t *testing.T, redisURL string, ttl time.Duration) *env {
	t.Helper()
	if ttl <= 0 {
		ttl = keystore.DefaultCacheTTL
	}
	db := testenv.Postgres(t)
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 4})
	e := &env{redisURL: redisURL, ttl: ttl, mgrLogs: &testenv.LogBuffer{}}
	var err error
	e.redis, err = keystore.OpenRedis(keystore.RedisOptions{URL: redisURL, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), slog.New(slog.NewJSONHandler(e.mgrLogs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.redis.Close() })
	e.manager = keystore.NewManager(store, e.redis, keystore.ManagerOptions{CacheTTL: ttl, Logger: slog.New(slog.NewJSONHandler(e.mgrLogs, nil))})
	cfg := authzsvc.Config{DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true,
		Cache: keystore.CacheOptions{TTL: ttl}, RateLimit: ratelimit.Options{Tiers: tiers}}
	e.replicas = []*replica{startReplica(t, "a", cfg), startReplica(t, "b", cfg)}
	return e
}

func (e *env) createKey(t *testing.T, tier string) (string, *keystore.Key) {
	t.Helper()
	plaintext, k, err := e.manager.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{
		Name: "k " + testenv.RandomSuffix(), UserID: "user_topo", Scopes: []string{"scans:read"}, Tier: tier,
	})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	return plaintext, k
}

// unacknowledged counts the Manager's warnings that a revoke went
// unacknowledged (it waited out the fence instead).
func (e *env) unacknowledged() int {
	return strings.Count(e.mgrLogs.String(), "did not acknowledge")
}

// waitBusLive waits until both replicas are in contact with the bus: their
// heartbeats are in the heartbeat set, fresh, so a revoke waits for their
// acknowledgements.
func (e *env) waitBusLive(t *testing.T, within time.Duration) {
	t.Helper()
	set := prefix + "replicas"
	if e.redis.Conn().Topology() == redisconn.TopologyCluster {
		set = prefix + "{bus}:replicas"
	}
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n, err := e.redis.Conn().Client().ZCount(ctx, set, fmt.Sprint(time.Now().Add(-500*time.Millisecond).UnixMilli()), "+inf").Result()
		cancel()
		if err == nil && n >= int64(len(e.replicas)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not heartbeating after %v (%d fresh, %v)", within, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// revokeIsFinal revokes key and checks that both replicas refuse it on the
// first check after the revoke returned, and that every replica
// acknowledged (no wait for the fence). It returns the revoke's latency.
func (e *env) revokeIsFinal(t *testing.T, key string, k *keystore.Key) time.Duration {
	t.Helper()
	before := e.unacknowledged()
	start := time.Now()
	if _, err := e.manager.Revoke(context.Background(), keystore.Actor{ID: "test"}, k.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	took := time.Since(start)
	for _, r := range e.replicas {
		r.mustStatus(t, key, 401, "first check after the revoke returned")
	}
	if e.unacknowledged() != before {
		t.Errorf("a replica did not acknowledge the revoke (it took %v): the bus is not working", took)
	}
	return took
}
