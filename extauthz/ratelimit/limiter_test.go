package ratelimit

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// sharedRedis is the test Redis and a key prefix of this test's own.
func sharedRedis(t testing.TB) (redis.UniversalClient, string) {
	t.Helper()
	url, prefix := testenv.Redis(t)
	ro, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(ro)
	t.Cleanup(func() { c.Close() })
	return c, prefix
}

func newLimiter(t testing.TB, c redis.UniversalClient, opts Options) *Limiter {
	t.Helper()
	l, err := New(c, opts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func value(c prometheus.Counter) int {
	var m dto.Metric
	_ = c.Write(&m)
	return int(m.GetCounter().GetValue())
}

// slowTier refills one token per 10 seconds, so a test's burst sees no refill.
var slowTier = map[string]Tier{"slow": {Rate: 0.1, Burst: 20}}

// TestBurstSingleReplica fires 30 requests at a tier of burst 20: exactly
// the first 20 pass (refill is 1 token per 10s, and a lease needs 3), with
// headers counting down, and the refusals are decided without Redis.
func TestBurstSingleReplica(t *testing.T) {
	c, prefix := sharedRedis(t)
	l := newLimiter(t, c, Options{Tiers: slowTier, DefaultTier: "slow", Prefix: prefix, LeaseFraction: 0.25, LeaseTTL: time.Hour})
	if _, _, batch := l.Limits("slow"); batch != 5 {
		t.Fatalf("batch = %d, want 5", batch)
	}
	ctx := context.Background()
	var allowed int
	prev := 20
	for i := range 30 {
		r := l.Allow(ctx, "key-1", "slow", time.Now())
		if r.Limit != 20 {
			t.Errorf("request %d: Limit = %d, want 20", i, r.Limit)
		}
		if r.Unavailable {
			t.Fatalf("request %d: Unavailable", i)
		}
		if r.Allowed {
			allowed++
			if i >= 20 {
				t.Errorf("request %d allowed, past the burst", i)
			}
			if r.Remaining != prev-1 {
				t.Errorf("request %d: Remaining = %d, want %d", i, r.Remaining, prev-1)
			}
			prev = r.Remaining
			// Reset: until the shared bucket is full, counting whole leases.
			if leased := (i/5 + 1) * 5; r.Reset <= time.Duration(leased-1)*10*time.Second || r.Reset > time.Duration(leased)*10*time.Second {
				t.Errorf("request %d: Reset = %v, want about %v", i, r.Reset, time.Duration(leased)*10*time.Second)
			}
			if r.RetryAfter != 0 {
				t.Errorf("request %d: RetryAfter = %v on an allow", i, r.RetryAfter)
			}
			continue
		}
		if i < 20 {
			t.Errorf("request %d refused within the burst", i)
		}
		// The replica asks again when half a batch (3 tokens, 30s) is back.
		if r.RetryAfter <= 20*time.Second || r.RetryAfter > 30*time.Second || r.Remaining != 0 {
			t.Errorf("request %d: RetryAfter = %v, Remaining = %d; want 20s < RetryAfter ≤ 30s, 0", i, r.RetryAfter, r.Remaining)
		}
		if r.Reset < 190*time.Second || r.Reset > 200*time.Second {
			t.Errorf("request %d: Reset = %v, want about 200s", i, r.Reset)
		}
	}
	if allowed != 20 {
		t.Errorf("allowed %d of 30, want 20", allowed)
	}
	if g, r := value(l.m.redisCalls[callGranted]), value(l.m.redisCalls[callRefused]); g != 4 || r != 1 {
		t.Errorf("redis calls: %d granted, %d refused; want 4 and 1 (refusals are then local)", g, r)
	}
}

func TestKeysDoNotShareBudget(t *testing.T) {
	c, prefix := sharedRedis(t)
	l := newLimiter(t, c, Options{Tiers: slowTier, DefaultTier: "slow", Prefix: prefix})
	ctx := context.Background()
	for range 20 {
		l.Allow(ctx, "a", "slow", time.Now())
	}
	if r := l.Allow(ctx, "a", "slow", time.Now()); r.Allowed {
		t.Fatal("key a: allowed past its burst")
	}
	r := l.Allow(ctx, "b", "slow", time.Now())
	if !r.Allowed || r.Remaining != 19 {
		t.Errorf("key b after a spent its budget: %+v, want allowed with 19 remaining", r)
	}
	// Another replica (same Redis, same prefix) sees a's budget spent too.
	other := newLimiter(t, c, Options{Tiers: slowTier, DefaultTier: "slow", Prefix: prefix})
	if r := other.Allow(ctx, "a", "slow", time.Now()); r.Allowed {
		t.Error("key a allowed by a second replica")
	}
}

func TestUnknownTierUsesDefault(t *testing.T) {
	c, prefix := sharedRedis(t)
	tiers := map[string]Tier{"basic": {Rate: 0.1, Burst: 3}}
	l := newLimiter(t, c, Options{Tiers: tiers, DefaultTier: "basic", Prefix: prefix})
	ctx := context.Background()
	for _, tier := range []string{"platinum", ""} {
		key := "k-" + tier
		allowed := 0
		for range 5 {
			r := l.Allow(ctx, key, tier, time.Now())
			if r.Limit != 3 {
				t.Errorf("tier %q: Limit = %d, want the default tier's 3", tier, r.Limit)
			}
			if r.Allowed {
				allowed++
			}
		}
		if allowed != 3 {
			t.Errorf("tier %q: allowed %d of 5, want 3", tier, allowed)
		}
	}
	if r := l.Allow(ctx, "k-pro", "pro", time.Now()); r.Limit != 200 {
		t.Errorf("known tier pro: Limit = %d, want 200", r.Limit)
	}
}

// drive sends demand requests per second for d in total, spread over the
// limiters (two goroutines each, paced on a schedule that catches up when
// the machine is slow), and returns how many were allowed and when each
// request was made.
func drive(limiters []*Limiter, key, tier string, demand float64, d time.Duration) (allowed int, sent []time.Time) {
	var nAllowed atomic.Int64
	workers := 2 * len(limiters)
	period := time.Duration(float64(time.Second) * float64(workers) / demand)
	times := make([][]time.Time, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		l := limiters[w%len(limiters)]
		wg.Go(func() {
			ctx := context.Background()
			// Stagger the workers over one period.
			next := start.Add(period * time.Duration(w) / time.Duration(workers))
			for next.Sub(start) < d {
				time.Sleep(time.Until(next))
				now := time.Now()
				times[w] = append(times[w], now)
				if l.Allow(ctx, key, tier, now).Allowed {
					nAllowed.Add(1)
				}
				next = next.Add(period)
			}
		})
	}
	wg.Wait()
	for _, ts := range times {
		sent = append(sent, ts...)
	}
	return int(nAllowed.Load()), sent
}

// idealGCRA is how many of the requests made at times an exact,
// single-process GCRA allows: the reference when the machine is so loaded
// that requests did not arrive on schedule.
func idealGCRA(tier Tier, times []time.Time) int {
	times = slices.Clone(times)
	slices.SortFunc(times, time.Time.Compare)
	interval := time.Duration(float64(time.Second) / tier.Rate)
	capacity := time.Duration(tier.Burst) * interval
	var tat time.Time
	allowed := 0
	for _, t := range times {
		next := tat
		if next.Before(t) {
			next = t
		}
		next = next.Add(interval)
		if next.Sub(t) <= capacity {
			tat = next
			allowed++
		}
	}
	return allowed
}

// counts sums the limiters' Redis calls, and describes them and the
// decisions by path, for the test log.
func counts(ls []*Limiter) (calls int, desc string) {
	var byCall [numCalls]int
	var byPath [numResults][numPaths]int
	for _, l := range ls {
		for c := range numCalls {
			byCall[c] += value(l.m.redisCalls[c])
		}
		for r := range numResults {
			for p := range numPaths {
				byPath[r][p] += int(l.keys.decisions(r, p))
			}
		}
	}
	for c, n := range byCall {
		calls += n
		desc += fmt.Sprintf(" redis %s=%d", callNames[c], n)
	}
	for r := range numResults {
		for p := range numPaths {
			if n := byPath[r][p]; n > 0 {
				desc += fmt.Sprintf(" %s/%s=%d", resultNames[r], pathNames[p], n)
			}
		}
	}
	return calls, desc
}

// accuracy drives replicas at twice a 200/s tier (burst 400, batches of
// 20) for 3 seconds and checks the total allowed is within 10% of what an
// exact GCRA allows for the same requests: burst + rate × 3s = 1000 when
// they arrive on schedule. The expected error is below 5% (unspent batches
// at the end, up to one per replica, and the last refusal's wait). When
// the machine is so loaded that the schedule slipped, the requests came in
// clumps and the reference is the exact GCRA replayed on their times.
// Redis gets a generous timeout: this measures leases, not outages.
func accuracy(t *testing.T, replicas int) {
	c, prefix := sharedRedis(t)
	tier := Tier{Rate: 200, Burst: 400}
	var ls []*Limiter
	for range replicas {
		ls = append(ls, newLimiter(t, c, Options{Tiers: map[string]Tier{"t": tier}, DefaultTier: "t", Prefix: prefix, Timeout: 2 * time.Second}))
	}
	const d = 3 * time.Second
	allowed, sent := drive(ls, "acct-1", "t", 2*tier.Rate, d)
	ideal := idealGCRA(tier, sent)
	nominal := float64(tier.Burst) + tier.Rate*d.Seconds()
	calls, desc := counts(ls)
	t.Logf("%d replicas: allowed %d of %d; exact GCRA on the same requests %d (%+.1f%%), burst+rate×3s %.0f (%+.1f%%);%s",
		replicas, allowed, len(sent), ideal, pct(allowed, float64(ideal)), nominal, pct(allowed, nominal), desc)
	if float64(allowed) < 0.9*float64(ideal) || float64(allowed) > 1.1*float64(ideal) {
		t.Errorf("allowed %d, want %d ±10%% (an exact GCRA on the same requests)", allowed, ideal)
	}
	if on := float64(ideal) / nominal; on > 0.97 && on < 1.03 { // requests came on schedule
		if float64(allowed) < 0.9*nominal || float64(allowed) > 1.1*nominal {
			t.Errorf("allowed %d, want %.0f ±10%% (burst + rate × 3s)", allowed, nominal)
		}
	} else {
		t.Logf("the machine is too loaded for requests to arrive on schedule; compared with the exact GCRA only")
	}
	if calls > len(sent)/3 {
		t.Errorf("%d Redis calls for %d requests: the lease layer is not saving round trips", calls, len(sent))
	}
}

func pct(got int, want float64) float64 { return 100 * (float64(got) - want) / want }

func TestAccuracySingleReplica(t *testing.T)  { accuracy(t, 1) }
func TestAccuracyAcrossReplicas(t *testing.T) { accuracy(t, 3) }

// TestLocalOnly checks the per-replica GCRA used without Redis: the burst,
// then one token per interval.
func TestLocalOnly(t *testing.T) {
	l := newLimiter(t, nil, Options{Tiers: map[string]Tier{"t": {Rate: 10, Burst: 5}}, DefaultTier: "t"})
	ctx := context.Background()
	now := time.Now()
	for i := range 5 {
		r := l.Allow(ctx, "k", "t", now)
		if !r.Allowed || r.Remaining != 4-i || r.Reset != time.Duration(i+1)*100*time.Millisecond {
			t.Fatalf("request %d: %+v, want allowed, Remaining %d, Reset %v", i, r, 4-i, time.Duration(i+1)*100*time.Millisecond)
		}
	}
	r := l.Allow(ctx, "k", "t", now)
	if r.Allowed || r.RetryAfter != 100*time.Millisecond || r.Reset != 500*time.Millisecond {
		t.Fatalf("past the burst: %+v, want refused, RetryAfter 100ms, Reset 500ms", r)
	}
	if r := l.Allow(ctx, "k", "t", now.Add(100*time.Millisecond)); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("one interval later: %+v, want allowed with 0 remaining", r)
	}
	if got := int(l.keys.decisions(resultAllowed, pathLocal)); got != 6 {
		t.Errorf("local allowed counter = %d, want 6", got)
	}
}

// TestCancelledContext: a caller that gave up gets Unavailable, and Redis
// is not blamed for it.
func TestCancelledContext(t *testing.T) {
	c, prefix := sharedRedis(t)
	l := newLimiter(t, c, Options{Prefix: prefix})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := l.Allow(ctx, "k", "free", time.Now())
	if r.Allowed || !r.Unavailable {
		t.Errorf("cancelled: %+v, want refused as unavailable", r)
	}
	if l.downUntil.Load() != 0 || value(l.m.redisCalls[callError]) != 0 {
		t.Error("a cancelled caller was counted as a Redis failure")
	}
	if r := l.Allow(context.Background(), "k", "free", time.Now()); !r.Allowed {
		t.Errorf("next request: %+v, want allowed", r)
	}
}

// TestEviction: the table stays bounded, and keys holding state (here a
// spent in-process budget) outlive idle ones.
func TestEviction(t *testing.T) {
	l := newLimiter(t, nil, Options{Tiers: map[string]Tier{"t": {Rate: 1, Burst: 1}}, DefaultTier: "t", MaxKeys: 3200})
	ctx := context.Background()
	now := time.Now()
	key := func(phase string, i int) string { return fmt.Sprintf("%s-%d", phase, i) }
	// Idle by now: their token came back long ago.
	for i := range 3000 {
		l.Allow(ctx, key("old", i), "t", now.Add(-time.Minute))
	}
	if r := l.Allow(ctx, "busy", "t", now); !r.Allowed {
		t.Fatal("busy: first request refused")
	}
	// New keys fill the shards: idle ones must go first.
	for i := range 1000 {
		l.Allow(ctx, key("new", i), "t", now)
	}
	if n := l.keys.len(); n > 3200 {
		t.Errorf("%d keys tracked, MaxKeys 3200", n)
	}
	if r := l.Allow(ctx, "busy", "t", now); r.Allowed {
		t.Error("busy was evicted: its spent budget was forgotten")
	}
	// Only busy keys: the table still stays bounded.
	for i := range 5000 {
		l.Allow(ctx, key("flood", i), "t", now)
		if n := l.keys.len(); n > 3200 {
			t.Fatalf("%d keys tracked, MaxKeys 3200", n)
		}
	}
}

// gateHook holds the first EVALSHA until release is closed, counts the
// round trips (a command, or a pipeline), and can flush Redis' scripts
// just before the first pipeline is sent (flush: another client).
type gateHook struct {
	release   chan struct{}
	held      atomic.Bool
	trips     atomic.Int64
	pipelines atomic.Int64
	flush     redis.UniversalClient
	pipeFlush atomic.Bool
	piped     atomic.Int64 // commands sent in pipelines
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isScript(cmd) { // a connection's handshake, say
			return next(ctx, cmd)
		}
		h.trips.Add(1)
		if cmd.Name() == "evalsha" && h.held.CompareAndSwap(false, true) {
			<-h.release
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || !isScript(cmds[0]) {
			return next(ctx, cmds)
		}
		h.trips.Add(1)
		h.pipelines.Add(1)
		h.piped.Add(int64(len(cmds)))
		if h.flush != nil && h.pipeFlush.CompareAndSwap(false, true) {
			if err := h.flush.ScriptFlush(ctx).Err(); err != nil {
				return err
			}
		}
		return next(ctx, cmds)
	}
}

func isScript(cmd redis.Cmder) bool { return cmd.Name() == "evalsha" || cmd.Name() == "eval" }

// TestLeasesShareRoundTrips: leases of different keys wanted while one is
// in flight go together in one pipeline, each answered as if alone; a
// NOSCRIPT answer in that pipeline (Redis lost its scripts) falls back to
// EVAL for those leases.
func TestLeasesShareRoundTrips(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprintf("scripts_flushed=%v", flush), func(t *testing.T) {
			c, prefix := sharedRedis(t)
			h := &gateHook{release: make(chan struct{})}
			if flush {
				other, _ := sharedRedis(t)
				h.flush = other
			}
			c.AddHook(h)
			l := newLimiter(t, c, Options{Tiers: slowTier, DefaultTier: "slow", Prefix: prefix, LeaseFraction: 0.25, LeaseTTL: time.Hour})
			const n = 40
			results := make([]Result, n)
			var wg sync.WaitGroup
			wg.Go(func() { results[0] = l.Allow(context.Background(), "key-0", "slow", time.Now()) })
			for !h.held.Load() { // the first lease is in flight, held
				time.Sleep(time.Millisecond)
			}
			for i := 1; i < n; i++ {
				wg.Go(func() { results[i] = l.Allow(context.Background(), fmt.Sprintf("key-%d", i), "slow", time.Now()) })
			}
			for l.batcher.Queued() != n-1 {
				time.Sleep(time.Millisecond)
			}
			close(h.release)
			wg.Wait()
			for i, r := range results {
				if !r.Allowed || r.Remaining != 19 || r.Limit != 20 {
					t.Errorf("key-%d: %+v, want allowed with 19 remaining", i, r)
				}
			}
			if got := h.pipelines.Load(); got != 1 {
				t.Errorf("%d pipelines, want 1 (the %d leases queued behind the first)", got, n-1)
			}
			if got := h.piped.Load(); got != n-1 {
				t.Errorf("%d commands in pipelines, want %d", got, n-1)
			}
			if !flush {
				if got := h.trips.Load(); got != 2 {
					t.Errorf("%d round trips for %d leases, want 2", got, n)
				}
			}
			// Each key's lease was taken once: the next 4 requests of each are
			// answered from it, without Redis.
			before := h.trips.Load()
			for i := range n {
				for range 4 {
					if r := l.Allow(context.Background(), fmt.Sprintf("key-%d", i), "slow", time.Now()); !r.Allowed {
						t.Fatalf("key-%d refused within its lease", i)
					}
				}
			}
			if got := h.trips.Load() - before; got != 0 {
				t.Errorf("%d round trips within the leases, want 0", got)
			}
		})
	}
}

// AllowOwn applies the given limit instead of a tier's: its burst is the
// Limit, and the same limit is prepared once.
func TestAllowOwn(t *testing.T) {
	l, err := New(nil, Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	own := Tier{Rate: 0.001, Burst: 3}
	for i := range 3 {
		if r := l.AllowOwn(t.Context(), "key_1#own", own, now); !r.Allowed || r.Limit != 3 {
			t.Fatalf("request %d: %+v", i+1, r)
		}
	}
	if r := l.AllowOwn(t.Context(), "key_1#own", own, now); r.Allowed || r.Limit != 3 || r.RetryAfter <= 0 {
		t.Errorf("fourth request: %+v, want refused", r)
	}
	if l.ownLimits(own) != l.ownLimits(Tier{Rate: 0.001, Burst: 3}) {
		t.Error("the same limit prepared twice")
	}
	if got := l.ownLimits(Tier{Rate: -1, Burst: 3}); got != l.fallback {
		t.Error("an invalid limit does not get the default tier's")
	}
	if a := testing.AllocsPerRun(100, func() { l.AllowOwn(t.Context(), "key_2#own", Tier{Rate: 1e5, Burst: 1e5}, now) }); a != 0 {
		t.Errorf("AllowOwn allocates %v times per call", a)
	}
}
