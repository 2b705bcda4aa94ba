package loadtest

import (
	"fmt"
	"math"
	"time"
)

// The capacity model (`odin-load capacity`, docs/CAPACITY.md): what it
// takes to serve a target rate of checks over a population of API keys,
// from the per-path costs odin-load measured. Everything is a rate per
// second; CPU is in µs per event and in cores (CPU seconds per second).

// zipfBucket is a run of popularity ranks treated alike: count keys, each
// with probability mass/count.
type zipfBucket struct{ count, mass float64 }

// zipfExact is how many of the most popular ranks get a bucket each.
const zipfExact = 1024

// zipfBuckets splits n ranks with Zipf(s) popularity (p_i ∝ i^-s) into
// buckets: the first 1,024 ranks one each, then logarithmic buckets at
// most 1% wide. A bucket's mass is the midpoint-rule integral of x^-s over
// it (relative error below 1e-6 there); within a bucket the per-key rate
// varies by at most ~1%·s, which moves a hit ratio by far less than the
// model's other assumptions. About 2,000 buckets for 10M keys.
func zipfBuckets(n, s float64) []zipfBucket {
	var out []zipfBucket
	total := 0.0
	i := 1.0
	for ; i <= min(n, zipfExact); i++ {
		m := math.Pow(i, -s)
		out = append(out, zipfBucket{1, m})
		total += m
	}
	for i <= n {
		j := min(math.Floor(i*1.01), n)
		m := powIntegral(i-0.5, j+0.5, s)
		out = append(out, zipfBucket{j - i + 1, m})
		total += m
		i = j + 1
	}
	for k := range out {
		out[k].mass /= total
	}
	return out
}

// powIntegral is ∫_a^b x^-s dx.
func powIntegral(a, b, s float64) float64 {
	if math.Abs(s-1) < 1e-12 {
		return math.Log(b / a)
	}
	return (math.Pow(b, 1-s) - math.Pow(a, 1-s)) / (1 - s)
}

// cheTime solves Che's approximation for an LRU of capacity c under
// independent requests: the characteristic time T with
// Σ_b count_b·(1 − exp(−λ_b·T)) + u·T = c, where λ_b is a key's request
// rate in bucket b (rate × mass_b / count_b) and u a rate of one-shot keys
// (each occupies T). +Inf when everything fits.
func cheTime(bs []zipfBucket, rate, u, c float64) float64 {
	return solveOccupancy(func(t float64) float64 {
		o := u * t
		for _, b := range bs {
			o += b.count * -math.Expm1(-rate*b.mass/b.count*t)
		}
		return o
	}, c)
}

// solveOccupancy finds the T at which the non-decreasing occupancy occ(T)
// reaches c, by bisection; +Inf when it never does.
func solveOccupancy(occ func(float64) float64, c float64) float64 {
	hi := 1.0
	for occ(hi) < c {
		if hi *= 2; hi > 1e12 {
			return math.Inf(1)
		}
	}
	lo := 0.0
	for range 200 {
		mid := (lo + hi) / 2
		if occ(mid) < c {
			lo = mid
		} else {
			hi = mid
		}
		if hi-lo <= 1e-9*hi {
			break
		}
	}
	return (lo + hi) / 2
}

// lruMissRate is one key's miss rate in one of n replicas' LRU: requests
// at λ per second on this replica (n·λ on the cluster), characteristic
// time tc, records that expire ttl after the cluster read them from
// PostgreSQL (ttl ≤ 0 or +Inf: never). It is the larger of
//   - the LRU's miss rate λ·exp(−λ·tc) (Che), and
//   - the TTL's: an entry filled from Redis keeps the Redis record's
//     expiry, so every replica's entry for a key expires at once, once per
//     cluster cycle of ttl + 1/(n·λ) (the wait for the next request after
//     it); the replica misses in a cycle if it took the request that began
//     it (1/n) or gets one within ttl. With n = 1 this is λ/(1+λ·ttl).
//
// The combined cache misses at least as often as either alone.
func lruMissRate(lambda, tc, ttl float64, n int) float64 {
	m := lambda * math.Exp(-lambda*tc)
	if ttl > 0 && !math.IsInf(ttl, 1) && lambda > 0 {
		inv := 1 / float64(n)
		p := inv + (1-inv)*-math.Expm1(-lambda*ttl)
		m = max(m, p/(ttl+inv/lambda))
	}
	return m
}

// leaseRate is the rate-limit leases one replica takes for one limit key
// requested at λ: one per batch, or per lease lifetime when the batch is
// not spent in time (then the next request takes a new one).
func leaseRate(lambda, batch, ttl float64) float64 {
	if lambda <= 0 {
		return 0
	}
	return lambda / min(batch, 1+lambda*ttl)
}

// RatePlan is the model's answer for one target rate.
type RatePlan struct {
	Rate       float64 `json:"rate"`
	Replicas   int     `json:"replicas"`
	Cores      float64 `json:"cores"`      // replicas × cores per replica
	OdinCores  float64 `json:"odin_cores"` // busy cores
	Iterations int     `json:"fixed_point_iterations"`
	// ForcedKeyHit, when set, replaced the modelled key LRU hit ratio.
	ForcedKeyHit float64 `json:"forced_key_hit,omitempty"`

	// API keys (per second, cluster-wide).
	KeyChecks    float64 `json:"key_checks"`
	KeyLRUHits   float64 `json:"key_lru_hits"`
	KeyRedisHits float64 `json:"key_redis_hits"`
	KeyPGQueries float64 `json:"key_pg_queries"`
	KeyLRUHit    float64 `json:"key_lru_hit_ratio"`
	// RedisHitOfMisses is the share of LRU misses Redis answered.
	RedisHitOfMisses float64 `json:"redis_hit_of_misses"`
	// TCSeconds is the key LRU's characteristic time; -1: never full.
	TCSeconds  float64 `json:"lru_characteristic_time_s"`
	LRUEntries float64 `json:"lru_entries_per_replica"`

	// Sessions.
	SessionChecks     float64 `json:"session_checks"`
	ActiveSessions    float64 `json:"active_sessions"`
	SessionLRUHits    float64 `json:"session_lru_hits"`
	SessionRedisHits  float64 `json:"session_redis_hits"`
	FirstSight        float64 `json:"first_sight"`
	SessionLRUEntries float64 `json:"session_lru_entries_per_replica"`

	InvalidChecks float64 `json:"invalid_checks"`
	InvalidNew    float64 `json:"invalid_new"`
	Leases        float64 `json:"leases"`
	UsageRows     float64 `json:"usage_rows"`

	// Odin CPU by path, cores.
	OdinByPath map[string]float64 `json:"odin_cores_by_path"`

	// Redis.
	RedisOps       float64            `json:"redis_ops"`
	RedisOpsByKind map[string]float64 `json:"redis_ops_by_kind"`
	RedisCores     float64            `json:"redis_cores"`
	RedisShards    int                `json:"redis_shards"`
	RedisMemory    float64            `json:"redis_memory_bytes"`

	// PostgreSQL.
	PGQueries float64            `json:"pg_queries"` // statements, usage flushes counted once per flush
	PGByKind  map[string]float64 `json:"pg_cores_by_kind"`
	PGCores   float64            `json:"pg_cores"`
	PGServers int                `json:"pg_cores_at_target"` // cores needed at the store utilisation

	// Memory per replica, bytes.
	RSSPerReplica float64 `json:"rss_per_replica_bytes"`

	// Revocation fan-out, per revoke.
	RevokeRedisOps   float64 `json:"revoke_redis_ops"`
	RevokeDeliveries float64 `json:"revoke_deliveries"`
	RevokeOdinUS     float64 `json:"revoke_odin_cpu_us"`
	RevokeLatencyMS  float64 `json:"revoke_latency_ms"`
}

// capModel is the inputs with the key popularity precomputed.
type capModel struct {
	in *CapacityInputs
	bs []zipfBucket
}

func newCapModel(in *CapacityInputs) *capModel {
	return &capModel{in: in, bs: zipfBuckets(math.Max(1, math.Round(in.Keys*in.ActiveFraction)), in.ZipfS)}
}

// evaluate computes the load of rate checks/s on n replicas; forcedHit > 0
// replaces the key LRU hit ratio.
func (m *capModel) evaluate(rate float64, n int, forcedHit float64) RatePlan {
	in := m.in
	N := float64(n)
	p := RatePlan{Rate: rate, Replicas: n, Cores: N * in.CoresPerReplica, ForcedKeyHit: forcedHit,
		OdinByPath: map[string]float64{}, RedisOpsByKind: map[string]float64{}, PGByKind: map[string]float64{}}
	rt := newRouting(in, n)
	k := m.keys(&p, rate, rt, forcedHit)
	p.Leases = k.leases + m.sessions(&p, rate, rt)
	m.revocation(&p, n)
	m.odinCPU(&p, N)
	m.redis(&p, N, k)
	m.postgres(&p, N)
	p.RSSPerReplica = in.BaseRSS + p.LRUEntries*in.KeyEntryBytes + p.SessionLRUEntries*in.SessionEntryBytes
	return p
}

// routing is how a credential's requests reach the replicas. A
// credential's requests go to every replica (random balancing: each sees
// 1/N of its rate) or, with --sticky, all to one replica (each replica
// serves 1/N of the credentials at their full rate).
type routing struct {
	N     float64
	share float64 // the share of the credentials one replica sees
	per   float64 // the share of a credential's rate one replica sees
	reps  int     // the replicas one credential reaches
}

func newRouting(in *CapacityInputs, n int) routing {
	N := float64(n)
	if in.Sticky >= 0.5 {
		return routing{N: N, share: 1 / N, per: 1.0, reps: 1}
	}
	return routing{N: N, share: 1.0, per: 1 / N, reps: n}
}

// keyLoad is what the API-key checks leave for the Redis figures and the
// lease count.
type keyLoad struct {
	misses, leases, redisLive float64
}

// keys fills in the API-key and unknown-key figures of p. Each replica
// gets 1/N of every key's requests.
func (m *capModel) keys(p *RatePlan, rate float64, rt routing, forcedHit float64) keyLoad {
	in, N, share, per, reps := m.in, rt.N, rt.share, rt.per, rt.reps
	keyRate := rate * in.MixKeys
	p.InvalidChecks = rate * in.MixInvalid
	p.InvalidNew = p.InvalidChecks * in.InvalidUnique
	tc := cheTime(m.bs, keyRate*per, p.InvalidNew/(N*share), in.LRUSize/share)
	p.TCSeconds = tc
	if math.IsInf(tc, 1) {
		p.TCSeconds = -1
		var seen float64
		for _, b := range m.bs {
			seen += b.count
		}
		p.LRUEntries = min(in.LRUSize, share*seen)
	} else {
		p.LRUEntries = in.LRUSize
	}
	var misses, pg, leases, usage, redisLive float64
	for _, b := range m.bs {
		lambdaKey := keyRate * b.mass / b.count // one key, cluster-wide
		lam := lambdaKey * per                  // one key, one replica it reaches
		mi := float64(reps) * lruMissRate(lam, tc, in.CacheTTL, reps)
		// Redis entries carry the time they were read from PostgreSQL: the
		// cluster reads a key again at the first miss after it expired.
		q := lambdaKey / (1 + lambdaKey*in.CacheTTL)
		if forcedHit > 0 {
			mi = lambdaKey * (1 - forcedHit)
		}
		misses += b.count * mi
		pg += b.count * min(mi, q)
		leases += b.count * float64(reps) * leaseRate(lam, in.LeaseBatch, in.LeaseTTL)
		usage += share * b.count * -math.Expm1(-lam*in.UsageInterval)
		redisLive += b.count * lambdaKey * in.CacheTTL / (1 + lambdaKey*in.CacheTTL)
	}
	p.KeyChecks = keyRate
	p.KeyLRUHits = keyRate - misses
	p.KeyPGQueries = pg
	p.KeyRedisHits = misses - pg
	if keyRate > 0 {
		p.KeyLRUHit = p.KeyLRUHits / keyRate
	}
	if misses > 0 {
		p.RedisHitOfMisses = p.KeyRedisHits / misses
	}
	p.UsageRows = N * min(usage, in.UsageMax) / in.UsageInterval
	return keyLoad{misses: misses, leases: leases, redisLive: redisLive}
}

// sessions fills in the session figures of p and returns the sessions'
// rate-limit leases: A active sessions, each with one live token at a
// time, checked at SessionRate, uniformly spread over the replicas.
func (m *capModel) sessions(p *RatePlan, rate float64, rt routing) float64 {
	in, N, share, per, reps := m.in, rt.N, rt.share, rt.per, rt.reps
	p.SessionChecks = rate * in.MixSessions
	if p.SessionChecks <= 0 {
		return 0
	}
	p.ActiveSessions = p.SessionChecks / in.SessionRate
	newTokens := in.FirstSightRate
	if newTokens <= 0 {
		newTokens = p.ActiveSessions / in.TokenLifetime
	}
	life := p.ActiveSessions / newTokens
	rho := in.SessionRate * per // one token, one replica it reaches
	tokens := newTokens * share // new tokens reaching one replica
	// A token makes k ~ Poisson(ρ·life) requests on a replica. The
	// first is a miss there (Redis, or the verification); each later
	// one hits if the gap since the previous is under the session
	// LRU's characteristic time T (Che). A token occupies the LRU for
	// min(gap, T) after each request and T after its last: dead
	// tokens stay until evicted.
	seen := -math.Expm1(-rho * life) // P(k ≥ 1)
	later := rho*life - seen         // E[k] − P(k ≥ 1)
	stc := solveOccupancy(func(t float64) float64 {
		return tokens * (later*-math.Expm1(-rho*t)/rho + seen*t)
	}, in.SessionLRUSize)
	missPerRep := tokens * (seen + later*math.Exp(-rho*stc))
	sm := N * missPerRep
	p.FirstSight = min(newTokens, sm)
	p.SessionRedisHits = sm - p.FirstSight
	p.SessionLRUHits = max(p.SessionChecks-sm, 0)
	p.SessionLRUEntries = in.SessionLRUSize
	if math.IsInf(stc, 1) {
		p.SessionLRUEntries = min(in.SessionLRUSize, p.ActiveSessions*share)
	}
	return float64(reps) * p.ActiveSessions * leaseRate(rho, in.LeaseBatch, in.LeaseTTL)
}

// revocation fills in the revocation fan-out of p: one SET, SUBSCRIBE,
// ZRANGEBYSCORE, PUBLISH (to N subscribers), N acknowledgements (each
// delivered to every revoker waiting at the time), UNSUBSCRIBE.
func (m *capModel) revocation(p *RatePlan, n int) {
	in, N := m.in, float64(n)
	h := 0.0
	for k := 1; k <= n; k++ {
		h += 1 / float64(k)
	}
	p.RevokeLatencyMS = min(4*in.RedisRTTMS+in.AckDelayMS*h, (in.FenceAfter+0.5)*1000)
	inflight := max(1, in.Revocations*p.RevokeLatencyMS/1000)
	p.RevokeRedisOps = 5 + N
	p.RevokeDeliveries = N + N*inflight
	p.RevokeOdinUS = N * in.RedisRoundTripUS
}

// odinCPU fills in odin's CPU by path, in cores.
func (m *capModel) odinCPU(p *RatePlan, N float64) {
	in := m.in
	us := 1e-6
	p.OdinByPath["key: LRU hit"] = p.KeyLRUHits * in.KeyLRUUS * us
	p.OdinByPath["key: Redis hit"] = p.KeyRedisHits * in.KeyRedisUS * us
	p.OdinByPath["key: PostgreSQL"] = p.KeyPGQueries * in.KeyStoreUS * us
	p.OdinByPath["session: LRU hit"] = p.SessionLRUHits * in.SessionLRUUS * us
	p.OdinByPath["session: Redis hit"] = p.SessionRedisHits * in.SessionRedisUS * us
	p.OdinByPath["session: first sight (RS256)"] = p.FirstSight * in.SessionFirstUS * us
	p.OdinByPath["unknown key: negative cache"] = (p.InvalidChecks - p.InvalidNew) * in.InvalidUS * us
	p.OdinByPath["unknown key: new (Redis + PostgreSQL)"] = p.InvalidNew * in.KeyStoreUS * us
	p.OdinByPath["rate-limit leases"] = p.Leases * in.RedisRoundTripUS * us
	p.OdinByPath["bus: probes, heartbeats, acks"] = (N*busRoundTrips + in.Revocations*N) * in.RedisRoundTripUS * us
	for _, v := range p.OdinByPath {
		p.OdinCores += v
	}
}

// redis fills in Redis's commands, CPU, shards and memory.
func (m *capModel) redis(p *RatePlan, N float64, k keyLoad) {
	in := m.in
	us := 1e-6
	ops := p.RedisOpsByKind
	ops["key GET after an LRU miss"] = k.misses
	ops["key SET after PostgreSQL"] = p.KeyPGQueries
	ops["session GET after an LRU miss"] = p.SessionRedisHits + p.FirstSight
	ops["session first sight: revoked-session GET, session SET"] = 2 * p.FirstSight
	ops["unknown key: GET, SET"] = 2 * p.InvalidNew
	ops["rate-limit leases (EVALSHA)"] = p.Leases
	ops["bus: probes and heartbeats"] = N * busCommands
	ops["revocations"] = in.Revocations * p.RevokeRedisOps
	for _, v := range ops {
		p.RedisOps += v
	}
	deliveries := N*busDeliveries + in.Revocations*p.RevokeDeliveries
	p.RedisCores = (p.RedisOps*in.RedisOpUS + p.Leases*in.RedisLeaseExtraUS + deliveries*in.RedisDeliveryOps*in.RedisOpUS) * us
	p.RedisShards = int(math.Ceil(p.RedisCores / in.StoreUtil))
	p.RedisShards = max(p.RedisShards, 1)
	p.RedisMemory = k.redisLive*in.RedisKeyBytes + p.ActiveSessions*in.RedisSessionBytes
}

// postgres fills in PostgreSQL's statements and CPU.
func (m *capModel) postgres(p *RatePlan, N float64) {
	in := m.in
	us := 1e-6
	pgq := p.PGByKind
	pgq["key lookups"] = p.KeyPGQueries * in.PGQueryUS * us
	pgq["unknown-key lookups"] = p.InvalidNew * in.PGQueryUS * us
	pgq["usage flushes"] = p.UsageRows * in.PGUsageRowUS * us
	pgq["revoked-session sync"] = N / in.SessionSync * in.PGQueryUS * us
	pgq["revocations"] = in.Revocations * in.RevokePGQueries * in.PGQueryUS * us
	for _, v := range pgq {
		p.PGCores += v
	}
	p.PGQueries = p.KeyPGQueries + p.InvalidNew + 2*N/in.UsageInterval + N/in.SessionSync + in.Revocations*in.RevokePGQueries
	p.PGServers = int(math.Ceil(p.PGCores / in.StoreUtil))
}

// The bus's background per replica, per second (keystore/bus.go: a probe
// PUBLISH to itself and a heartbeat pipeline of ZADD + ZREMRANGEBYSCORE
// every 200 ms).
const (
	busRoundTrips = 10 // 5 probe publishes + 5 heartbeat pipelines
	busCommands   = 15
	busDeliveries = 5
)

// plan finds the fewest replicas that carry rate at the target
// utilisation: n = ceil(odin cores(n) / (cores × util)). The load grows
// with n (each replica sees fewer requests per key, so TTL refreshes,
// first sights, leases and usage rows grow), so iterating from n = 1 rises
// to the least fixed point.
func (m *capModel) plan(rate, forcedHit float64) (RatePlan, error) {
	capPer := m.in.CoresPerReplica * m.in.TargetUtil
	n := 1
	for it := 1; it <= 10_000; it++ {
		p := m.evaluate(rate, n, forcedHit)
		need := max(int(math.Ceil(p.OdinCores/capPer-1e-9)), 1)
		if need <= n {
			p.Iterations = it
			return p, nil
		}
		n = need
	}
	return RatePlan{}, fmt.Errorf("rate %.0f: no fixed point within 10,000 iterations", rate)
}

// CapacityPlan is the output of odin-load capacity.
type CapacityPlan struct {
	Generated   time.Time      `json:"generated"`
	Reports     []string       `json:"reports"`
	Command     string         `json:"command"`
	RunCommands []string       `json:"run_commands,omitempty"`
	Machine     []string       `json:"machines"`
	Inputs      CapacityInputs `json:"inputs"`
	Notes       []string       `json:"notes,omitempty"`
	Plans       []RatePlan     `json:"plans"`
	Sensitivity []Sensitivity  `json:"sensitivity"`
}

// Sensitivity is the plan for every rate with one input varied.
type Sensitivity struct {
	Input  string       `json:"input"`
	Label  string       `json:"label"`
	Values []float64    `json:"values"`
	Plans  [][]RatePlan `json:"plans"` // [value][rate]
}

// PlanCapacity runs the model for every target rate and the sensitivity
// sweeps.
func PlanCapacity(in CapacityInputs) (*CapacityPlan, error) {
	if err := in.Check(); err != nil {
		return nil, err
	}
	out := &CapacityPlan{Generated: time.Now().UTC(), Inputs: in}
	m := newCapModel(&in)
	for _, r := range in.Rates {
		p, err := m.plan(r, 0)
		if err != nil {
			return nil, err
		}
		out.Plans = append(out.Plans, p)
	}
	sweep := func(flag, label string, values []float64, forced bool) error {
		s := Sensitivity{Input: flag, Label: label, Values: values}
		for _, v := range values {
			v2 := in
			var forcedHit float64
			if forced {
				forcedHit = v
			} else {
				for _, f := range v2.Fields() {
					if f.Flag == flag {
						*f.Ptr = v
					}
				}
			}
			mv := newCapModel(&v2)
			var row []RatePlan
			for _, r := range in.Rates {
				p, err := mv.plan(r, forcedHit)
				if err != nil {
					return err
				}
				row = append(row, p)
			}
			s.Plans = append(s.Plans, row)
		}
		out.Sensitivity = append(out.Sensitivity, s)
		return nil
	}
	for _, sw := range []struct {
		flag, label string
		values      []float64
		forced      bool
	}{
		{"lru-size", "key LRU entries per replica (--lru-size)", []float64{10_000, 100_000, 1_000_000, 10_000_000}, false},
		{"forced-hit", "key LRU hit ratio, forced (the Redis/PostgreSQL split of the misses still modelled)", []float64{0.5, 0.9, 0.99}, true},
		{"zipf-s", "popularity skew (--zipf-s)", []float64{0.6, 0.8, 1.0, 1.2}, false},
		{"active-fraction", "share of keys active (--active-fraction)", []float64{0.01, 0.1, 1}, false},
		{"lease-batch", "rate-limit lease batch (--lease-batch)", []float64{1, 10, 100}, false},
		{"usage-interval", "usage flush interval, s (--usage-interval)", []float64{10, 60, 300}, false},
		{"cores", "cores per replica (--cores)", []float64{2, 4, 8}, false},
		{"sticky", "routing: 0 spread over all replicas, 1 each credential to one replica (--sticky)", []float64{0, 1}, false},
	} {
		if err := sweep(sw.flag, sw.label, sw.values, sw.forced); err != nil {
			return nil, err
		}
	}
	return out, nil
}
