package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Store-side cost. Around every run the harness reads the CPU time of the
// local PostgreSQL server processes (every process whose /proc/<pid>/comm
// is "postgres", plus what the postmaster has reaped from backends that
// exited meanwhile) and of the redis-server of --redis-url (its pid from
// INFO server), from /proc like CPUTime reads odin's, and Redis's INFO
// commandstats. One difference: a live store process's time is read from
// /proc/<pid>/task/*/schedstat (the kernel's sum_exec_runtime, in ns, the
// figure utime+stime are derived from), falling back to /proc/<pid>/stat's
// 10 ms ticks. The stores' CPU is spread over many backends, each of which
// would lose up to a tick per reading. Other users of the same servers
// inflate these figures; the baseline runs, which touch neither store,
// measure that background.

// StoreWatch says which store processes a run watched, and holds the
// store-side probes.
type StoreWatch struct {
	// PostgresProcesses is how many postgres processes there were at the
	// start; 0 when PostgreSQL's CPU was not measured.
	PostgresProcesses int `json:"postgres_processes"`
	// RedisPID is the redis-server of --redis-url (INFO server process_id);
	// 0 when its CPU was not measured.
	RedisPID int      `json:"redis_pid,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	// RedisEntryBytes is the mean MEMORY USAGE of the entries odin wrote,
	// by kind: "key" (API key records) and "jwt" (verified sessions).
	RedisEntryBytes map[string]float64 `json:"redis_entry_bytes,omitempty"`
	// Usage is the usage-flush probe: odin's batch write of key last-used
	// times, measured on PostgreSQL.
	Usage *UsageProbe `json:"usage_probe,omitempty"`
}

// UsageProbe is the PostgreSQL CPU of odin's usage flush
// (pgstore.RecordUsage), which every replica runs every --usage-interval
// with one row per distinct key it saw.
type UsageProbe struct {
	Batches      int     `json:"batches"`
	RowsPerBatch int     `json:"rows_per_batch"`
	Seconds      float64 `json:"seconds"`
	PGCPUSeconds float64 `json:"pg_cpu_seconds"`
	// BackgroundPGCores is PostgreSQL's CPU per second over a second
	// before the batches; PGCPUPerRowUS takes it out, PGCPUPerRowRawUS
	// does not.
	BackgroundPGCores float64 `json:"background_pg_cores"`
	PGCPUPerRowUS     float64 `json:"pg_cpu_per_row_us"`
	PGCPUPerRowRawUS  float64 `json:"pg_cpu_per_row_raw_us"`
	LoadAvg           string  `json:"loadavg"`
}

// RedisCommandStat is one command's INFO commandstats (calls, and the time
// Redis spent executing them, I/O excluded).
type RedisCommandStat struct {
	Calls int64 `json:"calls"`
	Usec  int64 `json:"usec"`
}

// StoreCPU is the store-side cost of one server's runs (Measurement.Store).
type StoreCPU struct {
	PGMeasured    bool `json:"pg_measured"`
	RedisMeasured bool `json:"redis_measured"`
	// PGCPUSeconds and RedisCPUSeconds are the servers' utime+stime over
	// the runs; *Cores divides them by the runs' wall time.
	PGCPUSeconds    float64 `json:"pg_cpu_seconds"`
	RedisCPUSeconds float64 `json:"redis_cpu_seconds"`
	PGCores         float64 `json:"pg_cores"`
	RedisCores      float64 `json:"redis_cores"`
	// PGQueries is odin's odin_keystore_store_queries_total delta and
	// RedisHits its odin_keystore_lookups_total{tier="redis"} (odin only).
	PGQueries float64 `json:"pg_queries"`
	RedisHits float64 `json:"redis_hits"`
	// RedisCommands is the INFO commandstats delta, every client included.
	// It also counts the commands scripts run: RedisCalls leaves those of
	// odin's rate-limit script out (networkCalls), so it counts the
	// commands clients sent.
	RedisCommands map[string]RedisCommandStat `json:"redis_commands,omitempty"`
	RedisCalls    int64                       `json:"redis_calls"`
	// Derived: per store query, per request, per Redis command.
	PGCPUPerQueryUS   float64 `json:"pg_cpu_per_query_us"`
	PGCPUPerReqUS     float64 `json:"pg_cpu_per_req_us"`
	RedisCPUPerReqUS  float64 `json:"redis_cpu_per_req_us"`
	RedisCPUPerCallUS float64 `json:"redis_cpu_per_call_us"`
	RedisCallsPerReq  float64 `json:"redis_calls_per_req"`

	pg, redis time.Duration
}

// storeSnapshot is the stores' counters at one instant.
type storeSnapshot struct {
	pg, redis     time.Duration
	pgOK, redisOK bool
	cmds          map[string]RedisCommandStat
}

// storeWatcher reads the store processes' CPU time.
type storeWatcher struct {
	watch    *StoreWatch
	pgOK     bool
	client   *redis.Client // nil: Redis not watched
	redisPID int
	sampled  map[string]bool
}

// newStoreWatcher finds the store processes; what it cannot watch it notes
// in the report and leaves out.
func newStoreWatcher(ctx context.Context, redisURL string) *storeWatcher {
	w := &storeWatcher{watch: &StoreWatch{}, sampled: map[string]bool{}}
	if n, _, err := postgresCPU(); err != nil || n == 0 {
		w.watch.Notes = append(w.watch.Notes, "PostgreSQL CPU not measured: no local process named postgres")
	} else {
		w.pgOK, w.watch.PostgresProcesses = true, n
	}
	if redisURL == "" {
		return w
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		w.watch.Notes = append(w.watch.Notes, "Redis CPU not measured: bad Redis URL")
		return w
	}
	c := redis.NewClient(opts)
	pid, err := redisServerPID(ctx, c)
	if err != nil {
		c.Close()
		w.watch.Notes = append(w.watch.Notes, "Redis CPU not measured: "+err.Error())
		return w
	}
	w.client, w.redisPID, w.watch.RedisPID = c, pid, pid
	return w
}

// redisServerPID asks Redis for its process id and checks it is a local
// redis-server.
func redisServerPID(ctx context.Context, c *redis.Client) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO server: %w", err)
	}
	var pid int
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if pid <= 0 {
		return 0, errors.New("INFO server has no process_id")
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "redis-server" {
		return 0, fmt.Errorf("process %d is not a local redis-server", pid)
	}
	return pid, nil
}

func (w *storeWatcher) close() {
	if w != nil && w.client != nil {
		w.client.Close()
	}
}

// snapshot reads the stores' CPU time and command counts; a failed read
// leaves that store out of the delta.
func (w *storeWatcher) snapshot(ctx context.Context) storeSnapshot {
	var s storeSnapshot
	if w == nil {
		return s
	}
	if w.pgOK {
		if _, cpu, err := postgresCPU(); err == nil {
			s.pg, s.pgOK = cpu, true
		}
	}
	if w.client != nil {
		cpu, err := preciseCPUTime(w.redisPID)
		cmds, err2 := redisCommandStats(ctx, w.client)
		if err == nil && err2 == nil {
			s.redis, s.cmds, s.redisOK = cpu, cmds, true
		}
	}
	return s
}

// postgresCPU sums utime+stime of every process whose comm is postgres,
// plus cutime+cstime of the postmasters (postgres processes whose parent
// is not one): a backend that exits between two readings is then still
// counted, in its postmaster's reaped-children time.
func postgresCPU() (int, time.Duration, error) {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc: %w", err)
	}
	type proc struct {
		ppid          int64
		own, children time.Duration
	}
	procs := map[int64]proc{}
	for _, e := range dir {
		pid, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		f, err := statFields(int(pid))
		if err != nil || len(f) < 15 {
			continue // exited meanwhile
		}
		ppid, _ := strconv.ParseInt(f[1], 10, 64)
		var t [4]int64
		for i := range t {
			t[i], _ = strconv.ParseInt(f[11+i], 10, 64) // utime, stime, cutime, cstime
		}
		own := time.Duration(t[0]+t[1]) * time.Second / clockTicks
		if ns, err := schedRuntime(int(pid)); err == nil {
			own = ns
		}
		procs[pid] = proc{ppid: ppid, own: own, children: time.Duration(t[2]+t[3]) * time.Second / clockTicks}
	}
	var total time.Duration
	for _, p := range procs {
		total += p.own
		if _, child := procs[p.ppid]; !child {
			total += p.children
		}
	}
	return len(procs), total, nil
}

// preciseCPUTime is CPUTime from schedstat where the kernel has it.
func preciseCPUTime(pid int) (time.Duration, error) {
	if d, err := schedRuntime(pid); err == nil {
		return d, nil
	}
	return CPUTime(pid)
}

// schedRuntime sums the first field of /proc/<pid>/task/*/schedstat: the
// nanoseconds every thread of the process has run.
func schedRuntime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, errors.New("empty schedstat")
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		total += ns
	}
	if len(tasks) == 0 {
		return 0, errors.New("no threads")
	}
	return time.Duration(total), nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name
// (field 3, the state, is f[0]).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, errors.New("unexpected /proc stat format")
	}
	return strings.Fields(string(b[i+1:])), nil
}

// redisCommandStats reads INFO commandstats.
func redisCommandStats(ctx context.Context, c *redis.Client) (map[string]RedisCommandStat, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats: %w", err)
	}
	return parseCommandStats(strings.NewReader(info)), nil
}

// parseCommandStats reads lines such as
// "cmdstat_get:calls=21,usec=175,usec_per_call=8.33,rejected_calls=0,failed_calls=0".
func parseCommandStats(r io.Reader) map[string]RedisCommandStat {
	out := map[string]RedisCommandStat{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var st RedisCommandStat
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.Calls = n
			case "usec":
				st.Usec = n
			}
		}
		out[cmd] = st
	}
	return out
}

// networkCalls is the number of commands clients sent: every call in
// commandstats, less those odin's rate-limit lease script
// (extauthz/ratelimit) runs inside each EVALSHA: TIME, GET and, when it
// grants, SET. Scripts of other users are assumed rare.
func networkCalls(cmds map[string]RedisCommandStat) int64 {
	var n int64
	for _, c := range cmds {
		n += c.Calls
	}
	scripts := cmds["evalsha"].Calls + cmds["eval"].Calls
	for _, inner := range []string{"time", "get", "set"} {
		n -= min(cmds[inner].Calls, scripts)
	}
	return n
}

// addStore folds one run's store deltas into m.
func (m *Measurement) addStore(a, b storeSnapshot, delta counters) {
	if !(a.pgOK && b.pgOK) && !(a.redisOK && b.redisOK) {
		return
	}
	if m.Store == nil {
		m.Store = &StoreCPU{PGMeasured: true, RedisMeasured: true}
	}
	s := m.Store
	if a.pgOK && b.pgOK {
		s.pg += max(b.pg-a.pg, 0)
	} else {
		s.PGMeasured = false
	}
	if a.redisOK && b.redisOK {
		s.redis += max(b.redis-a.redis, 0)
		for cmd, after := range b.cmds {
			if cmd == "info" {
				continue // the harness's own readings
			}
			before := a.cmds[cmd] // zero when new, or after CONFIG RESETSTAT
			d := RedisCommandStat{Calls: after.Calls - before.Calls, Usec: after.Usec - before.Usec}
			if d.Calls <= 0 || d.Usec < 0 {
				continue
			}
			if s.RedisCommands == nil {
				s.RedisCommands = map[string]RedisCommandStat{}
			}
			cur := s.RedisCommands[cmd]
			s.RedisCommands[cmd] = RedisCommandStat{Calls: cur.Calls + d.Calls, Usec: cur.Usec + d.Usec}
		}
	} else {
		s.RedisMeasured = false
	}
	s.PGQueries += delta.sum("odin_keystore_store_queries_total")
	s.RedisHits += delta.sum("odin_keystore_lookups_total", `tier="redis"`)
}

// finishStore computes the derived store figures.
func (m *Measurement) finishStore() {
	s := m.Store
	if s == nil {
		return
	}
	s.PGCPUSeconds, s.RedisCPUSeconds = s.pg.Seconds(), s.redis.Seconds()
	s.RedisCalls = networkCalls(s.RedisCommands)
	if m.Seconds > 0 {
		s.PGCores, s.RedisCores = s.PGCPUSeconds/m.Seconds, s.RedisCPUSeconds/m.Seconds
	}
	pgUS, redisUS := float64(s.pg.Microseconds()), float64(s.redis.Microseconds())
	if s.PGQueries > 0 {
		s.PGCPUPerQueryUS = pgUS / s.PGQueries
	}
	if m.Requests > 0 {
		s.PGCPUPerReqUS = pgUS / float64(m.Requests)
		s.RedisCPUPerReqUS = redisUS / float64(m.Requests)
		s.RedisCallsPerReq = float64(s.RedisCalls) / float64(m.Requests)
	}
	if s.RedisCalls > 0 {
		s.RedisCPUPerCallUS = redisUS / float64(s.RedisCalls)
	}
}

// StoreCost is one scenario's store-side cost with the background (what
// the stores did during the baseline's runs, per second) taken out.
type StoreCost struct {
	// BackgroundPGCores and BackgroundRedisCores are the stores' CPU per
	// second during the baseline runs, which touch neither store: other
	// users, and the idle odin's bus traffic. BackgroundRedisCalls is per
	// second too.
	BackgroundPGCores, BackgroundRedisCores, BackgroundRedisCalls float64
	// Net figures: odin's runs less the background for their duration,
	// floored at zero.
	PGCPUPerQueryUS, PGCPUPerReqUS, RedisCPUPerReqUS, RedisCallsPerReq, RedisCPUPerCallUS float64
	PGMeasured, RedisMeasured                                                             bool
}

// NetStoreCost is the store cost of res less the background.
func NetStoreCost(res Result) StoreCost {
	o, b := res.Odin.Store, res.Baseline.Store
	var c StoreCost
	if o == nil || res.Odin.Requests == 0 {
		return c
	}
	c.PGMeasured, c.RedisMeasured = o.PGMeasured, o.RedisMeasured
	if b != nil && res.Baseline.Seconds > 0 {
		c.BackgroundPGCores, c.BackgroundRedisCores = b.PGCores, b.RedisCores
		c.BackgroundRedisCalls = float64(b.RedisCalls) / res.Baseline.Seconds
	}
	secs, reqs := res.Odin.Seconds, float64(res.Odin.Requests)
	pg := max(o.PGCPUSeconds-c.BackgroundPGCores*secs, 0) * 1e6
	rd := max(o.RedisCPUSeconds-c.BackgroundRedisCores*secs, 0) * 1e6
	calls := max(float64(o.RedisCalls)-c.BackgroundRedisCalls*secs, 0)
	if o.PGQueries > 0 {
		c.PGCPUPerQueryUS = pg / o.PGQueries
	}
	c.PGCPUPerReqUS, c.RedisCPUPerReqUS, c.RedisCallsPerReq = pg/reqs, rd/reqs, calls/reqs
	if calls > 0 {
		c.RedisCPUPerCallUS = rd / calls
	}
	return c
}

// sampleEntries records the mean Redis memory of the entries odin wrote
// under prefix, once per kind: API key records after cold-key-redis,
// sessions after jwt-first-sight.
func (w *storeWatcher) sampleEntries(ctx context.Context, scenario, prefix string) {
	kind := map[string]string{"cold-key-redis": "key", "jwt-first-sight": "jwt"}[scenario]
	if w == nil || w.client == nil || kind == "" || prefix == "" || w.sampled[kind] {
		return
	}
	w.sampled[kind] = true
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var total, n float64
	iter := w.client.Scan(ctx, 0, prefix+kind+":*", 200).Iterator()
	for iter.Next(ctx) && n < 20 {
		if b, err := w.client.MemoryUsage(ctx, iter.Val()).Result(); err == nil && b > 0 {
			total += float64(b)
			n++
		}
	}
	if n > 0 {
		if w.watch.RedisEntryBytes == nil {
			w.watch.RedisEntryBytes = map[string]float64{}
		}
		w.watch.RedisEntryBytes[kind] = total / n
	}
}

// usageProbe writes odin's usage flush (pgstore.RecordUsage: one row per
// distinct key seen in the interval) for up to 5,000 seeded keys, three
// times, and reads PostgreSQL's CPU around each.
func (h *harness) usageProbe(ctx context.Context) error {
	if h.store == nil || !h.store.pgOK {
		return nil
	}
	st, err := pgstore.Open(ctx, h.dbURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer st.Close()
	keys := Keys{Seed: h.cfg.Seed}
	p := &UsageProbe{RowsPerBatch: min(h.cfg.Keys, 5_000), LoadAvg: LoadAvg()}
	// The background: PostgreSQL's CPU over a second with no probe.
	_, bg0, err := postgresCPU()
	if err != nil {
		return err
	}
	t0 := time.Now()
	time.Sleep(time.Second)
	_, bg1, err := postgresCPU()
	if err != nil {
		return err
	}
	p.BackgroundPGCores = (bg1 - bg0).Seconds() / time.Since(t0).Seconds()
	var cpu time.Duration
	start := time.Now()
	for b := range 3 {
		now := time.Now().UTC()
		batch := make([]keystore.Usage, p.RowsPerBatch)
		for i := range batch {
			batch[i] = keystore.Usage{KeyID: keys.ID(i), Hour: now.Truncate(time.Hour), Count: int64(b + 1), LastUsed: now}
		}
		_, c0, err := postgresCPU()
		if err != nil {
			return err
		}
		bctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = st.RecordUsage(bctx, batch)
		cancel()
		if err != nil {
			return fmt.Errorf("usage probe: %w", err)
		}
		_, c1, err := postgresCPU()
		if err != nil {
			return err
		}
		cpu += max(c1-c0, 0)
		p.Batches++
	}
	p.Seconds = time.Since(start).Seconds()
	p.PGCPUSeconds = cpu.Seconds()
	rows := float64(p.Batches * p.RowsPerBatch)
	p.PGCPUPerRowRawUS = p.PGCPUSeconds * 1e6 / rows
	p.PGCPUPerRowUS = max(p.PGCPUSeconds-p.BackgroundPGCores*p.Seconds, 0) * 1e6 / rows
	h.store.watch.Usage = p
	h.log.Info("usage probe", "rows", p.Batches*p.RowsPerBatch, "pg_cpu_per_row_us", round1(p.PGCPUPerRowUS))
	return nil
}

// writeStoreTable writes the store-side cost table of the report.
func writeStoreTable(b *strings.Builder, r *Report) {
	measured := false
	for _, res := range r.Results {
		measured = measured || res.Odin.Store != nil
	}
	if !measured && r.StoreProcesses == nil {
		return
	}
	b.WriteString("Store-side CPU (local PostgreSQL processes and the redis-server of --redis-url, from /proc, over the same runs). " +
		"Other users of the same PostgreSQL and Redis inflate these figures: the background is what the stores did per second during " +
		"the baseline's runs (which touch neither), and the net columns take it out. Redis calls are the commands clients sent " +
		"(INFO commandstats, less the TIME/GET/SET odin's rate-limit script runs inside each EVALSHA).\n\n")
	if measured {
		b.WriteString("| scenario | conc | PG queries/req | PG CPU µs/query | net PG CPU µs/query | Redis calls/req | Redis CPU µs/req | net Redis CPU µs/req | net Redis calls/req | Redis CPU µs/call | background PG / Redis CPU (ms/s) |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, res := range r.Results {
			s := res.Odin.Store
			if s == nil || res.Odin.Requests == 0 {
				continue
			}
			n := NetStoreCost(res)
			fmt.Fprintf(b, "| %s | %d | %.2f | %s | %s | %s | %s | %s | %s | %s | %.1f / %.1f |\n", res.Scenario+transportNote(res), res.Concurrency,
				s.PGQueries/float64(res.Odin.Requests), perOrDash(s.PGCPUPerQueryUS, s.PGQueries > 0 && s.PGMeasured),
				perOrDash(n.PGCPUPerQueryUS, s.PGQueries > 0 && s.PGMeasured),
				perOrDash(s.RedisCallsPerReq, s.RedisMeasured), perOrDash(s.RedisCPUPerReqUS, s.RedisMeasured),
				perOrDash(n.RedisCPUPerReqUS, s.RedisMeasured), perOrDash(n.RedisCallsPerReq, s.RedisMeasured),
				perOrDash(s.RedisCPUPerCallUS, s.RedisMeasured && s.RedisCalls > 0),
				n.BackgroundPGCores*1e3, n.BackgroundRedisCores*1e3)
		}
		b.WriteString("\n")
	}
	if w := r.StoreProcesses; w != nil {
		if u := w.Usage; u != nil {
			fmt.Fprintf(b, "- usage flush (odin's RecordUsage batch): %d batches of %d rows in %.2f s, PostgreSQL CPU %.1f µs/row, %.1f µs/row net of a background of %.0f ms/s (loadavg %s)\n",
				u.Batches, u.RowsPerBatch, u.Seconds, u.PGCPUPerRowRawUS, u.PGCPUPerRowUS, u.BackgroundPGCores*1e3, u.LoadAvg)
		}
		for _, kind := range []string{"key", "jwt"} {
			if v, ok := w.RedisEntryBytes[kind]; ok {
				fmt.Fprintf(b, "- Redis MEMORY USAGE of a %s entry: %.0f B (mean of up to 20)\n", kind, v)
			}
		}
		for _, n := range w.Notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
}

func perOrDash(v float64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.1f", v)
}
