package loadtest

import (
	"bytes"
	"container/list"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
)

// zipfSampler draws ranks 0..n-1 with p_i ∝ (i+1)^-s.
type zipfSampler struct {
	cdf []float64
	rng *rand.Rand
}

func newZipfSampler(n int, s float64, seed uint64) *zipfSampler {
	z := &zipfSampler{cdf: make([]float64, n), rng: rand.New(rand.NewPCG(seed, 1))}
	total := 0.0
	for i := range n {
		total += math.Pow(float64(i+1), -s)
		z.cdf[i] = total
	}
	for i := range z.cdf {
		z.cdf[i] /= total
	}
	return z
}

func (z *zipfSampler) next() int {
	return min(sort.SearchFloat64s(z.cdf, z.rng.Float64()), len(z.cdf)-1)
}

// simulateLRU returns the hit ratio of an LRU of capacity c over the
// requests, after a warm-up of the first quarter.
func simulateLRU(z *zipfSampler, c, requests int) float64 {
	order := list.New()
	where := map[int]*list.Element{}
	hits, counted := 0, 0
	for r := range requests {
		k := z.next()
		e, ok := where[k]
		if ok {
			order.MoveToFront(e)
		} else {
			where[k] = order.PushFront(k)
			if order.Len() > c {
				last := order.Back()
				order.Remove(last)
				delete(where, last.Value.(int))
			}
		}
		if r >= requests/4 {
			counted++
			if ok {
				hits++
			}
		}
	}
	return float64(hits) / float64(counted)
}

// cheHitRatio is the model's hit ratio of an LRU of capacity c over n
// Zipf(s) keys (no TTL): one request per time unit.
func cheHitRatio(n, s, c float64) float64 {
	bs := zipfBuckets(n, s)
	tc := cheTime(bs, 1, 0, c)
	var miss float64
	for _, b := range bs {
		miss += b.count * lruMissRate(b.mass/b.count, tc, math.Inf(1), 1)
	}
	return 1 - miss
}

// TestCheMatchesASimulatedLRU checks Che's approximation, as the model
// computes it (including the logarithmic buckets past rank 1,024), against
// a brute-force LRU fed Zipf requests.
func TestCheMatchesASimulatedLRU(t *testing.T) {
	for _, tc := range []struct {
		n, c int
		s    float64
	}{{2000, 100, 0.8}, {5000, 500, 1.0}, {5000, 250, 0.6}} {
		sim := simulateLRU(newZipfSampler(tc.n, tc.s, 7), tc.c, 400_000)
		model := cheHitRatio(float64(tc.n), tc.s, float64(tc.c))
		if math.Abs(sim-model) > 0.015 {
			t.Errorf("n=%d c=%d s=%v: simulated hit ratio %.4f, Che %.4f", tc.n, tc.c, tc.s, sim, model)
		}
		t.Logf("n=%d c=%d s=%v: simulated %.4f, Che %.4f", tc.n, tc.c, tc.s, sim, model)
	}
}

// TestTTLMissRateMatchesASimulation checks the TTL bound: one key
// requested at Λ on the cluster, spread at random over n replicas, whose
// entries expire together ttl after the cluster read the key.
func TestTTLMissRateMatchesASimulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		rate, ttl float64
		n         int
	}{{0.1, 30, 1}, {1, 30, 4}, {0.2, 30, 10}, {5, 30, 50}} {
		expiry := -1.0 // the cluster record's expiry; < now: expired
		valid := make([]float64, tc.n)
		now, misses, reqs := 0.0, 0, 0
		for now < 200_000/tc.rate {
			now += rng.ExpFloat64() / tc.rate
			r := rng.IntN(tc.n)
			reqs++
			if now < valid[r] {
				continue
			}
			misses++
			if now >= expiry { // Redis missed too: PostgreSQL, a new record
				expiry = now + tc.ttl
			}
			valid[r] = expiry
		}
		got := float64(misses) / now / float64(tc.n)
		want := lruMissRate(tc.rate/float64(tc.n), math.Inf(1), tc.ttl, tc.n)
		if math.Abs(got-want) > 0.03*want {
			t.Errorf("Λ=%v ttl=%v n=%d: simulated %.5f misses/s per replica, model %.5f", tc.rate, tc.ttl, tc.n, got, want)
		}
	}
}

func TestZipfBucketsAreANormalisedZipf(t *testing.T) {
	bs := zipfBuckets(10_000_000, 1)
	var total, count float64
	for _, b := range bs {
		total += b.mass
		count += b.count
	}
	if math.Abs(total-1) > 1e-9 || count != 10_000_000 || len(bs) > 3000 {
		t.Fatalf("%d buckets, %v keys, mass %v", len(bs), count, total)
	}
	// H(10^7) = ln(10^7) + γ + 1/(2·10^7) − …: rank 1's probability.
	h := math.Log(1e7) + 0.5772156649 + 0.5e-7
	if got := bs[0].mass; math.Abs(got*h-1) > 1e-6 {
		t.Errorf("p(1) = %v, want %v", got, 1/h)
	}
}

func testInputs() CapacityInputs {
	in := DefaultCapacityInputs()
	for _, f := range in.Fields() {
		if f.Measured {
			*f.Ptr = 50
		}
	}
	in.KeyRedisUS, in.KeyStoreUS, in.SessionFirstUS, in.RedisRoundTripUS = 150, 400, 500, 60
	in.BaseRSS, in.KeyEntryBytes, in.SessionEntryBytes = 30<<20, 4000, 4000
	return in
}

// TestPlanIsTheLeastFixedPoint: the plan's replicas carry their own load,
// and one replica fewer would not.
func TestPlanIsTheLeastFixedPoint(t *testing.T) {
	in := testInputs()
	m := newCapModel(&in)
	capPer := in.CoresPerReplica * in.TargetUtil
	for _, rate := range []float64{1_000, 100_000, 1_000_000} {
		p, err := m.plan(rate, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.evaluate(rate, p.Replicas, 0).OdinCores; got > capPer*float64(p.Replicas)+1e-9 {
			t.Errorf("rate %v: %d replicas need %.2f cores, more than %.2f", rate, p.Replicas, got, capPer*float64(p.Replicas))
		}
		if p.Replicas > 1 {
			if got := m.evaluate(rate, p.Replicas-1, 0).OdinCores; got <= capPer*float64(p.Replicas-1) {
				t.Errorf("rate %v: %d replicas would do (%.2f cores), the plan says %d", rate, p.Replicas-1, got, p.Replicas)
			}
		}
		// The fixed point is not the trivial one: the hit ratio depends on
		// the replicas.
		if one := m.evaluate(rate, 1, 0); p.Replicas > 1 && one.KeyLRUHit <= p.KeyLRUHit {
			t.Errorf("rate %v: hit ratio on 1 replica %.4f not above %.4f on %d", rate, one.KeyLRUHit, p.KeyLRUHit, p.Replicas)
		}
	}
}

// TestMoreLoadNeverFewerResources: more checks per second never need fewer
// replicas, Redis or PostgreSQL; a larger LRU never lowers the hit ratio.
func TestMoreLoadNeverFewerResources(t *testing.T) {
	in := testInputs()
	m := newCapModel(&in)
	var prev RatePlan
	for i, rate := range []float64{10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000} {
		p, err := m.plan(rate, 0)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && (p.Replicas < prev.Replicas || p.RedisOps < prev.RedisOps || p.PGCores < prev.PGCores) {
			t.Errorf("rate %v: %d replicas, %.0f Redis ops, %.2f PG cores after %d, %.0f, %.2f at %v",
				rate, p.Replicas, p.RedisOps, p.PGCores, prev.Replicas, prev.RedisOps, prev.PGCores, prev.Rate)
		}
		prev = p
	}
	if a, b := m.evaluate(1e6, 100, 0).Replicas, m.evaluate(1e6, 100, 0).Replicas; a != b {
		t.Fatal("evaluate is not deterministic")
	}
	lastHit := 0.0
	for _, size := range []float64{1_000, 10_000, 100_000, 1_000_000} {
		in2 := in
		in2.LRUSize = size
		p := newCapModel(&in2).evaluate(1e6, 100, 0)
		if p.KeyLRUHit < lastHit-1e-12 {
			t.Errorf("LRU %v: hit ratio %.4f below %.4f", size, p.KeyLRUHit, lastHit)
		}
		lastHit = p.KeyLRUHit
	}
}

// TestPlanAccountsForEveryCheck: the paths add up to the rate.
func TestPlanAccountsForEveryCheck(t *testing.T) {
	in := testInputs()
	p, err := newCapModel(&in).plan(100_000, 0)
	if err != nil {
		t.Fatal(err)
	}
	keys := p.KeyLRUHits + p.KeyRedisHits + p.KeyPGQueries
	sessions := p.SessionLRUHits + p.SessionRedisHits + p.FirstSight
	if math.Abs(keys-70_000) > 1e-6*70_000 || math.Abs(sessions-25_000) > 1e-6*25_000 || p.InvalidChecks != 5_000 {
		t.Errorf("keys %v, sessions %v, invalid %v", keys, sessions, p.InvalidChecks)
	}
	if p.KeyPGQueries <= 0 || p.KeyRedisHits <= 0 || p.KeyLRUHits <= 0 || p.Leases <= 0 || p.UsageRows <= 0 {
		t.Errorf("a path is empty: %+v", p)
	}
	if p.RSSPerReplica != in.BaseRSS+p.LRUEntries*in.KeyEntryBytes+p.SessionLRUEntries*in.SessionEntryBytes {
		t.Errorf("RSS %v", p.RSSPerReplica)
	}
}

// TestInputsFromAReport reads the costs from a report and separates the
// key paths by the tier counters.
func TestInputsFromAReport(t *testing.T) {
	res := func(name string, cpuUS float64, reqs int64, tiers map[string]float64, pgQueries float64) Result {
		r := Result{Scenario: name, Concurrency: 32,
			Odin:     Measurement{Requests: reqs, Seconds: 1, ServerCPUSeconds: cpuUS * float64(reqs) / 1e6, Server: map[string]float64{}},
			Baseline: Measurement{Requests: reqs, Seconds: 1, Store: &StoreCPU{PGMeasured: true, RedisMeasured: true}}}
		for tier, n := range tiers {
			r.Odin.Server[`odin_keystore_lookups_total{tier="`+tier+`"}`] = n
		}
		r.Odin.Store = &StoreCPU{PGMeasured: true, RedisMeasured: true, PGQueries: pgQueries,
			PGCPUSeconds: pgQueries * 100 / 1e6, RedisCPUSeconds: float64(reqs) * 20 / 1e6, RedisCalls: 2 * reqs}
		return r
	}
	// cold-key-redis: 900 PostgreSQL + 100 Redis answers at 500·0.9 + 200·0.1.
	rep := &Report{Results: []Result{
		res("cached-key", 100, 1000, map[string]float64{"lru": 1000}, 0),
		res("redis-key", 200, 1000, map[string]float64{"redis": 1000}, 0),
		res("cold-key-redis", 470, 1000, map[string]float64{"store": 900, "redis": 100}, 900),
		res("cached-session", 110, 1000, nil, 0),
	}, RSS: []RSSResult{{Keys: 1000, RSSBefore: 30 << 20, RSSAfter: 40 << 20, RSSPerKey: 4000, GCAfterWarm: true}}}
	in := DefaultCapacityInputs()
	CapacityInputsFromReports(&in, []NamedReport{{Name: "r.json", Report: rep}}, 0)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6*b }
	if !near(in.KeyLRUUS, 100) || !near(in.KeyRedisUS, 200) || !near(in.KeyStoreUS, 500) {
		t.Errorf("key paths %v / %v / %v, want 100 / 200 / 500", in.KeyLRUUS, in.KeyRedisUS, in.KeyStoreUS)
	}
	if !near(in.RedisRoundTripUS, 100) || !near(in.SessionRedisUS, 210) || !near(in.PGQueryUS, 100) || !near(in.KeyEntryBytes, 4000) {
		t.Errorf("derived %+v", in)
	}
	if !strings.HasPrefix(in.Sources["key-store-us"], "measured: r.json, cold-key-redis c=32") ||
		!strings.HasPrefix(in.Sources["redis-round-trip-us"], "derived:") || !strings.HasPrefix(in.Sources["zipf-s"], "assumed:") {
		t.Errorf("sources %v", in.Sources)
	}
	// Inputs the report lacks are reported missing.
	if err := in.Check(); err == nil || !strings.Contains(err.Error(), "--session-first-us") {
		t.Errorf("Check() = %v, want --session-first-us missing", err)
	}
}

func TestPlanCapacityWritesTheDocument(t *testing.T) {
	in := testInputs()
	plan, err := PlanCapacity(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Plans) != 2 || plan.Plans[1].Replicas <= plan.Plans[0].Replicas {
		t.Fatalf("plans %+v", plan.Plans)
	}
	var md, js bytes.Buffer
	if err := plan.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	if err := plan.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## The plan", "**replicas**", "## Findings", "## Sensitivity", "| lease-batch | 10 | assumed:", "Che"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	if strings.Contains(md.String(), "NaN") || strings.Contains(md.String(), "+Inf") || strings.Contains(js.String(), "NaN") {
		t.Errorf("non-finite figures in the plan")
	}
}
