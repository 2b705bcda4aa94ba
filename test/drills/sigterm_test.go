package drills

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// TestDrillSIGTERMAuthz runs `odin authz` as a child process (the binary,
// as deployed) under load of several keys with --usage-interval 1h, so that
// only the flush at shutdown writes key usage, and sends it SIGTERM
// mid-load. The design says:
//   - checks the server had accepted when the signal came are answered;
//     new ones are refused once it stops accepting (a connection refused,
//     or a stream the server never processed), never cut off mid-answer;
//   - gRPC health reports NOT_SERVING while it drains;
//   - it exits 0; and
//   - every allowed check acknowledged to the client is in key_usage_hourly
//     (and last_used_at) after it exited: zero uses lost, and no refused
//     check was counted (so none was processed without an answer).
func TestDrillSIGTERMAuthz(t *testing.T) {
	var (
		workers = 12
		before  = pick(time.Second, 10*time.Second)
		nKeys   = 8
		tail    = 100 * time.Millisecond // load kept on the exited server: every check refused
	)
	bin := buildOdin(t)
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 2})
	keys, ids := createKeys(t, keystore.NewManager(store, nil, keystore.ManagerOptions{}), nKeys, "sigterm")

	c := startChild(t, bin, "odin authz serving", []string{"ODIN_DATABASE_URL=" + db, "ODIN_REDIS_URL=" + redisURL, "ODIN_REDIS_PREFIX=" + prefix, "ODIN_REDIS_MAC_SECRET=" + testenv.RedisMACSecret},
		"authz", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--ops-addr", "127.0.0.1:0",
		"--usage-interval", "1h", "--drain-timeout", "10s", "--log-format", "json",
		"--rate-limit-tiers", "free=100000/s:100000,pro=100000/s:100000,enterprise=100000/s:100000")
	conn, err := grpc.NewClient(c.addrs["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	health := watchHealth(t, conn, authv3.Authorization_ServiceDesc.ServiceName)
	if _, ok := waitFor(15*time.Second, func() bool { return health.seen(healthpb.HealthCheckResponse_SERVING) }); !ok {
		t.Fatalf("odin authz never reported SERVING on gRPC health (saw %v)", health.statuses())
	}

	// Every request is an allowed key: each one the server decides is a
	// use it records.
	ph := newPhases("serving")
	loadStart := time.Now()
	run := load{
		targets: []authv3.AuthorizationClient{authv3.NewAuthorizationClient(conn)}, workers: workers,
		maxDuration: pick(60*time.Second, 5*time.Minute), maxRequests: 5_000_000, timeout: 15 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			k := int(i) % nKeys
			return checkReq{class: ids[k], header: "api-key", value: keys[k]}
		},
	}.start()
	defer run.stop()

	time.Sleep(before)
	if n := totalUsage(t, store.Pool()); n != 0 {
		t.Fatalf("%d uses recorded before the signal with --usage-interval 1h: the drill cannot tell the shutdown flush from a periodic one", n)
	}
	ph.set("signalled")
	signalled, exited := c.terminate(t, "odin authz")
	ph.set("exited")
	time.Sleep(tail)
	samples := run.finish()
	elapsed := run.elapsed

	if c.exitCode != 0 {
		t.Errorf("odin authz exited %d after SIGTERM, want 0\n%s", c.exitCode, tail40(c.logs.String()))
	}
	notServing, ok := health.firstAt(healthpb.HealthCheckResponse_NOT_SERVING)
	if !ok || notServing.Before(signalled) || notServing.After(exited) {
		t.Errorf("gRPC health: want NOT_SERVING between the signal and the exit, saw %v", health.statuses())
	}
	logs := c.logs.String()
	for _, want := range []string{`"msg":"draining"`, `"msg":"odin authz stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log has no %s line", want)
		}
	}
	for _, bad := range []string{"drain timeout", "record key usage failed", "key usage buffer full"} {
		if strings.Contains(logs, bad) {
			t.Errorf("log says %q:\n%s", bad, tail40(logs))
		}
	}

	// Sort every answer by when it was sent and answered, relative to the
	// signal, and every failure into refused (the server never processed
	// it) or ambiguous (cut off: the client cannot know).
	var (
		beforeSignal, inFlight, afterSignal = map[string]int{}, map[string]int{}, map[string]int{}
		ambiguous                           = map[string]int{}
		acked                               = map[string]int64{}
		lastSent                            = map[string]time.Time{}
		refusedSample                       string
	)
	for _, s := range samples {
		out := s.outcome
		if strings.HasPrefix(out, "transport_") {
			if refused(s) {
				out = "refused"
				refusedSample = s.detail
			} else {
				ambiguous[s.outcome+": "+s.detail]++
			}
		}
		answered := s.sent.Add(s.latency)
		switch {
		case answered.Before(signalled):
			beforeSignal[out]++
		case s.sent.Before(signalled):
			inFlight[out]++
		default:
			afterSignal[out]++
		}
		if s.outcome == "200" {
			acked[s.class]++
			if s.sent.After(lastSent[s.class]) {
				lastSent[s.class] = s.sent
			}
		}
	}
	if len(ambiguous) > 0 {
		t.Errorf("checks cut off without an answer (neither answered nor refused): %v", ambiguous)
	}
	if other := only(beforeSignal, "200"); len(other) > 0 {
		t.Errorf("checks answered before the signal: %v, want only 200", other)
	}
	if other := only(only(inFlight, "200"), "refused"); len(other) > 0 {
		t.Errorf("checks in flight at the signal: %v, want 200 (or refused: never processed)", inFlight)
	}
	if bad := transportErrors(samples); len(bad) > 0 {
		for k := range bad {
			if !strings.Contains(k, "transport_Unavailable") {
				t.Errorf("failures other than a refusal: %v", bad)
				break
			}
		}
	}
	if afterSignal["refused"] == 0 {
		t.Errorf("no check was refused after the signal (%v): the load did not outlive the server", afterSignal)
	}

	// Zero lost: every acknowledged allow is a recorded use, and nothing
	// else is (a refused check was never decided).
	usage := usageByKey(t, store.Pool())
	var ackedTotal, recordedTotal int64
	for _, id := range ids {
		ackedTotal += acked[id]
		recordedTotal += usage[id].count
		if acked[id] == 0 {
			t.Errorf("key %s: no check allowed: the load did not reach every key", id)
		}
		last := usage[id].lastUsed
		if last.IsZero() || last.Before(lastSent[id].Add(-time.Millisecond)) || last.After(exited) {
			t.Errorf("key %s: last_used_at %v, want between its last allowed check (%v) and the exit (%v)",
				id, last, lastSent[id], exited)
		}
	}
	if ackedTotal != recordedTotal {
		t.Errorf("key usage after SIGTERM: %d allowed checks acknowledged, %d recorded: %s", ackedTotal, recordedTotal, describeUsage(acked, usage))
	}
	p50, p99, maxLat := quantiles(samples, func(s sample) bool { return s.outcome == "200" })

	f := loadFigures("sigterm_authz", samples, elapsed, workers)
	f.add("keys", nKeys)
	f.add("load_before_signal", signalled.Sub(loadStart))
	f.add("answered_before_signal", beforeSignal)
	f.add("in_flight_at_signal", inFlight)
	f.add("sent_after_signal", afterSignal)
	f.add("not_serving_after_signal", notServing.Sub(signalled))
	f.add("drain_logged", logGap(logs, "draining", "odin authz stopped"))
	f.add("exit_after_signal", exited.Sub(signalled))
	f.add("exit_code", c.exitCode)
	f.add("allowed_acked", int(ackedTotal))
	f.add("usage_recorded", int(recordedTotal))
	f.add("usage_lost", int(ackedTotal-recordedTotal))
	f.add("ambiguous", len(ambiguous))
	f.add("allow_p50", p50)
	f.add("allow_p99", p99)
	f.add("allow_max", maxLat)
	f.add("refused_as", fmt.Sprintf("%q", refusedSample))
	f.report(t)
}

// refused reports whether a failed check is one the server never
// processed: the connection was refused, or the stream was refused before
// any processing (HTTP/2 REFUSED_STREAM, GOAWAY above its last stream).
func refused(s sample) bool {
	if s.outcome != "transport_Unavailable" {
		return false
	}
	d := strings.ToLower(s.detail)
	return strings.Contains(d, "connection refused") || strings.Contains(d, "refused_stream") || strings.Contains(d, "unprocessed")
}

// TestDrillSIGTERMAdmin runs `odin admin` as a child process under a stream
// of POST /v1/keys with the operator token and sends it SIGTERM mid-stream:
// every key it acknowledged (201) is in PostgreSQL with its key.created
// audit event, no request it did not acknowledge created a key (refused
// connections, and requests that met a kept-alive connection the server
// closed as idle: counted), and it exits 0.
func TestDrillSIGTERMAdmin(t *testing.T) {
	var (
		workers = 8
		before  = pick(time.Second, 10*time.Second)
		tail    = 100 * time.Millisecond
	)
	bin := buildOdin(t)
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	token := "drill-operator-token-" + testenv.RandomSuffix() + testenv.RandomSuffix()
	c := startChild(t, bin, "odin admin serving",
		[]string{"ODIN_DATABASE_URL=" + db, "ODIN_REDIS_URL=" + redisURL, "ODIN_REDIS_PREFIX=" + prefix, "ODIN_REDIS_MAC_SECRET=" + testenv.RedisMACSecret, "ODIN_ADMIN_TOKEN=" + token},
		"admin", "--admin-addr", "127.0.0.1:0", "--log-format", "json")
	base := "http://" + c.addrs["addr"]
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	t.Cleanup(client.CloseIdleConnections)

	type result struct {
		name, id   string
		sent, done time.Time
		status     int    // 0: no HTTP answer
		err        string // the client's error when no answer
		refused    bool   // the connection was refused: nothing was sent
	}
	var (
		mu       sync.Mutex
		results  []result
		seq      atomic.Int64
		stop     = make(chan struct{})
		stopOnce sync.Once
		wg       sync.WaitGroup
	)
	stopStream := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
	deadline := time.Now().Add(pick(60*time.Second, 5*time.Minute))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				r := result{name: fmt.Sprintf("sigterm-%d", seq.Add(1))}
				body, _ := json.Marshal(map[string]any{"name": r.name, "scopes": []string{"scans:read"}, "user_id": "user_drill"})
				req, err := http.NewRequest(http.MethodPost, base+"/v1/keys", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				r.sent = time.Now()
				resp, err := client.Do(req)
				r.done = time.Now()
				if err != nil {
					r.err = err.Error()
					r.refused = errors.Is(err, syscall.ECONNREFUSED)
				} else {
					r.status = resp.StatusCode
					var created struct {
						ID  string `json:"id"`
						Key string `json:"key"`
					}
					if json.NewDecoder(resp.Body).Decode(&created) == nil && resp.StatusCode == http.StatusCreated {
						if !strings.HasPrefix(created.Key, "odin_sk_") || created.ID == "" {
							r.err = "201 without a key and its id"
						}
						r.id = created.ID
					}
					resp.Body.Close()
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	defer stopStream()

	time.Sleep(before)
	signalled, exited := c.terminate(t, "odin admin")
	time.Sleep(tail)
	stopStream()

	if c.exitCode != 0 {
		t.Errorf("odin admin exited %d after SIGTERM, want 0\n%s", c.exitCode, tail40(c.logs.String()))
	}
	store, err := pgstore.Open(context.Background(), db, pgstore.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	created := keysByName(t, store)

	var (
		acked, ackedAfterSignal, lost, phantom int
		refusedN, statuses                     = 0, map[int]int{}
		ambiguous                              = map[string]int{}
	)
	for _, r := range results {
		k, inPG := created[r.name]
		switch {
		case r.status == http.StatusCreated && r.err == "":
			acked++
			if r.done.After(signalled) {
				ackedAfterSignal++
			}
			if !inPG || k.id != r.id || !k.audited {
				lost++
				t.Errorf("key %s acknowledged (201, id %s) but PostgreSQL has: key %v (id %q), key.created event %v", r.name, r.id, inPG, k.id, k.audited)
			}
		case r.status != 0:
			statuses[r.status]++
		case r.refused:
			refusedN++
		default:
			ambiguous[r.err]++
		}
		if r.status != http.StatusCreated && inPG {
			phantom++
			t.Errorf("request %s was not acknowledged (%d %s) but created key %s", r.name, r.status, r.err, k.id)
		}
	}
	if acked == 0 {
		t.Errorf("no key acknowledged of %d requests", len(results))
	}
	if len(statuses) > 0 {
		t.Errorf("answers other than 201: %v", statuses)
	}
	// A request sent on a kept-alive connection just as the server closes
	// it idle (net/http's Shutdown does, at once) gets no answer: the
	// client cannot tell whether the key exists. The phantom check above
	// shows the server never read it; the drill reports how many.
	if refusedN == 0 {
		t.Errorf("no request was refused after the exit: the stream did not outlive the server")
	}

	f := newFigures("sigterm_admin")
	f.add("requests", len(results))
	f.add("workers", workers)
	f.add("created_acked", acked)
	f.add("acked_after_signal", ackedAfterSignal)
	f.add("in_postgres_with_audit", acked-lost)
	f.add("lost", lost)
	f.add("created_unacked", phantom)
	f.add("refused", refusedN)
	f.add("unanswered_not_created", ambiguous)
	f.add("exit_after_signal", exited.Sub(signalled))
	f.add("exit_code", c.exitCode)
	f.report(t)
}

// createdKey is what PostgreSQL holds of a key the drill asked for.
type createdKey struct {
	id      string
	audited bool // a key.created audit event targets it
}

// keysByName reads every key with its key.created event, by name.
func keysByName(t *testing.T, store *pgstore.Store) map[string]createdKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := store.Pool().Query(ctx, `
		SELECT k.name, k.id, EXISTS (SELECT 1 FROM audit_events e WHERE e.action = 'key.created' AND e.target = k.id)
		FROM api_keys k`)
	if err != nil {
		t.Fatalf("read keys: %v", err)
	}
	defer rows.Close()
	out := map[string]createdKey{}
	for rows.Next() {
		var name string
		var k createdKey
		if err := rows.Scan(&name, &k.id, &k.audited); err != nil {
			t.Fatalf("read keys: %v", err)
		}
		out[name] = k
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read keys: %v", err)
	}
	return out
}

// child is an odin command running as a child process.
type child struct {
	cmd      *exec.Cmd
	addrs    map[string]string // the string fields of its ready line
	logs     *testenv.LogBuffer
	done     chan struct{}
	exitCode int
	exitedAt time.Time
}

// startChild starts bin with args and the extra environment (over this
// process's, less ODIN_* variables) and waits for the JSON log line whose
// msg is readyMsg. The child is killed at the end of the test if it still
// runs.
func startChild(t *testing.T, bin, readyMsg string, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ODIN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// A race-enabled child would sleep a second before exiting (GORACE
	// atexit_sleep_ms): the drills time the exit.
	cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, logs: &testenv.LogBuffer{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", args[0], err)
	}
	ready := make(chan map[string]string, 1)
	logsRead := make(chan struct{})
	go func() {
		defer close(logsRead)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = c.logs.Write(append(append([]byte{}, line...), '\n'))
			var rec map[string]any
			if bytes.Contains(line, []byte(readyMsg)) && json.Unmarshal(line, &rec) == nil && rec["msg"] == readyMsg {
				addrs := map[string]string{}
				for k, v := range rec {
					if s, ok := v.(string); ok {
						addrs[k] = s
					}
				}
				ready <- addrs
			}
		}
	}()
	go func() {
		<-logsRead // Wait closes the pipe: read it to the end first
		err := cmd.Wait()
		c.exitedAt = time.Now()
		c.exitCode = cmd.ProcessState.ExitCode()
		if err != nil && c.exitCode == 0 {
			c.exitCode = -1
		}
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", args[0], tail40(c.logs.String()))
		}
	})
	select {
	case c.addrs = <-ready:
		return c
	case <-c.done:
		t.Fatalf("%s exited (%d) before serving:\n%s", args[0], c.exitCode, c.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not serving after 60s:\n%s", args[0], c.logs.String())
	}
	return nil
}

// terminate sends the child SIGTERM and waits for it to exit, failing the
// test after 30s; name is what the failure calls it. It returns when the
// signal was sent and when the child exited.
func (c *child) terminate(t *testing.T, name string) (signalled, exited time.Time) {
	t.Helper()
	signalled = time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
		return signalled, c.exitedAt
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running 30s after SIGTERM\n%s", name, tail40(c.logs.String()))
	}
	return signalled, time.Time{}
}

func tail40(s string) string { return tail(s, 40) }

// logGap is the time between the first JSON log lines with msg from and
// msg to (0 when either is missing).
func logGap(logs, from, to string) time.Duration {
	at := map[string]time.Time{}
	for line := range strings.SplitSeq(logs, "\n") {
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && (rec.Msg == from || rec.Msg == to) {
			if _, ok := at[rec.Msg]; !ok {
				at[rec.Msg] = rec.Time
			}
		}
	}
	if at[from].IsZero() || at[to].IsZero() {
		return 0
	}
	return at[to].Sub(at[from])
}

// healthWatch records what a gRPC health Watch stream reports. It keeps the
// stream open until the server ends it, as a client-side health checker
// does: the replica must end its Watch streams when it drains (an open
// stream is an RPC its graceful stop would wait for, until --drain-timeout).
type healthWatch struct {
	mu     sync.Mutex
	events []healthSeen
}

type healthSeen struct {
	status healthpb.HealthCheckResponse_ServingStatus
	at     time.Time
}

func watchHealth(t *testing.T, conn *grpc.ClientConn, service string) *healthWatch {
	t.Helper()
	h := &healthWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health watch: %v", err)
	}
	go func() {
		defer cancel()
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.events = append(h.events, healthSeen{resp.GetStatus(), time.Now()})
			h.mu.Unlock()
		}
	}()
	return h
}

func (h *healthWatch) firstAt(st healthpb.HealthCheckResponse_ServingStatus) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.events {
		if s.status == st {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func (h *healthWatch) seen(st healthpb.HealthCheckResponse_ServingStatus) bool {
	_, ok := h.firstAt(st)
	return ok
}

func (h *healthWatch) statuses() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(h.events))
	for i, s := range h.events {
		out[i] = s.status.String()
	}
	return out
}

// The odin binary, built once per test binary: with the race detector when
// this test runs with it, so the child's shutdown is checked too. The
// directory is removed by TestMain.
var odinBinary struct {
	once sync.Once
	dir  string
	path string
	took time.Duration
	err  error
}

func buildOdin(t *testing.T) string {
	t.Helper()
	odinBinary.once.Do(func() {
		start := time.Now()
		dir, err := os.MkdirTemp("", "odin-drills-")
		if err != nil {
			odinBinary.err = err
			return
		}
		odinBinary.dir = dir
		path := filepath.Join(dir, "odin")
		args := []string{"build", "-o", path}
		if testenv.RaceEnabled() {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "github.com/odin-scan/odin-authz/cmd/odin")...).CombinedOutput()
		if err != nil {
			odinBinary.err = fmt.Errorf("go build ./cmd/odin: %v\n%s", err, out)
			return
		}
		odinBinary.path, odinBinary.took = path, time.Since(start)
		t.Logf("built odin in %v", odinBinary.took.Round(time.Millisecond))
	})
	if odinBinary.err != nil {
		t.Fatal(odinBinary.err)
	}
	return odinBinary.path
}

// removeBinaries deletes the built binary's directory (from TestMain).
func removeBinaries() {
	if odinBinary.dir != "" {
		_ = os.RemoveAll(odinBinary.dir)
	}
}
