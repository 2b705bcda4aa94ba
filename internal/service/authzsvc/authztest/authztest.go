// Package authztest starts whole `odin authz` replicas on a real
// PostgreSQL and Redis for tests, as net/http/httptest starts servers: a
// migrated database with a key manager (Fixture), a replica served on
// local ports (Replica), Envoy's CheckRequest, a dev identity provider
// (Issuer), and readers of the answers and metrics.
package authztest

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Replica is one running `odin authz`, as the binary would run it.
type Replica struct {
	Svc    *authzsvc.Service
	Client authv3.AuthorizationClient
	Conn   *grpc.ClientConn
	// OpsURL is the operations port (/healthz, /readyz, /metrics);
	// HTTPURL is the forward-auth port.
	OpsURL, HTTPURL string
	// Logs holds the replica's JSON log lines.
	Logs   *testenv.LogBuffer
	cancel context.CancelFunc
	done   chan error
}

// StartReplica builds a replica from cfg and serves it on local ports
// until the test ends.
func StartReplica(t *testing.T, cfg authzsvc.Config) *Replica {
	t.Helper()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	ol, _ := net.Listen("tcp", "127.0.0.1:0")
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	r := &Replica{Svc: svc, Logs: logs, cancel: cancel, done: make(chan error, 1),
		OpsURL: "http://" + ol.Addr().String(), HTTPURL: "http://" + hl.Addr().String()}
	go func() { r.done <- svc.Serve(ctx, authzsvc.Listeners{GRPC: gl, HTTP: hl, Ops: ol}) }()
	r.Conn, err = grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.Client = authv3.NewAuthorizationClient(r.Conn)
	t.Cleanup(r.Stop)
	return r
}

// Stop drains the replica and waits for Serve to return; it may be called
// more than once.
func (r *Replica) Stop() {
	r.cancel()
	<-r.done
	r.Conn.Close()
	r.done <- nil // later stops return at once
}

// Drain ends the replica's context, as SIGTERM does, and waits up to wait
// for Serve to return; returned is false when it did not, err is what
// Serve returned.
func (r *Replica) Drain(wait time.Duration) (returned bool, err error) {
	r.cancel()
	select {
	case err = <-r.done:
		r.done <- nil // later stops return at once
		return true, err
	case <-time.After(wait):
		return false, nil
	}
}

// Counter sums a metric family over all its label sets.
func (r *Replica) Counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := r.Metric(t, name, labels)
	return v
}

// Metric sums the counters or gauges of a family whose labels include
// labels; found is false when no series matched.
func (r *Replica) Metric(t *testing.T, name string, labels map[string]string) (sum float64, found bool) {
	t.Helper()
	return Gathered(t, r.Svc.Registry(), name, labels)
}

// Gathered sums the counters or gauges of a family gathered from g whose
// labels include labels; found is false when no series matched.
func Gathered(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (sum float64, found bool) {
	t.Helper()
	mfs, err := g.Gather()
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

// EnvoyRequest builds a CheckRequest the way Envoy's ext_authz filter does:
// lower-case headers including pseudo-headers, :path with the query,
// x-request-id, the peer's address.
func EnvoyRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
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

// Check sends GET /v1/scans?page=2 with headers, as Envoy would, and fails
// the test when the RPC fails.
func (r *Replica) Check(t *testing.T, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.Client.Check(ctx, EnvoyRequest("GET", "/v1/scans?page=2", headers))
	if err != nil {
		t.Fatalf("Check RPC failed (a denial must be a successful RPC): %v", err)
	}
	return resp
}

// HTTPStatus is the status the client would see: 200 on allow.
func HTTPStatus(resp *authv3.CheckResponse) int {
	if d := resp.GetDeniedResponse(); d != nil {
		return int(d.GetStatus().GetCode())
	}
	if resp.GetOkResponse() != nil && resp.GetStatus().GetCode() == 0 {
		return 200
	}
	return -1
}

// ErrorBody is the error JSON of a denial.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Timestamp string `json:"timestamp"`
	RequestID string `json:"requestId"`
}

// DeniedBody decodes a denial's body, failing the test when it is not the
// error JSON.
func DeniedBody(t *testing.T, resp *authv3.CheckResponse) ErrorBody {
	t.Helper()
	var b ErrorBody
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &b); err != nil {
		t.Fatalf("denial body %q is not the contract's error JSON: %v", resp.GetDeniedResponse().GetBody(), err)
	}
	return b
}

// HeaderMap flattens header options into a map.
func HeaderMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

// Fixture is a migrated database with a manager to issue keys through.
type Fixture struct {
	DBURL, RedisURL, Prefix string
	Store                   *pgstore.Store
	Redis                   *keystore.Redis // nil without Redis
	Manager                 *keystore.Manager
}

// CacheTiers says whether a fixture has Redis behind its key cache.
type CacheTiers uint8

// The cache tiers of a Fixture.
const (
	NoRedis CacheTiers = iota
	WithRedis
)

// NewFixture is a fresh migrated database, and a Redis prefix of the
// test's own with WithRedis.
func NewFixture(t testing.TB, tiers CacheTiers) *Fixture {
	t.Helper()
	f := &Fixture{DBURL: testenv.Postgres(t)}
	f.Store = testenv.OpenStore(t, f.DBURL, pgstore.Options{MaxConns: 4})
	if tiers == WithRedis {
		f.RedisURL, f.Prefix = testenv.Redis(t)
		f.Redis = OpenRedis(t, f.RedisURL, f.Prefix)
	}
	f.Manager = keystore.NewManager(f.Store, f.Redis, keystore.ManagerOptions{})
	return f
}

// OpenRedis opens Redis at url under prefix, with the tests' MAC secret,
// until the test ends.
func OpenRedis(t testing.TB, url, prefix string) *keystore.Redis {
	t.Helper()
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// Config is a replica's configuration. Tiers are generous so that tests
// sending many checks per key are not limited; the rate limit tests set
// their own.
func (f *Fixture) Config() authzsvc.Config {
	return authzsvc.Config{DatabaseURL: f.DBURL, RedisURL: f.RedisURL, RedisPrefix: f.Prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true,
		RateLimit: ratelimit.Options{Tiers: map[string]ratelimit.Tier{
			"free": {Rate: 1e5, Burst: 1e5}, "pro": {Rate: 1e5, Burst: 1e5},
		}}}
}

// CreateKey issues a key, by default for user_test with scans:read and
// scans:write.
func (f *Fixture) CreateKey(t testing.TB, n keystore.NewKey) (string, *keystore.Key) {
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
	plaintext, k, err := f.Manager.Create(context.Background(), TestActor, n)
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	return plaintext, k
}

// DiscardLogger logs nothing.
func DiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// RedisKeys lists the key records (key: entries) under the fixture's prefix.
func (f *Fixture) RedisKeys() ([]string, error) { return f.RedisNames("key:*") }

// RedisNames lists the Redis names under the fixture's prefix that match
// pattern (a KEYS pattern, the prefix left out).
func (f *Fixture) RedisNames(pattern string) ([]string, error) {
	opts, err := redis.ParseURL(f.RedisURL)
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	return c.Keys(context.Background(), f.Prefix+pattern).Result()
}

// ReplaceHost is rawURL with its host and port replaced.
func ReplaceHost(t *testing.T, rawURL, hostPort string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostPort
	return u.String()
}

// TestActor is who makes changes in these tests, for the audit log.
var TestActor = keystore.Actor{ID: "test"}

// Issuer is a dev identity provider serving its JWKS over real HTTP.
type Issuer struct {
	*devissuer.Provider
	URL string // its JWKS
}

// NewIssuer starts an identity provider until the test ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	p, err := devissuer.New(devissuer.Options{Issuer: "https://clerk.odin.test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	return &Issuer{Provider: p, URL: srv.URL + devissuer.JWKSPath}
}

// Trust is the JWT configuration that trusts is's session tokens, with a
// one-second JWKS fetch timeout.
func (is *Issuer) Trust() jwtauth.Config {
	return jwtauth.Config{JWKSURL: is.URL, Issuer: is.Issuer(), FetchTimeout: time.Second}
}

// Token mints a session token with claims c.
func (is *Issuer) Token(t testing.TB, c devissuer.Claims) string {
	t.Helper()
	tok, err := is.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// JWTConfig is f's replica configuration, trusting is's session tokens for
// https://app.odin.test with default scopes read and write.
func JWTConfig(f *Fixture, is *Issuer) authzsvc.Config {
	cfg := f.Config()
	cfg.JWT = jwtauth.Config{
		JWKSURL: is.URL, Issuer: is.Issuer(), AuthorizedParties: []string{"https://app.odin.test"},
		MinRefreshInterval: 100 * time.Millisecond, FetchTimeout: time.Second,
	}
	cfg.JWTDefaultScopes = []string{"read", "write"}
	return cfg
}

// EntryPayload is the value of a sealed Redis entry (a version byte, a
// 32-byte MAC, then the value), unverified: for tests that inspect records.
func EntryPayload(raw []byte) ([]byte, bool) {
	if len(raw) < 33 || raw[0] != 1 {
		return nil, false
	}
	return raw[33:], true
}
