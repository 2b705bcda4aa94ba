package authzsvc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// replica is one running `odin authz`, as the binary would run it.
type replica struct {
	svc    *Service
	client authv3.AuthorizationClient
	conn   *grpc.ClientConn
	opsURL string
	// httpURL is the forward-auth port.
	httpURL string
	logs    *testenv.LogBuffer
	cancel  context.CancelFunc
	done    chan error
}

func startReplica(t *testing.T, cfg Config) *replica {
	t.Helper()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	ol, _ := net.Listen("tcp", "127.0.0.1:0")
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	r := &replica{svc: svc, logs: logs, cancel: cancel, done: make(chan error, 1),
		opsURL: "http://" + ol.Addr().String(), httpURL: "http://" + hl.Addr().String()}
	go func() { r.done <- svc.Serve(ctx, Listeners{GRPC: gl, HTTP: hl, Ops: ol}) }()
	r.conn, err = grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.client = authv3.NewAuthorizationClient(r.conn)
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
	r.conn.Close()
	r.done <- nil // later stops return at once
}

// counter sums a metric family over all its label sets.
func (r *replica) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := r.metric(t, name, labels)
	return v
}

// metric sums the counters or gauges of a family whose labels include
// labels; found is false when no series matched.
func (r *replica) metric(t *testing.T, name string, labels map[string]string) (sum float64, found bool) {
	t.Helper()
	mfs, err := r.svc.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(m, k, v) {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			found = true
		}
	}
	return sum, found
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == k && lp.GetValue() == v {
			return true
		}
	}
	return false
}

// envoyRequest builds a CheckRequest the way Envoy's ext_authz filter does:
// lower-case headers including pseudo-headers, :path with the query,
// x-request-id, the peer's address.
func envoyRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{
		":authority": "api.odin.test", ":method": method, ":path": path, ":scheme": "https",
		"user-agent": "curl/8", "x-forwarded-proto": "https",
	}
	for k, v := range headers {
		h[strings.ToLower(k)] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1234567", Method: method, Path: path, Host: "api.odin.test", Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

func (r *replica) check(t *testing.T, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.Check(ctx, envoyRequest("GET", "/v1/scans?page=2", headers))
	if err != nil {
		t.Fatalf("Check RPC failed (a denial must be a successful RPC): %v", err)
	}
	return resp
}

// httpStatus is the status the client would see: 200 on allow.
func httpStatus(resp *authv3.CheckResponse) int {
	if d := resp.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode())
	}
	if resp.GetOkResponse() != nil && resp.GetStatus().GetCode() == 0 {
		return 200
	}
	return -1
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Timestamp string `json:"timestamp"`
	RequestID string `json:"requestId"`
}

func deniedBody(t *testing.T, resp *authv3.CheckResponse) errorBody {
	t.Helper()
	var b errorBody
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
		t.Fatalf("denial body %q is not the contract's error JSON: %v", resp.GetDeniedResponse().GetBody(), err)
	}
	return b
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// fixture is a migrated database with a manager to issue keys through.
type fixture struct {
	dbURL, redisURL, prefix string
	store                   *pgstore.Store
	redis                   *keystore.Redis
	manager                 *keystore.Manager
}

// cacheTiers says whether a fixture has Redis behind its key cache.
type cacheTiers uint8

const (
	noRedis cacheTiers = iota
	withRedis
)

func newFixture(t testing.TB, tiers cacheTiers) *fixture {
	t.Helper()
	f := &fixture{dbURL: testenv.Postgres(t)}
	ctx := context.Background()
	var err error
	if f.store, err = pgstore.Open(ctx, f.dbURL, pgstore.Options{MaxConns: 4}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.store.Close)
	if tiers == withRedis {
		f.redisURL, f.prefix = testenv.Redis(t)
		f.redis, err = keystore.OpenRedis(keystore.RedisOptions{URL: f.redisURL, Prefix: f.prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.redis.Close() })
	}
	f.manager = keystore.NewManager(f.store, f.redis, keystore.ManagerOptions{})
	return f
}

// config is a replica's configuration. Tiers are generous so that tests
// sending many checks per key are not limited; the rate limit tests set
// their own.
func (f *fixture) config() Config {
	return Config{DatabaseURL: f.dbURL, RedisURL: f.redisURL, RedisPrefix: f.prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true,
		RateLimit: ratelimit.Options{Tiers: map[string]ratelimit.Tier{
			"free": {Rate: 1e5, Burst: 1e5}, "pro": {Rate: 1e5, Burst: 1e5},
		}}}
}

func (f *fixture) createKey(t testing.TB, n keystore.NewKey) (string, *keystore.Key) {
	t.Helper()
	if n.Name == "" {
		n.Name = "test key"
	}
	if n.UserID == "" && n.OrgID == "" {
		n.UserID = "user_test"
	}
	if n.Scopes == nil {
		n.Scopes = []string{"scans:read", "scans:write"}
	}
	plaintext, k, err := f.manager.Create(context.Background(), testActor, n)
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	return plaintext, k
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// redisKeys lists the keys under the fixture's prefix.
func redisKeys(f *fixture) ([]string, error) {
	opts, err := redis.ParseURL(f.redisURL)
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.Keys(context.Background(), f.prefix+"key:*").Result()
}

func replaceHost(t *testing.T, rawURL, hostPort string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostPort
	return u.String()
}

// testActor is who makes changes in these tests, for the audit log.
var testActor = keystore.Actor{ID: "test"}
