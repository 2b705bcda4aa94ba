package drills

import (
	"context"
	"log/slog"
	"strings"
	"sync"
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
)

// replica is one `odin authz` running in-process as the binary runs it:
// authzsvc.New, then Serve on loopback listeners, stopped when the test ends.
type replica struct {
	name   string
	svc    *authzsvc.Service
	conn   *grpc.ClientConn
	client authv3.AuthorizationClient
	// logs keeps warnings and errors only: denials are logged at info, and
	// a drill sends tens of thousands of them.
	logs *testenv.LogBuffer
	stop func()
}

func startReplica(t *testing.T, name string, cfg authzsvc.Config) *replica {
	t.Helper()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name)
	gl := testenv.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("start replica %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, authzsvc.Listeners{GRPC: gl}) }()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &replica{name: name, svc: svc, conn: conn, client: authv3.NewAuthorizationClient(conn), logs: logs}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("replica %s: Serve returned %v", name, err)
			}
			conn.Close()
		})
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("replica %s warnings:\n%s", name, tail(logs.String(), 40))
		}
	})
	return r
}

// metric sums a counter family over the label sets that carry labels.
func (r *replica) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	sum, _ := authztest.Gathered(t, r.svc.Registry(), name, labels)
	return sum
}

// storeQueries is odin_keystore_store_queries_total over every result.
func (r *replica) storeQueries(t *testing.T) float64 {
	return r.metric(t, "odin_keystore_store_queries_total", nil)
}

// generousTiers keep the rate limiter in the path (as in production) without
// ever refusing the drills' load: a 429 in a drill is a finding.
func generousTiers() ratelimit.Options {
	return ratelimit.Options{Tiers: map[string]ratelimit.Tier{
		"free": {Rate: 1e5, Burst: 1e5}, "pro": {Rate: 1e5, Burst: 1e5},
	}}
}

// createKeys issues n keys through m and returns their plaintexts and ids.
func createKeys(t *testing.T, m *keystore.Manager, n int, name string) (keys, ids []string) {
	t.Helper()
	for i := range n {
		plaintext, k, err := m.Create(context.Background(), keystore.Actor{ID: "drill"}, keystore.NewKey{
			Name: name, UserID: "user_drill", Scopes: []string{"scans:read", "scans:write"},
		})
		if err != nil {
			t.Fatalf("create key %d: %v", i, err)
		}
		keys, ids = append(keys, plaintext), append(ids, k.ID)
	}
	return keys, ids
}

// unknownKeys returns n well-formed keys (valid checksum) that are stored
// nowhere.
func unknownKeys(t *testing.T, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		k, err := keystore.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

// waitFor polls cond every 10ms until it holds or within passes; it returns
// how long that took and whether it held.
func waitFor(within time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			return time.Since(start), false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), true
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
