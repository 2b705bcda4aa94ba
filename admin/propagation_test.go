package admin_test

import (
	"context"
	"fmt"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// startAuthz runs an odin authz replica on the admin env's stores and
// returns a Check function.
func startAuthz(t *testing.T, cfg authzsvc.Config) func(key string) int {
	t.Helper()
	check := startReplica(t, cfg)
	return func(key string) int { return check(map[string]string{"api-key": key}) }
}

// startReplica is startAuthz for a check with any request headers.
func startReplica(t *testing.T, cfg authzsvc.Config) func(headers map[string]string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan struct{})
	go func() { _ = svc.Serve(ctx, authzsvc.Listeners{GRPC: l}); close(done) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	return func(headers map[string]string) int {
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: checkSource,
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/v1/scans", Headers: headers,
			}},
		}})
		if err != nil {
			return -1
		}
		if d := resp.GetDeniedResponse(); d != nil {
			return int(d.GetStatus().GetCode())
		}
		return 200
	}
}

// checkClient is the client address every check of startReplica comes
// from, as Envoy's source.address: what a key's network allowlist is
// matched against.
const checkClient = "203.0.113.5"

var checkSource = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
	SocketAddress: &corev3.SocketAddress{Address: checkClient, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
}}}

func (e *env) authzConfig() authzsvc.Config {
	return authzsvc.Config{DatabaseURL: e.Config.DatabaseURL, RedisURL: e.Config.RedisURL, RedisPrefix: e.Config.RedisPrefix, RedisMACSecret: e.Config.RedisMACSecret, DisableRateLimit: true}
}

// Revoking 100 keys through the admin API while another odin authz replica
// checks them: once a revoke has answered, that replica never allows the
// key again. Reports the revoke's latency, which includes waiting for every
// replica's acknowledgement.
func TestRevocationIsImmediate(t *testing.T) {
	e := newEnv(t)
	check := startAuthz(t, e.authzConfig())
	const n = 100
	keys := make([]string, n)
	ids := make([]string, n)
	for i := range n {
		r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": fmt.Sprint("k", i), "scopes": []string{"scans:read"}, "user_id": "user_p"})
		e.MustStatus(r, 201)
		keys[i], ids[i] = r.Str("key"), r.Str("id")
		if got := check(keys[i]); got != 200 {
			t.Fatalf("key %d before revoke: %d", i, got)
		}
	}
	// A background checker hammers every key; any allow of a key whose
	// revoke had already answered when the check began is a violation.
	var revokedAt [n]atomic.Int64
	var violations, checks atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i = (i + 1) % n {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now().UnixNano()
				revoked := revokedAt[i].Load()
				if check(keys[i]) == 200 && revoked != 0 && began > revoked {
					violations.Add(1)
				}
				checks.Add(1)
			}
		}()
	}
	lat := make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		e.MustStatus(e.Do("POST", "/v1/keys/"+ids[i]+"/revoke", admintest.OperatorToken, nil), 200)
		revokedAt[i].Store(time.Now().UnixNano())
		lat[i] = time.Since(start)
		if got := check(keys[i]); got != 401 {
			t.Errorf("key %d allowed right after its revoke answered: %d", i, got)
		}
	}
	close(stop)
	wg.Wait()
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	t.Logf("revoke via admin API, acknowledged by the replica (n=%d, %d concurrent checks): p50 %v, p99 %v, max %v",
		n, checks.Load(), lat[n/2], lat[n*99/100-1], lat[n-1])
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d allows after a revoke had answered", v)
	}
	if lat[n*99/100-1] > time.Second {
		t.Errorf("p99 revoke latency %v: a replica did not acknowledge", lat[n*99/100-1])
	}
}

// A replica cut off from Redis (no bus) cannot acknowledge: the revoke waits
// out the fence window, and by then that replica no longer answers from its
// LRU, so it refuses the key too.
func TestPartitionedReplicaIsFenced(t *testing.T) {
	e := newEnv(t)
	u, err := url.Parse(e.Config.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, u.Host)
	cfg := e.authzConfig()
	u.Host = proxy.Addr()
	cfg.RedisURL = u.String()
	check := startAuthz(t, cfg)
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "p", "scopes": []string{"scans:read"}, "user_id": "user_p"})
	e.MustStatus(r, 201)
	key, id := r.Str("key"), r.Str("id")
	time.Sleep(500 * time.Millisecond) // heartbeats registered
	if got := check(key); got != 200 {
		t.Fatalf("before: %d", got)
	}
	proxy.SetDown(true) // the replica hears nothing more from the bus
	start := time.Now()
	e.MustStatus(e.Do("POST", "/v1/keys/"+id+"/revoke", admintest.OperatorToken, nil), 200)
	took := time.Since(start)
	if got := check(key); got != 401 {
		t.Fatalf("partitioned replica allowed a revoked key after the revoke answered (%v): %d", took, got)
	}
	if took < keystore.DefaultFenceAfter {
		t.Errorf("revoke answered in %v without the partitioned replica's acknowledgement", took)
	}
	t.Logf("revoke with one replica partitioned answered in %v", took)
}
