package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"go/build"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// replica is the addresses of one running `odin authz`.
type replica struct {
	GRPC, HTTP string // gRPC Check; HTTP forward-auth
}

// startReplica runs `odin authz` in-process as the binary would, on
// loopback port-0 listeners, until the test ends.
func startReplica(t *testing.T, cfg authzsvc.Config, logs io.Writer) replica {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("start odin authz: %v", err)
	}
	var lis [3]net.Listener
	for i := range lis {
		if lis[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, authzsvc.Listeners{GRPC: lis[0], HTTP: lis[1], Ops: lis[2]}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("odin authz stopped with %v", err)
		}
	})
	return replica{GRPC: lis[0].Addr().String(), HTTP: lis[1].Addr().String()}
}

// keys are the credentials the cases present.
type keys struct {
	valid, validID, readOnly, revoked, unknown, badChecksum string
	// restricted may be used only from restrictedFrom (a network
	// allowlist of one loopback address).
	restricted string
}

// restrictedFrom is the one address the restricted key may be used from:
// a loopback address other than the proxies' 127.0.0.1, so that a client
// and its proxy have distinct addresses on one machine.
const restrictedFrom = "127.0.0.2"

// all lists every plaintext, to look for in logs.
func (k keys) all() []string {
	return []string{k.valid, k.readOnly, k.revoked, k.unknown, k.badChecksum, k.restricted}
}

// e2ePolicy is the replicas' route policy: the built-in default (read for
// GET, HEAD, OPTIONS; write otherwise), and GET below /v1/public needs no
// credential, so that a path a client could forge has somewhere to go.
const e2ePolicy = `
rules:
  - name: public
    methods: [GET]
    prefix: /v1/public
    public: true
`

// world is what every proxy is put in front of: a healthy replica (real
// PostgreSQL and Redis), a replica whose database nobody listens on, and an
// address where no odin authz answers at all.
type world struct {
	authz, outage replica
	dead          string
	keys          keys
	logs          *testenv.LogBuffer
	// healthy is the healthy replica's configuration.
	healthy authzsvc.Config
}

// newWorld starts the replicas with --forwarded-headers mode, the one the
// proxy in front needs.
func newWorld(t *testing.T, mode string) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{logs: &testenv.LogBuffer{}}
	dbURL := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)

	store := testenv.OpenStore(t, dbURL, pgstore.Options{MaxConns: 2})
	bus, err := keystore.OpenRedis(keystore.RedisOptions{URL: redisURL, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	manager := keystore.NewManager(store, bus, keystore.ManagerOptions{})
	valid, k, err := manager.Create(ctx, keystore.Actor{ID: "e2e"}, keystore.NewKey{
		Name: "e2e", UserID: "user_alice", OrgID: "org_acme", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro",
	})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	revoked, rk, err := manager.Create(ctx, keystore.Actor{ID: "e2e"}, keystore.NewKey{Name: "e2e revoked", UserID: "user_bob"})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	if _, err := manager.Revoke(ctx, keystore.Actor{ID: "e2e"}, rk.ID); err != nil {
		t.Fatalf("revoke key: %v", err)
	}
	readOnly, _, err := manager.Create(ctx, keystore.Actor{ID: "e2e"}, keystore.NewKey{Name: "e2e read-only", UserID: "user_carol", Scopes: []string{"scans:read"}})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	restricted, _, err := manager.Create(ctx, keystore.Actor{ID: "e2e"}, keystore.NewKey{Name: "e2e restricted", UserID: "user_dave", Scopes: []string{"scans:read"},
		AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix(restrictedFrom + "/32")}})
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	unknown, err := keystore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	last := valid[len(valid)-1]
	bad := valid[:len(valid)-1] + map[bool]string{true: "1", false: "0"}[last == '0']
	w.keys = keys{valid: valid, validID: k.ID, readOnly: readOnly, revoked: revoked, unknown: unknown, badChecksum: bad, restricted: restricted}

	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(e2ePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	w.healthy = authzsvc.Config{DatabaseURL: dbURL, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true,
		PolicyFile: policyFile, ForwardedHeaders: mode}
	w.authz = startReplica(t, w.healthy, w.logs)
	down := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", testenv.FreePort(t))
	w.outage = startReplica(t, authzsvc.Config{DatabaseURL: down, StripCredential: true, PolicyFile: policyFile, ForwardedHeaders: mode}, w.logs)
	w.dead = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	return w
}

// echoed is what the echo upstream received, as it answers it.
type echoed struct {
	Method string              `json:"method"`
	URI    string              `json:"uri"`
	Host   string              `json:"host"`
	Header map[string][]string `json:"headers"` // lower-case names
	Body   string              `json:"body"`
}

// echoUpstream stands for the API: it answers every request with what it
// received, as JSON, and counts the requests.
type echoUpstream struct {
	Addr string
	hits atomic.Int64
}

func startEcho(t *testing.T) *echoUpstream {
	t.Helper()
	e := &echoUpstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		h := map[string][]string{}
		for k, v := range r.Header {
			h[strings.ToLower(k)] = v
		}
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: h, Body: string(body)})
	}))
	t.Cleanup(srv.Close)
	e.Addr = srv.Listener.Addr().String()
	return e
}

// unavailable skips, or fails under CI=true, because a tool is missing.
func unavailable(t *testing.T, what string) {
	t.Helper()
	testenv.Unavailable(t, what+" (this end-to-end test needs it, see envoy/README.md)")
}

// findTool returns the path of a proxy binary: $envVar, else the first
// candidate found (a name on PATH or a path).
func findTool(t *testing.T, what, envVar string, candidates ...string) string {
	t.Helper()
	if v := os.Getenv(envVar); v != "" {
		if _, err := exec.LookPath(v); err != nil {
			unavailable(t, fmt.Sprintf("%s=%s: %v", envVar, v, err))
		}
		return v
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	unavailable(t, fmt.Sprintf("%s not found (set %s, or put it on PATH)", what, envVar))
	return ""
}

// gopathBin is where `go install` puts binaries by default.
func gopathBin(name string) string {
	return filepath.Join(filepath.SplitList(build.Default.GOPATH)[0], "bin", name)
}

// process is a proxy the test started; it is stopped when the test ends.
type process struct {
	name   string
	cmd    *exec.Cmd
	out    *testenv.LogBuffer
	exited chan struct{}
}

// startProcess starts cmd in its own process group and waits until addr
// accepts connections.
func startProcess(t *testing.T, name string, cmd *exec.Cmd, addr string) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, out: &testenv.LogBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before listening on %s:\n%s", name, addr, p.out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after 20s:\n%s", name, addr, p.out)
		}
	}
}

// stop asks the process to exit (NGINX's master stops its workers), then
// kills its process group if it has not within 5 s.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// shippedMode is the --forwarded-headers a shipped proxy config says odin
// authz must run with (its one ODIN_FORWARDED_HEADERS=mode): the replicas
// behind it run with that, so a file naming the wrong mode fails the test.
func shippedMode(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ODIN_FORWARDED_HEADERS=(\w+)`).FindAllStringSubmatch(string(b), -1)
	if len(m) != 1 {
		t.Fatalf("%s names %d ODIN_FORWARDED_HEADERS=mode, want exactly one", file, len(m))
	}
	return m[0][1]
}

// loopbackAddr reserves a free loopback port for a proxy to listen on.
func loopbackAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}
