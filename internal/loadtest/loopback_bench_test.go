package loadtest

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// loopbackConcurrency is the number of Checks in flight, as the harness's
// default closed loop.
const loopbackConcurrency = 32

// BenchmarkCheckLoopback is a cached check over a loopback gRPC
// connection, odin authz (a whole replica: LRU, Redis, rate limiter on)
// against the do-nothing baseline's handler, with and without stream
// workers, 32 Checks in flight. cpu-ns/op is the process's CPU per check
// (getrusage), and B/op and allocs/op its allocations: client and server
// together. The client sends pre-encoded requests and decodes no answer
// (rawCodec), so it costs the same against either server: read the
// difference between odin and the baseline.
func BenchmarkCheckLoopback(b *testing.B) {
	for _, workers := range []struct {
		name string
		n    int
	}{{"workers-default", 0}, {"workers-off", -1}} {
		b.Run("baseline/key/"+workers.name, func(b *testing.B) {
			srv := newBaselineGRPC(BaselineOptions{StreamWorkers: workers.n})
			client, conn := serveLoopback(b, srv.Serve, srv.Stop)
			loopbackChecks(b, client, conn, authztest.EnvoyRequest("GET", "/v1/scans?page=2",
				map[string]string{"authorization": "Bearer odin_sk_x", "x-request-id": "req-bench"}))
		})
		for _, cred := range []string{"key", "session"} {
			b.Run("odin/"+cred+"/"+workers.name, func(b *testing.B) {
				client, conn, req := odinLoopback(b, cred, workers.n)
				loopbackChecks(b, client, conn, req)
			})
		}
	}
}

// odinLoopback serves a replica configured as the harness's main profile
// (Redis, rate limits that never refuse) and returns a client and a
// request it allows from its caches.
func odinLoopback(b *testing.B, cred string, workers int) (authv3.AuthorizationClient, *grpc.ClientConn, *authv3.CheckRequest) {
	f := authztest.NewFixture(b, authztest.WithRedis)
	cfg := f.Config()
	cfg.StreamWorkers = workers
	cfg.RateLimit.Tiers["enterprise"] = ratelimit.Tier{Rate: 1e5, Burst: 1e6}
	var is *authztest.Issuer
	if cred == "session" {
		is = authztest.NewIssuer(b)
		cfg.JWT = is.Trust()
	}
	svc, err := authzsvc.New(b.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	client, conn := serveLoopback(b, func(l net.Listener) error { return svc.Serve(ctx, authzsvc.Listeners{GRPC: l}) }, cancel)
	var bearer string
	if cred == "session" {
		bearer = is.Token(b, devissuer.Claims{Subject: "user_bench", SessionID: "sess_bench",
			Org: &devissuer.Org{ID: "org_bench", Role: "admin", Permissions: []string{"scans:read"}}})
	} else {
		bearer, _ = f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read"}, Tier: "enterprise"})
	}
	req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + bearer, "x-request-id": "req-bench"})
	deadline := time.Now().Add(10 * time.Second) // the replica may still be loading its key set
	for {
		resp, err := client.Check(b.Context(), req)
		if err == nil && resp.GetOkResponse() != nil {
			return client, conn, req
		}
		if time.Now().After(deadline) {
			b.Fatalf("not allowed: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveLoopback runs serve on a loopback listener until the benchmark
// ends (stop), and returns a client connected to it.
func serveLoopback(b *testing.B, serve func(net.Listener) error, stop func()) (authv3.AuthorizationClient, *grpc.ClientConn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(l) }()
	b.Cleanup(func() { stop(); <-done })
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn), conn
}

// rawMessage is a protobuf message as its wire bytes.
type rawMessage struct{ b []byte }

// rawCodec sends a rawMessage's bytes as they are and keeps an answer's
// bytes undecoded: the client does the same work whatever the server
// answers, so the difference between two servers' figures is theirs.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(*rawMessage).b, nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	v.(*rawMessage).b = data
	return nil
}
func (rawCodec) Name() string { return "proto" }

// loopbackChecks sends b.N copies of req from loopbackConcurrency
// goroutines, their answers left undecoded, and reports the process's CPU
// per check. The first and last answers are decoded: both must allow.
func loopbackChecks(b *testing.B, client authv3.AuthorizationClient, conn grpc.ClientConnInterface, req *authv3.CheckRequest) {
	ctx := context.Background()
	allowed := func() {
		if resp, err := client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("not allowed: %v %v", resp, err)
		}
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	in := &rawMessage{b: raw}
	check := func() error {
		return conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, in, new(rawMessage), grpc.ForceCodec(rawCodec{}))
	}
	allowed()
	for range 1000 { // warm: connections, caches, grown stacks
		if err := check(); err != nil {
			b.Fatal(err)
		}
	}
	var sent atomic.Int64
	var failed atomic.Pointer[string]
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	var wg sync.WaitGroup
	for range loopbackConcurrency {
		wg.Go(func() {
			for sent.Add(1) <= int64(b.N) {
				if err := check(); err != nil {
					msg := err.Error()
					failed.Store(&msg)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if msg := failed.Load(); msg != nil {
		b.Fatalf("a check failed: %s", *msg)
	}
	allowed()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The baseline reads --stream-workers as odin authz reads
// --grpc-stream-workers, with the same default: both servers run their
// handlers the same way.
func TestBaselineStreamWorkersMatchOdin(t *testing.T) {
	for _, n := range []int{-5, -1, 0, 1, 2, 32, 100} {
		if got, want := streamWorkers(n), authzsvc.StreamWorkers(n); got != want {
			t.Errorf("stream workers %d: baseline %d, odin %d", n, got, want)
		}
	}
}
