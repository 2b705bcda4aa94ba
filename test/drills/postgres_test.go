package drills

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// outagePools are the keys an outage round sends besides the cached ones:
// keys PostgreSQL has that no tier has cached, and keys that exist nowhere.
// Each round has its own, first sent once PostgreSQL is down.
type outagePools struct {
	uncached, unknown []string
	probes            []string // one uncached key per replica, to time the recovery
}

// TestDrillPostgresOutage stops PostgreSQL under load of two replicas
// sharing a Redis, for a while, and starts it again; then the same with a
// crash (pg_ctl stop -m immediate). The design says:
//   - keys the replicas had cached keep answering 200 throughout, past
//     their cache TTL too (stale-if-error);
//   - keys only PostgreSQL has, and keys that exist nowhere, get 503
//     UNAVAILABLE with the error body while it is down: never 401, never 200;
//   - every check is answered within the store timeout (plus scheduling
//     slack): nothing waits on a dead server;
//   - once PostgreSQL accepts connections again the replicas answer those
//     keys (200 and 401) without being restarted: the pool reconnects;
//   - usage counted while PostgreSQL was down is written once it is back.
func TestDrillPostgresOutage(t *testing.T) {
	var (
		workers      = 12
		before       = pick(700*time.Millisecond, 5*time.Second)
		outage       = pick(2500*time.Millisecond, 30*time.Second)
		after        = pick(time.Second, 10*time.Second)
		storeTimeout = 500 * time.Millisecond  // the default --store-timeout
		cacheTTL     = 1500 * time.Millisecond // shorter than the outage: stale-if-error must answer
		slack        = 1500 * time.Millisecond
		modes        = []string{"stop", "kill"}
	)
	pg := testenv.StartPostgresCluster(t)
	db := pg.URL()
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 2})
	if err := store.Migrate(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("migrate the private cluster: %v", err)
	}
	redisURL, prefix := testenv.Redis(t)
	// Keys are created without Redis, as keys created longer than the cache
	// TTL ago are: in PostgreSQL only (a Manager with Redis writes new keys
	// there too).
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})

	cfg := authzsvc.Config{DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true,
		RateLimit: generousTiers(), UsageInterval: time.Second}
	cfg.Cache.StoreTimeout, cfg.Cache.TTL = storeTimeout, cacheTTL
	reps := []*replica{startReplica(t, "a", cfg), startReplica(t, "b", cfg)}

	var allowed atomic.Int64 // 200s outside the load (warm-up, probes): they count as usage too
	checkKey := func(r *replica, key string) string {
		got := checkOnce(t, r, key)
		if got == "200" {
			allowed.Add(1)
		}
		return got
	}
	cached, _ := createKeys(t, mgr, 32, "cached")
	rounds := make([]outagePools, len(modes))
	for i := range rounds {
		rounds[i].uncached, _ = createKeys(t, mgr, 64, "uncached "+modes[i])
		rounds[i].probes, _ = createKeys(t, mgr, len(reps), "probe "+modes[i])
		rounds[i].unknown = unknownKeys(t, 32)
	}
	for _, r := range reps {
		for _, k := range cached {
			if got := checkKey(r, k); got != "200" {
				t.Fatalf("warming replica %s: %s", r.name, got)
			}
		}
	}

	// Of every 16 requests: 8 cached keys, 4 uncached, 4 unknown (cached
	// keys too while no round's pools are out); alternating replicas.
	var pools atomic.Pointer[outagePools]
	ph := newPhases("before")
	run := load{
		targets: []authv3.AuthorizationClient{reps[0].client, reps[1].client}, workers: workers,
		maxDuration: pick(90*time.Second, 5*time.Minute), maxRequests: 5_000_000, timeout: 10 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "api-key", target: int(i % 2)}
			blk, j := int(i/32), int(i/2)%16
			p := pools.Load()
			switch {
			case j < 8 || p == nil:
				req.class, req.value = "cached", cached[(blk*8+j)%len(cached)]
			case j < 12:
				req.class, req.value = "uncached", p.uncached[(blk*4+j-8)%len(p.uncached)]
			default:
				req.class, req.value = "unknown", p.unknown[(blk*4+j-12)%len(p.unknown)]
			}
			return req
		},
	}.start()
	defer run.stop()

	type roundFigures struct {
		stopTook, down, startTook time.Duration
		recovery                  time.Duration // PostgreSQL accepting → every replica answers an uncached key
		staleHits, errorQueries   float64
		readyDuring               bool
	}
	figs := make([]roundFigures, len(modes))
	time.Sleep(before)
	for i, mode := range modes {
		rf := &figs[i]
		stale0, err0 := metricSum(t, reps, "odin_keystore_lookups_total", map[string]string{"tier": "stale"}),
			metricSum(t, reps, "odin_keystore_store_queries_total", map[string]string{"result": "error"})
		ph.set("stopping_" + mode) // PostgreSQL going down: nothing asserted but the general rules
		began := time.Now()
		if mode == "stop" {
			pg.Stop()
		} else {
			pg.Kill()
		}
		down := time.Now()
		rf.stopTook = down.Sub(began)
		pools.Store(&rounds[i]) // first sent now: no tier can have them
		ph.set(mode)
		time.Sleep(outage)
		rf.readyDuring = true
		for _, r := range reps { // PostgreSQL down, LRU warm: still ready
			rf.readyDuring = rf.readyDuring && r.svc.Readiness().Report().Ready
		}
		ph.set("recovering_" + mode)
		startCalled := time.Now()
		pg.Start()
		accepting := time.Now()
		rf.down, rf.startTook = accepting.Sub(down), accepting.Sub(startCalled)
		for j, r := range reps {
			took, ok := waitFor(20*time.Second, func() bool { return checkKey(r, rounds[i].probes[j]) == "200" })
			if !ok {
				t.Fatalf("%s: replica %s still cannot read a key %v after PostgreSQL accepted connections again", mode, r.name, took)
			}
		}
		rf.recovery = time.Since(accepting)
		rf.staleHits = metricSum(t, reps, "odin_keystore_lookups_total", map[string]string{"tier": "stale"}) - stale0
		rf.errorQueries = metricSum(t, reps, "odin_keystore_store_queries_total", map[string]string{"result": "error"}) - err0
		ph.set("after_" + mode)
		time.Sleep(after)
	}
	samples := run.finish()
	elapsed := run.elapsed

	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	if other := only(counts(samples, ofClass("cached")), "200"); len(other) > 0 {
		t.Errorf("cached keys: want every answer 200, got also %v (by phase: %s)", other, phaseCounts(samples, "cached", ph))
	}
	if c := counts(samples, ofClass("uncached")); c["401"] > 0 {
		t.Errorf("keys PostgreSQL has answered 401 %d times: an unreadable key is 503, never unknown (by phase: %s)", c["401"], phaseCounts(samples, "uncached", ph))
	}
	if c := counts(samples, ofClass("unknown")); c["200"] > 0 {
		t.Errorf("unknown keys allowed %d times", c["200"])
	}
	for i, mode := range modes {
		for class, want := range map[string]string{"uncached": "503", "unknown": "503"} {
			c := counts(samples, both(ofClass(class), within(mode)))
			if c[want] == 0 || len(only(c, want)) > 0 {
				t.Errorf("%s keys while PostgreSQL is down (%s): %v, want only %s", class, mode, c, want)
			}
		}
		if figs[i].staleHits == 0 {
			t.Errorf("%s: no cached key was answered past its TTL (stale-if-error) during a %v outage with a %v TTL", mode, outage, cacheTTL)
		}
		if !figs[i].readyDuring {
			t.Errorf("%s: a replica with a warm LRU reported not ready while PostgreSQL was down", mode)
		}
	}
	// Once PostgreSQL is back: 200 and 401, bar 503s the store timeout
	// explains (a freshly started PostgreSQL on a starved machine).
	afterOver := checkAnswered(t, samples, []string{"after_stop", "after_kill"},
		map[string]string{"uncached": "200", "unknown": "401"}, storeTimeout)
	bound := storeTimeout + slack
	_, _, maxLat := quantiles(samples, nil)
	if maxLat > bound {
		t.Errorf("slowest check took %v: more than the store timeout %v (+%v slack)", maxLat, storeTimeout, slack)
	}
	overTimeout := map[string]int{} // by phase and class
	for _, s := range samples {
		if s.latency > storeTimeout {
			overTimeout[s.phase+"/"+s.class]++
		}
	}

	// Usage counted while PostgreSQL was down was kept and written once it
	// was back: stopping the replicas flushes what is left.
	for _, r := range reps {
		r.stop()
	}
	acked := int64(counts(samples, nil)["200"]) + allowed.Load()
	recorded := totalUsage(t, store.Pool())
	if recorded < acked {
		t.Errorf("key usage: %d checks allowed, %d recorded in PostgreSQL: %d uses lost", acked, recorded, acked-recorded)
	}

	f := loadFigures("postgres_outage", samples, elapsed, workers)
	f.add("replicas", len(reps))
	f.add("elapsed", elapsed)
	f.add("store_timeout", storeTimeout)
	f.add("cache_ttl", cacheTTL)
	for i, mode := range modes {
		rf := figs[i]
		f.add(mode+"_pg_stop_took", rf.stopTook)
		f.add(mode+"_pg_down", rf.down)
		f.add(mode+"_outcomes_cached", counts(samples, both(ofClass("cached"), inPhase(mode))))
		f.add(mode+"_outcomes_uncached", counts(samples, both(ofClass("uncached"), inPhase(mode))))
		f.add(mode+"_outcomes_unknown", counts(samples, both(ofClass("unknown"), inPhase(mode))))
		p50, p99, mx := quantiles(samples, inPhase(mode))
		f.add(mode+"_p50", p50)
		f.add(mode+"_p99", p99)
		f.add(mode+"_max", mx)
		_, up99, umx := quantiles(samples, both(ofClass("uncached"), inPhase(mode)))
		f.add(mode+"_uncached_p99", up99)
		f.add(mode+"_uncached_max", umx)
		f.add(mode+"_stale_answers", int(rf.staleHits))
		f.add(mode+"_pg_error_queries", int(rf.errorQueries))
		f.add(mode+"_pg_start_took", rf.startTook)
		f.add(mode+"_recovery_after_accepting", rf.recovery)
		f.add(mode+"_recovering_outcomes_uncached", counts(samples, both(ofClass("uncached"), inPhase("recovering_"+mode))))
		f.add(mode+"_after_outcomes_uncached", counts(samples, both(ofClass("uncached"), inPhase("after_"+mode))))
		f.add(mode+"_after_outcomes_unknown", counts(samples, both(ofClass("unknown"), inPhase("after_"+mode))))
	}
	f.add("after_over_store_timeout_503", afterOver)
	f.add("max_latency", maxLat)
	f.add("over_store_timeout", overTimeout)
	f.add("usage_acked", int(acked))
	f.add("usage_recorded", int(recorded))
	f.add("transport_errors", len(transportErrors(samples)))
	f.report(t)
}

// phaseCounts renders a class's outcomes per phase, for failure messages.
func phaseCounts(samples []sample, class string, ph *phases) string {
	ph.mu.Lock()
	names := make([]string, 0, len(ph.at))
	for _, m := range ph.at {
		names = append(names, m.name)
	}
	ph.mu.Unlock()
	out := ""
	for _, p := range names {
		out += p + "=" + fmtCounts(counts(samples, both(ofClass(class), inPhase(p)))) + " "
	}
	return out
}

// metricSum sums a counter over the replicas.
func metricSum(t *testing.T, reps []*replica, name string, labels map[string]string) float64 {
	var n float64
	for _, r := range reps {
		n += r.metric(t, name, labels)
	}
	return n
}

// keyUsage is what PostgreSQL recorded of one key's use.
type keyUsage struct {
	count    int64
	lastUsed time.Time // zero: never
}

// usageByKey reads every key's recorded uses (key_usage_hourly, summed over
// hours) and last_used_at.
func usageByKey(t *testing.T, pool *pgxpool.Pool) map[string]keyUsage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `
		SELECT k.id, COALESCE(SUM(u.count), 0)::bigint, k.last_used_at
		FROM api_keys k LEFT JOIN key_usage_hourly u ON u.key_id = k.id
		GROUP BY k.id, k.last_used_at`)
	if err != nil {
		t.Fatalf("read key usage: %v", err)
	}
	defer rows.Close()
	out := map[string]keyUsage{}
	for rows.Next() {
		var (
			id   string
			u    keyUsage
			last *time.Time
		)
		if err := rows.Scan(&id, &u.count, &last); err != nil {
			t.Fatalf("read key usage: %v", err)
		}
		if last != nil {
			u.lastUsed = *last
		}
		out[id] = u
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read key usage: %v", err)
	}
	return out
}

func totalUsage(t *testing.T, pool *pgxpool.Pool) int64 {
	var n int64
	for _, u := range usageByKey(t, pool) {
		n += u.count
	}
	return n
}

// describeUsage renders per-key differences, for failure messages.
func describeUsage(want map[string]int64, got map[string]keyUsage) string {
	out := ""
	for id, n := range want {
		if got[id].count != n {
			out += fmt.Sprintf("%s: %d allowed, %d recorded; ", id, n, got[id].count)
		}
	}
	return out
}
