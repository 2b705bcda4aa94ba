package drills

import (
	"context"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// TestDrillSlowPostgres puts a delaying TCP proxy between a replica and
// PostgreSQL (--store-timeout 200ms) and slows every answer of PostgreSQL
// under load:
//   - by 50 ms: checks that read PostgreSQL (keys no tier has cached, keys
//     that exist nowhere) are slower by at least the delay and still
//     answered (200, 401) within the store timeout;
//   - by 400 ms, twice the store timeout: they get 503 UNAVAILABLE with the
//     error body within the store timeout plus scheduling slack, never hang,
//     and cached keys keep answering 200 at LRU speed;
//   - once the delay is gone the same kinds of keys are answered again
//     without a restart;
//   - a burst of concurrent checks of one uncached key costs exactly one
//     PostgreSQL query (odin_keystore_store_queries_total).
func TestDrillSlowPostgres(t *testing.T) {
	var (
		workers      = 12
		fast         = pick(700*time.Millisecond, 5*time.Second)
		slow         = pick(1500*time.Millisecond, 20*time.Second)
		stuck        = pick(1500*time.Millisecond, 20*time.Second)
		restored     = pick(time.Second, 10*time.Second)
		storeTimeout = 200 * time.Millisecond
		slowDelay    = 50 * time.Millisecond
		stuckDelay   = 400 * time.Millisecond
		slack        = 1500 * time.Millisecond // a loaded 2-core machine under -race
		burst        = 64
		bursts       = 3
		poolSize     = pick(1500, 12000)
	)
	db := testenv.Postgres(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewDelayProxy(t, u.Host)
	u.Host = proxy.Addr()
	viaProxy := u.String()

	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 8})
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	cfg := authzsvc.Config{DatabaseURL: viaProxy, StripCredential: true, RateLimit: generousTiers()}
	cfg.Cache.StoreTimeout = storeTimeout
	r := startReplica(t, "a", cfg)

	created := time.Now()
	cached, _ := createKeys(t, mgr, 32, "cached")
	fresh := createKeysParallel(t, mgr, poolSize, "uncached", 8) // each sent once
	doomed, _ := createKeys(t, mgr, 32, "uncached while stuck")  // never answered: sent again and again
	probes, _ := createKeys(t, mgr, 1, "probe")
	burstKeys, _ := createKeys(t, mgr, bursts, "burst")
	creation := time.Since(created)
	for _, k := range cached {
		if got := checkOnce(t, r, k); got != "200" {
			t.Fatalf("warming the LRU: %s", got)
		}
	}

	// Of every 16 requests: 10 cached keys, 3 uncached keys never sent
	// before (while stuck: the doomed pool, which no answer can cache), 3
	// well-formed keys that exist nowhere, each new.
	var cursor, exhausted atomic.Int64
	ph := newPhases("fast")
	run := load{
		targets: []authv3.AuthorizationClient{r.client}, workers: workers,
		maxDuration: pick(60*time.Second, 5*time.Minute), maxRequests: 5_000_000, timeout: 10 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "api-key", class: "cached", value: cached[int(i)%len(cached)]}
			switch j := i % 16; {
			case j < 10:
			case j < 13:
				if ph.current() == "stuck" {
					req.class, req.value = "uncached", doomed[int(i/16)%len(doomed)]
				} else if n := cursor.Add(1) - 1; n < int64(len(fresh)) {
					req.class, req.value = "uncached", fresh[n]
				} else {
					exhausted.Add(1) // counted as cached: reported, not asserted on
				}
			default:
				k, err := keystore.GenerateKey()
				if err == nil {
					req.class, req.value = "unknown", k
				}
			}
			return req
		},
	}.start()
	defer run.stop()

	time.Sleep(fast)
	// The delay first, then the phase: whatever is sent in a phase meets
	// that phase's delay.
	proxy.SetDelay(slowDelay)
	ph.set("slow")
	time.Sleep(slow)
	proxy.SetDelay(stuckDelay)
	ph.set("stuck")
	qStuck0 := r.metric(t, "odin_keystore_store_queries_total", map[string]string{"result": "error"})
	time.Sleep(stuck)
	stuckErrors := r.metric(t, "odin_keystore_store_queries_total", map[string]string{"result": "error"}) - qStuck0
	proxy.SetDelay(0)
	ph.set("recovering")
	undelayed := time.Now()
	recovery, ok := waitFor(20*time.Second, func() bool { return checkOnce(t, r, probes[0]) == "200" })
	if !ok {
		t.Fatalf("an uncached key is still not answered %v after PostgreSQL is fast again", recovery)
	}
	recovery = time.Since(undelayed)
	// A lookup that began under the delay times out up to a store timeout
	// after it was removed, and its failure re-arms the store backoff
	// (500ms) even after another lookup succeeded: only then is every
	// miss read again. The drill waits that out before asserting.
	if settle := storeTimeout + storeBackoff + 250*time.Millisecond; time.Since(undelayed) < settle {
		time.Sleep(settle - time.Since(undelayed))
	}
	ph.set("restored")
	time.Sleep(restored)
	samples := run.finish()
	elapsed := run.elapsed

	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	if other := only(counts(samples, ofClass("cached")), "200"); len(other) > 0 {
		t.Errorf("cached keys: want every answer 200, got also %v", other)
	}
	bound := storeTimeout + slack
	readsPG := func(s sample) bool { return s.class == "uncached" || s.class == "unknown" }
	// While PostgreSQL answers within the store timeout, checks that read
	// it succeed. A starved machine can still push a lookup past 200ms:
	// such a 503 took the store timeout, or failed fast in the backoff
	// right after one (storeBackoff), and is counted and bounded, not
	// forbidden; any other 503 is a failure.
	answering := []string{"fast", "slow", "restored"}
	overBudget := checkAnswered(t, samples, answering, map[string]string{"uncached": "200", "unknown": "401"}, storeTimeout)
	for _, class := range []string{"uncached", "unknown"} {
		if c := counts(samples, both(ofClass(class), within("stuck"))); c["503"] == 0 || len(only(c, "503")) > 0 {
			t.Errorf("%s keys, PostgreSQL slower than the store timeout: %v, want only 503", class, c)
		}
	}
	// A check that reads PostgreSQL through the delay cannot be answered
	// sooner than the delay.
	minSlow := minLatency(samples, func(s sample) bool { return readsPG(s) && within("slow")(s) && s.outcome != "503" })
	if minSlow < slowDelay {
		t.Errorf("a check that read PostgreSQL was answered in %v while PostgreSQL answered %v late: the delay is not in the path", minSlow, slowDelay)
	}
	_, _, slowMax := quantiles(samples, both(readsPG, within("slow")))
	if slowMax > bound {
		t.Errorf("PostgreSQL %v slower: slowest check that read it took %v, over the store timeout %v (+%v slack)", slowDelay, slowMax, storeTimeout, slack)
	}
	stuckP50, stuckP99, stuckMax := quantiles(samples, both(readsPG, inPhase("stuck")))
	if stuckP99 > bound || stuckMax > bound {
		t.Errorf("PostgreSQL %v slower: 503s took p99 %v, max %v: over the store timeout %v (+%v slack)", stuckDelay, stuckP99, stuckMax, storeTimeout, slack)
	}
	timedOut := 0 // 503s that waited out the store timeout (the others failed fast: backoff)
	for _, s := range samples {
		if s.phase == "stuck" && readsPG(s) && s.latency >= storeTimeout {
			timedOut++
		}
	}
	if timedOut == 0 || stuckErrors == 0 {
		t.Errorf("no check waited for PostgreSQL while it was stuck (%d store errors): the delay is not in the path", int(stuckErrors))
	}
	_, cachedStuckP99, cachedStuckMax := quantiles(samples, both(ofClass("cached"), inPhase("stuck")))

	// Singleflight: N concurrent checks of one uncached key while
	// PostgreSQL is slow cost one query; the checks that came after it
	// answered are LRU hits, the rest waited for that one query.
	proxy.SetDelay(slowDelay)
	var joined []int
	var burstP50, burstMax time.Duration
	for _, key := range burstKeys {
		q0 := r.storeQueries(t)
		lru0 := r.metric(t, "odin_keystore_lookups_total", map[string]string{"tier": "lru"})
		outcomes, lat := concurrentChecks(t, r, key, burst)
		queries := r.storeQueries(t) - q0
		lruHits := r.metric(t, "odin_keystore_lookups_total", map[string]string{"tier": "lru"}) - lru0
		if other := only(outcomes, "200"); len(other) > 0 {
			t.Errorf("burst of %d checks of one uncached key: %v, want only 200", burst, outcomes)
		}
		if queries != 1 {
			t.Errorf("burst of %d concurrent checks of one uncached key: %v PostgreSQL queries, want exactly 1", burst, queries)
		}
		joined = append(joined, burst-1-int(lruHits))
		burstP50, burstMax = max(burstP50, lat[len(lat)/2]), max(burstMax, lat[len(lat)-1])
	}
	if slices.Max(joined) == 0 {
		t.Errorf("no check of a burst waited on another's query (joined %v): the bursts were not concurrent, singleflight untested", joined)
	}
	proxy.SetDelay(0)

	f := loadFigures("slow_postgres", samples, elapsed, workers)
	f.add("elapsed", elapsed)
	f.add("store_timeout", storeTimeout)
	f.add("keys_created", len(fresh)+len(cached)+len(doomed)+len(probes)+len(burstKeys))
	f.add("key_creation", creation)
	f.add("fresh_pool_exhausted", int(exhausted.Load()))
	for _, p := range []string{"fast", "slow"} {
		f.add(p+"_outcomes_uncached", counts(samples, both(ofClass("uncached"), within(p))))
		f.add(p+"_outcomes_unknown", counts(samples, both(ofClass("unknown"), within(p))))
		p50, p99, mx := quantiles(samples, both(readsPG, within(p)))
		f.add(p+"_pg_read_p50", p50)
		f.add(p+"_pg_read_p99", p99)
		f.add(p+"_pg_read_max", mx)
	}
	f.add("over_store_timeout_503", overBudget)
	f.add("slow_delay", slowDelay)
	f.add("slow_pg_read_min", minSlow)
	f.add("slow_boundary_outcomes", counts(samples, both(readsPG, func(s sample) bool { return s.phase == "slow" && s.endPhase != "slow" })))
	f.add("stuck_delay", stuckDelay)
	f.add("stuck_outcomes_uncached", counts(samples, both(ofClass("uncached"), inPhase("stuck"))))
	f.add("stuck_outcomes_unknown", counts(samples, both(ofClass("unknown"), inPhase("stuck"))))
	f.add("stuck_503_p50", stuckP50)
	f.add("stuck_503_p99", stuckP99)
	f.add("stuck_503_max", stuckMax)
	f.add("stuck_503_waited_timeout", timedOut)
	f.add("stuck_pg_error_queries", int(stuckErrors))
	f.add("stuck_outcomes_cached", counts(samples, both(ofClass("cached"), inPhase("stuck"))))
	f.add("stuck_cached_p99", cachedStuckP99)
	f.add("stuck_cached_max", cachedStuckMax)
	f.add("recovery_first_answer", recovery)
	f.add("recovery_last_503", lastAnswered(samples, func(s sample) bool { return readsPG(s) && s.outcome == "503" && s.sent.After(undelayed) }, undelayed))
	f.add("restored_outcomes_uncached", counts(samples, both(ofClass("uncached"), inPhase("restored"))))
	f.add("restored_outcomes_unknown", counts(samples, both(ofClass("unknown"), inPhase("restored"))))
	f.add("burst", burst)
	f.add("burst_pg_queries", "1 each")
	f.add("burst_joined_flight", joined)
	f.add("burst_p50", burstP50)
	f.add("burst_max", burstMax)
	f.add("transport_errors", len(transportErrors(samples)))
	f.report(t)
}

// concurrentChecks sends n checks of one key at once (released together)
// and returns their outcomes and sorted latencies.
func concurrentChecks(t *testing.T, r *replica, key string, n int) (map[string]int, []time.Duration) {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		outs    = map[string]int{}
		lat     []time.Duration
		release = make(chan struct{})
		ready   sync.WaitGroup
	)
	ready.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := envoyRequest("api-key", key, "req-drill-burst")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ready.Done()
			<-release
			start := time.Now()
			resp, err := r.client.Check(ctx, req)
			d := time.Since(start)
			out := outcomeOf(resp, err, "req-drill-burst")
			mu.Lock()
			outs[out]++
			lat = append(lat, d)
			mu.Unlock()
		}()
	}
	ready.Wait()
	close(release)
	wg.Wait()
	slices.Sort(lat)
	return outs, lat
}

// createKeysParallel issues n keys with several writers and returns their
// plaintexts.
func createKeysParallel(t *testing.T, m *keystore.Manager, n int, name string, writers int) []string {
	t.Helper()
	keys := make([]string, n)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Pointer[error]
	)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || fail.Load() != nil {
					return
				}
				plaintext, _, err := m.Create(context.Background(), keystore.Actor{ID: "drill"}, keystore.NewKey{
					Name: name, UserID: "user_drill", Scopes: []string{"scans:read", "scans:write"},
				})
				if err != nil {
					fail.Store(&err)
					return
				}
				keys[i] = plaintext
			}
		}()
	}
	wg.Wait()
	if err := fail.Load(); err != nil {
		t.Fatalf("create keys: %v", *err)
	}
	return keys
}

// checkAnswered checks the phases in which PostgreSQL answers within the
// store timeout: each class gets its wanted answer, except for 503s the
// store timeout explains (overBudget), which are counted and bounded: at
// most half of a class's checks over these phases. A starved machine
// (load average 10+, -race) can push a lookup past a short store timeout
// however fast PostgreSQL is; a 503 that the store timeout does not
// explain, any other answer, or a class never answered as wanted, fails.
// It returns the over-budget 503s by phase/class.
func checkAnswered(t *testing.T, samples []sample, phases []string, want map[string]string, storeTimeout time.Duration) map[string]int {
	t.Helper()
	keep := func(s sample) bool { _, ok := want[s.class]; return ok && slices.Contains(phases, s.phase) }
	overBudget, unexplained := explain503(samples, keep, storeTimeout)
	for class, w := range want {
		total, over := 0, 0
		for _, p := range phases {
			c := counts(samples, both(ofClass(class), within(p)))
			total, over = total+sum(c), over+overBudget[p+"/"+class]
			c["503"] -= overBudget[p+"/"+class]
			if c["503"] == 0 {
				delete(c, "503")
			}
			if c[w] == 0 || len(only(c, w)) > 0 {
				t.Errorf("%s keys, %s: %v besides %d 503s over the store timeout, want only %s", class, p, c, overBudget[p+"/"+class], w)
			}
		}
		if over*2 > total {
			t.Errorf("%s keys: %d of %d checks in %v were 503s over the store timeout: more than half", class, over, total, phases)
		}
	}
	if len(unexplained) > 0 {
		t.Errorf("503s that neither took the store timeout nor followed one: %v", unexplained)
	}
	return overBudget
}

// explain503 sorts the 503s of the matching samples sent and answered in
// one phase: one that took the store timeout, or was answered within the
// store backoff (500ms, plus slack) of such a one, is over budget; the
// others are unexplained. Both are counted by phase/class.
func explain503(samples []sample, keep func(sample) bool, storeTimeout time.Duration) (overBudget, unexplained map[string]int) {
	const window = storeBackoff + 250*time.Millisecond
	var timeouts []time.Time // of any phase: the backoff outlives the phase
	for _, s := range samples {
		if s.outcome == "503" && s.latency >= storeTimeout {
			timeouts = append(timeouts, s.sent.Add(s.latency))
		}
	}
	overBudget, unexplained = map[string]int{}, map[string]int{}
	for _, s := range samples {
		if !keep(s) || s.outcome != "503" || s.phase != s.endPhase {
			continue
		}
		answered := s.sent.Add(s.latency)
		explained := s.latency >= storeTimeout
		for _, to := range timeouts {
			if !explained && answered.After(to.Add(-window)) && answered.Before(to.Add(window)) {
				explained = true
			}
		}
		if explained {
			overBudget[s.phase+"/"+s.class]++
		} else {
			unexplained[s.phase+"/"+s.class]++
		}
	}
	return overBudget, unexplained
}

// storeBackoff is how long a replica's cache fails misses fast after a
// PostgreSQL lookup failed (keystore's storeBackoff).
const storeBackoff = 500 * time.Millisecond

// lastAnswered is when the last matching sample was answered, after from
// (0 if none).
func lastAnswered(samples []sample, keep func(sample) bool, from time.Time) time.Duration {
	var last time.Duration
	for _, s := range samples {
		if keep(s) {
			last = max(last, s.sent.Add(s.latency).Sub(from))
		}
	}
	return last
}

// minLatency is the fastest answer among the matching samples (0 if none).
func minLatency(samples []sample, keep func(sample) bool) time.Duration {
	var m time.Duration
	for _, s := range samples {
		if keep(s) && (m == 0 || s.latency < m) {
			m = s.latency
		}
	}
	return m
}
