package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// The capacity model (`odin-load capacity`, docs/CAPACITY.md): what it
// takes to serve a target rate of checks over a population of API keys,
// from the per-path costs odin-load measured. Everything is a rate per
// second; CPU is in µs per event and in cores (CPU seconds per second).

// CapacityInputs are the model's inputs. The costs come from odin-load
// reports (CapacityInputsFromReports); every field can be overridden, and
// Sources says where each value came from.
type CapacityInputs struct {
	// odin CPU per check, µs, by path.
	KeyLRUUS       float64 `json:"key_lru_us"`       // API key, LRU hit
	KeyRedisUS     float64 `json:"key_redis_us"`     // LRU miss, Redis hit
	KeyStoreUS     float64 `json:"key_store_us"`     // Redis miss, PostgreSQL, Redis fill
	InvalidUS      float64 `json:"invalid_us"`       // unknown key, negative-cache hit
	SessionLRUUS   float64 `json:"session_lru_us"`   // session JWT, LRU hit
	SessionRedisUS float64 `json:"session_redis_us"` // session JWT, LRU miss, Redis hit
	SessionFirstUS float64 `json:"session_first_us"` // session JWT seen first: RS256 verified
	// RedisRoundTripUS is odin's CPU for one more Redis round trip (a
	// rate-limit lease, an acknowledgement, a bus probe).
	RedisRoundTripUS float64 `json:"redis_round_trip_us"`

	// Store CPU, µs.
	RedisOpUS         float64 `json:"redis_op_us"`          // per Redis command, I/O included
	RedisLeaseExtraUS float64 `json:"redis_lease_extra_us"` // a lease script's extra over a GET
	RedisDeliveryOps  float64 `json:"redis_delivery_ops"`   // a pub/sub delivery, in commands
	PGQueryUS         float64 `json:"pg_query_us"`          // per key lookup
	PGUsageRowUS      float64 `json:"pg_usage_row_us"`      // per row of a usage flush

	// Memory, bytes.
	BaseRSS           float64 `json:"base_rss_bytes"`
	KeyEntryBytes     float64 `json:"key_entry_bytes"`     // RSS per cached key
	SessionEntryBytes float64 `json:"session_entry_bytes"` // RSS per cached session
	RedisKeyBytes     float64 `json:"redis_key_bytes"`
	RedisSessionBytes float64 `json:"redis_session_bytes"`

	// Workload.
	Rates          []float64 `json:"rates"`
	Keys           float64   `json:"keys"`
	ActiveFraction float64   `json:"active_fraction"` // share of the keys that send checks
	ZipfS          float64   `json:"zipf_s"`          // popularity skew over the active keys
	MixKeys        float64   `json:"mix_keys"`
	MixSessions    float64   `json:"mix_sessions"`
	MixInvalid     float64   `json:"mix_invalid"`
	// InvalidUnique is the share of unknown-key checks whose key was not
	// seen within the negative TTL (each reaches Redis and PostgreSQL).
	InvalidUnique float64 `json:"invalid_unique"`
	// SessionRate is the checks per second of one active session.
	SessionRate   float64 `json:"session_rate"`
	TokenLifetime float64 `json:"token_lifetime_s"`
	// FirstSightRate is new session tokens per second; 0: active sessions
	// ÷ token lifetime.
	FirstSightRate  float64 `json:"first_sight_rate"`
	CacheTTL        float64 `json:"cache_ttl_s"`
	LRUSize         float64 `json:"lru_size"`
	SessionLRUSize  float64 `json:"session_lru_size"`
	CoresPerReplica float64 `json:"cores_per_replica"`
	TargetUtil      float64 `json:"target_utilisation"`
	StoreUtil       float64 `json:"store_target_utilisation"`
	Revocations     float64 `json:"revocations_per_s"`
	LeaseBatch      float64 `json:"lease_batch"`
	LeaseTTL        float64 `json:"lease_ttl_s"`
	UsageInterval   float64 `json:"usage_interval_s"`
	UsageMax        float64 `json:"usage_max"`
	SessionSync     float64 `json:"session_sync_s"`
	RedisRTTMS      float64 `json:"redis_rtt_ms"`
	AckDelayMS      float64 `json:"ack_delay_ms"`
	RevokePGQueries float64 `json:"revoke_pg_queries"`
	FenceAfter      float64 `json:"fence_after_s"`
	// Sticky ≥ 0.5 routes each credential to one replica (consistent
	// hashing) instead of spreading it over all of them.
	Sticky float64 `json:"sticky"`

	// Sources says where each input came from, by flag name: "measured:
	// …", "derived: …", "assumed: …" or "set: --flag".
	Sources map[string]string `json:"sources"`
}

// CapacityField is one scalar input: its flag name, its value, and what
// it means.
type CapacityField struct {
	Flag     string
	Ptr      *float64
	Usage    string
	Measured bool // taken from the reports unless set
}

// Fields lists the scalar inputs (every one a flag of odin-load capacity).
func (in *CapacityInputs) Fields() []CapacityField {
	return []CapacityField{
		{"key-lru-us", &in.KeyLRUUS, "odin CPU µs per API-key check answered by the LRU (cached-key)", true},
		{"key-redis-us", &in.KeyRedisUS, "odin CPU µs per check answered by Redis after an LRU miss (redis-key)", true},
		{"key-store-us", &in.KeyStoreUS, "odin CPU µs per check that misses Redis and queries PostgreSQL (cold-key-redis)", true},
		{"invalid-us", &in.InvalidUS, "odin CPU µs per unknown-key check answered by the negative cache (invalid-flood)", true},
		{"session-lru-us", &in.SessionLRUUS, "odin CPU µs per cached session check (cached-session)", true},
		{"session-redis-us", &in.SessionRedisUS, "odin CPU µs per session check answered by Redis (derived: cached-session + one Redis round trip)", true},
		{"session-first-us", &in.SessionFirstUS, "odin CPU µs per first-seen session token (jwt-first-sight)", true},
		{"redis-round-trip-us", &in.RedisRoundTripUS, "odin CPU µs per extra Redis round trip: lease, ack, bus probe (derived: key-redis-us − key-lru-us)", true},
		{"redis-op-us", &in.RedisOpUS, "Redis CPU µs per command, I/O included (net of background)", true},
		{"redis-lease-extra-us", &in.RedisLeaseExtraUS, "Redis CPU µs a lease script costs over a GET (INFO commandstats)", true},
		{"redis-delivery-ops", &in.RedisDeliveryOps, "a pub/sub message delivered to one subscriber, in Redis commands", false},
		{"pg-query-us", &in.PGQueryUS, "PostgreSQL CPU µs per key lookup (net of background)", true},
		{"pg-usage-row-us", &in.PGUsageRowUS, "PostgreSQL CPU µs per row of odin's usage flush (usage probe)", true},
		{"base-rss", &in.BaseRSS, "RSS of an idle replica, bytes (RSS probe)", true},
		{"key-entry-bytes", &in.KeyEntryBytes, "RSS per cached API key, bytes (RSS probe)", true},
		{"session-entry-bytes", &in.SessionEntryBytes, "RSS per cached session, bytes", true},
		{"redis-key-bytes", &in.RedisKeyBytes, "Redis memory per key record, bytes (MEMORY USAGE)", true},
		{"redis-session-bytes", &in.RedisSessionBytes, "Redis memory per verified session, bytes (MEMORY USAGE)", true},
		{"keys", &in.Keys, "API keys in PostgreSQL", false},
		{"active-fraction", &in.ActiveFraction, "share of the keys that send checks (the working set)", false},
		{"zipf-s", &in.ZipfS, "Zipf exponent of key popularity over the active keys (0: uniform)", false},
		{"mix-keys", &in.MixKeys, "share of checks carrying an API key", false},
		{"mix-sessions", &in.MixSessions, "share of checks carrying a session JWT", false},
		{"mix-invalid", &in.MixInvalid, "share of checks carrying a well-formed unknown key", false},
		{"invalid-unique", &in.InvalidUnique, "share of unknown-key checks whose key is new within the negative TTL", false},
		{"session-rate", &in.SessionRate, "checks per second of one active session", false},
		{"token-lifetime", &in.TokenLifetime, "session token lifetime, s (a new token, verified once, every lifetime)", false},
		{"first-sight-rate", &in.FirstSightRate, "new session tokens per second (0: active sessions ÷ token lifetime)", false},
		{"cache-ttl", &in.CacheTTL, "odin --cache-ttl, s", false},
		{"lru-size", &in.LRUSize, "odin --cache-size: key LRU entries per replica", false},
		{"session-lru-size", &in.SessionLRUSize, "session LRU entries per replica", false},
		{"cores", &in.CoresPerReplica, "cores per replica", false},
		{"util", &in.TargetUtil, "target CPU utilisation of a replica", false},
		{"store-util", &in.StoreUtil, "target CPU utilisation of a Redis shard (one core) and of PostgreSQL", false},
		{"revocations", &in.Revocations, "key revocations per second", false},
		{"lease-batch", &in.LeaseBatch, "rate-limit lease batch (tokens per Redis call): free 1, pro 10, enterprise 100", false},
		{"lease-ttl", &in.LeaseTTL, "rate-limit lease lifetime, s", false},
		{"usage-interval", &in.UsageInterval, "odin --usage-interval, s", false},
		{"usage-max", &in.UsageMax, "distinct keys a replica buffers per usage flush", false},
		{"session-sync", &in.SessionSync, "odin --session-sync, s", false},
		{"redis-rtt-ms", &in.RedisRTTMS, "network round trip to Redis, ms", false},
		{"ack-delay-ms", &in.AckDelayMS, "mean time a replica takes to act on and acknowledge an invalidation, ms", false},
		{"revoke-pg-queries", &in.RevokePGQueries, "PostgreSQL statements per revoke, in key-lookup equivalents", false},
		{"fence-after", &in.FenceAfter, "bus fence window, s: a revoke waits at most this + 0.5 s", false},
		{"sticky", &in.Sticky, "1: the proxy routes each credential to one replica (consistent hashing); 0: spread over all", false},
	}
}

// DefaultCapacityInputs are the workload defaults; the costs are zero
// until read from a report or set.
func DefaultCapacityInputs() CapacityInputs {
	in := CapacityInputs{
		RedisDeliveryOps: 1,
		Rates:            []float64{100_000, 1_000_000},
		Keys:             10_000_000, ActiveFraction: 0.1, ZipfS: 1,
		MixKeys: 0.70, MixSessions: 0.25, MixInvalid: 0.05, InvalidUnique: 0.1,
		SessionRate: 0.25, TokenLifetime: 60,
		CacheTTL: 30, LRUSize: 100_000, SessionLRUSize: 100_000,
		CoresPerReplica: 4, TargetUtil: 0.6, StoreUtil: 0.6,
		Revocations: 1, LeaseBatch: 10, LeaseTTL: 1,
		UsageInterval: 10, UsageMax: 100_000, SessionSync: 30,
		RedisRTTMS: 0.2, AckDelayMS: 1, RevokePGQueries: 3, FenceAfter: 1,
		Sources: map[string]string{},
	}
	why := map[string]string{
		"redis-delivery-ops": "a delivery writes to one client's socket, as a reply does",
		"keys":               "the brief: 10M keys", "active-fraction": "1M of the 10M keys active",
		"zipf-s":   "classic Zipf; see the sensitivity table",
		"mix-keys": "the harness's mixed scenario: 70/25/5", "mix-sessions": "the harness's mixed scenario",
		"mix-invalid": "the harness's mixed scenario", "invalid-unique": "one in ten unknown keys is new",
		"session-rate":   "a browser session checks every 4 s",
		"token-lifetime": "a Clerk session token lives one minute (clerk.com/docs/references/android/get-token)",
		"cache-ttl":      "odin's default", "lru-size": "odin's default", "session-lru-size": "odin's default",
		"cores": "a 4-core pod", "util": "headroom for bursts and a lost zone", "store-util": "as for replicas",
		"revocations": "one revoke a second", "lease-batch": "the pro tier's batch (5% of a 200 burst)",
		"lease-ttl": "odin's default", "usage-interval": "odin's default", "usage-max": "odin's default",
		"session-sync": "odin's default", "redis-rtt-ms": "one availability zone",
		"ack-delay-ms":      "a replica acts on an invalidation within a scheduler slice",
		"revoke-pg-queries": "UPDATE, audit INSERT, WAL position", "fence-after": "odin's default",
		"first-sight-rate": "derived from the active sessions and token lifetime",
		"sticky":           "the load balancer spreads every credential over every replica",
	}
	for _, f := range in.Fields() {
		if !f.Measured {
			in.Sources[f.Flag] = "assumed: default (" + why[f.Flag] + ")"
		}
	}
	in.Sources["rps"] = "assumed: default (the brief: 100k and 1M checks/s)"
	return in
}

// NamedReport is a report and the name it is cited by.
type NamedReport struct {
	Name   string
	Report *Report
}

// pooledScenario is one scenario's odin measurements over every report,
// summed.
type pooledScenario struct {
	name        string
	requests    float64
	cpuSec      float64
	ctr         counters
	netPGUS     float64
	pgQueries   float64
	netRedisUS  float64
	netCalls    float64
	cmds        map[string]RedisCommandStat
	pg, redis   bool
	cites       []string
	concurrency []int
}

func (p *pooledScenario) perReq() float64 { return p.cpuSec * 1e6 / p.requests }

// tierFractions are the shares of the key lookups answered by the LRU,
// Redis and PostgreSQL.
func (p *pooledScenario) tierFractions() (lru, redis, store float64, ok bool) {
	l := p.ctr.sum("odin_keystore_lookups_total", `tier="lru"`)
	r := p.ctr.sum("odin_keystore_lookups_total", `tier="redis"`)
	s := p.ctr.sum("odin_keystore_lookups_total", `tier="store"`)
	t := l + r + s
	if t <= 0 {
		return 0, 0, 0, false
	}
	return l / t, r / t, s / t, true
}

func (p *pooledScenario) cite() string {
	return fmt.Sprintf("%s, %s c=%s (%.0f checks)", strings.Join(p.cites, " + "), p.name, joinIntList(p.concurrency), p.requests)
}

func joinIntList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(slices.Compact(s), ",")
}

// poolScenarios gathers the odin side of every scenario; concurrency 0
// takes each report's highest measured concurrency for the scenario.
func poolScenarios(reps []NamedReport, concurrency int) map[string]*pooledScenario {
	out := map[string]*pooledScenario{}
	for _, nr := range reps {
		top := map[string]int{}
		for _, res := range nr.Report.Results {
			top[res.Scenario] = max(top[res.Scenario], res.Concurrency)
		}
		for _, res := range nr.Report.Results {
			want := concurrency
			if want == 0 {
				want = top[res.Scenario]
			}
			if res.Concurrency != want || res.Odin.Requests == 0 || res.Odin.ServerCPUNotMeasured {
				continue
			}
			p := out[res.Scenario]
			if p == nil {
				p = &pooledScenario{name: res.Scenario, ctr: counters{}, cmds: map[string]RedisCommandStat{}, pg: true, redis: true}
				out[res.Scenario] = p
			}
			reqs := float64(res.Odin.Requests)
			p.requests += reqs
			p.cpuSec += res.Odin.ServerCPUSeconds
			for k, v := range res.Odin.Server {
				p.ctr[k] += v
			}
			if s := res.Odin.Store; s != nil {
				n := NetStoreCost(res)
				p.netPGUS += n.PGCPUPerReqUS * reqs
				p.pgQueries += s.PGQueries
				p.netRedisUS += n.RedisCPUPerReqUS * reqs
				p.netCalls += n.RedisCallsPerReq * reqs
				p.pg = p.pg && s.PGMeasured
				p.redis = p.redis && s.RedisMeasured
				for k, c := range s.RedisCommands {
					cur := p.cmds[k]
					p.cmds[k] = RedisCommandStat{Calls: cur.Calls + c.Calls, Usec: cur.Usec + c.Usec}
				}
			} else {
				p.pg, p.redis = false, false
			}
			if !slices.Contains(p.cites, nr.Name) {
				p.cites = append(p.cites, nr.Name)
			}
			p.concurrency = append(p.concurrency, res.Concurrency)
		}
	}
	return out
}

// CapacityInputsFromReports fills the measured inputs of in from the
// reports and returns notes on what it derived or could not find. An input
// with no measurement is left as it is (zero unless set).
func CapacityInputsFromReports(in *CapacityInputs, reps []NamedReport, concurrency int) []string {
	var notes []string
	sc := poolScenarios(reps, concurrency)
	set := func(flag string, v float64, src string) {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			for _, f := range in.Fields() {
				if f.Flag == flag {
					*f.Ptr = v
				}
			}
			in.Sources[flag] = src
		}
	}
	raw := func(name string) (float64, *pooledScenario) {
		if p := sc[name]; p != nil && p.requests > 0 {
			return p.perReq(), p
		}
		return 0, nil
	}
	// API keys: the three paths, decomposed by the tier counters (each
	// scenario is mostly one path, but cold-key-redis meets Redis hits when
	// its walk wraps, and redis-key PostgreSQL when entries expire).
	cLRU, pLRU := raw("cached-key")
	cRedis, pRedis := raw("redis-key")
	cStore, pStore := raw("cold-key-redis")
	decomposed := false
	if pLRU != nil && pRedis != nil && pStore != nil {
		var a [3][3]float64
		okAll := true
		for i, p := range []*pooledScenario{pLRU, pRedis, pStore} {
			l, r, s, ok := p.tierFractions()
			okAll = okAll && ok
			a[i] = [3]float64{l, r, s}
		}
		if okAll {
			if x, ok := solve3(a, [3]float64{cLRU, cRedis, cStore}); ok && x[0] > 0 && x[1] > 0 && x[2] > 0 {
				cLRU, cRedis, cStore, decomposed = x[0], x[1], x[2], true
			}
		}
		if !decomposed {
			notes = append(notes, "the key-path costs could not be separated by the tier counters: each scenario's cost is taken as its path's")
		}
	}
	how := "odin CPU/check"
	if decomposed {
		how = "odin CPU/check, separated by the tier counters of cached-key, redis-key and cold-key-redis"
	}
	if pLRU != nil {
		set("key-lru-us", cLRU, "measured: "+pLRU.cite()+": "+how)
	}
	if pRedis != nil {
		set("key-redis-us", cRedis, "measured: "+pRedis.cite()+": "+how)
	}
	if pStore != nil {
		set("key-store-us", cStore, "measured: "+pStore.cite()+": "+how)
	}
	if c, p := raw("invalid-flood"); p != nil {
		src := "measured: " + p.cite() + ": odin CPU/check"
		if l, r, s, ok := p.tierFractions(); ok && l >= 0.5 && in.KeyRedisUS > 0 && in.KeyStoreUS > 0 {
			if neg := (c - r*in.KeyRedisUS - s*in.KeyStoreUS) / l; neg > 0 {
				c, src = neg, src+", less its share of Redis and PostgreSQL lookups"
			}
		}
		set("invalid-us", c, src)
	}
	if c, p := raw("cached-session"); p != nil {
		set("session-lru-us", c, "measured: "+p.cite()+": odin CPU/check")
	}
	if c, p := raw("jwt-first-sight"); p != nil {
		set("session-first-us", c, "measured: "+p.cite()+": odin CPU/check")
	}
	if in.KeyRedisUS > in.KeyLRUUS && in.KeyLRUUS > 0 {
		rt := in.KeyRedisUS - in.KeyLRUUS
		set("redis-round-trip-us", rt, "derived: key-redis-us − key-lru-us (a Redis round trip with a record to decode and prepare: an upper bound)")
		if in.SessionLRUUS > 0 {
			set("session-redis-us", in.SessionLRUUS+rt, "derived: session-lru-us + key-redis-us − key-lru-us (a Redis GET of a record, decoded)")
		}
	}
	// A bare round trip (a lease, a miss, a SET): cold-key-redis costs
	// cold-key's path (PostgreSQL, no Redis) plus its Redis commands.
	if cold, pc := raw("cold-key"); pc != nil && pStore != nil && pStore.redis && pStore.netCalls > 0 {
		calls := pStore.netCalls / pStore.requests
		if rt := (cStore - cold) / calls; calls >= 1 && rt > 0 {
			set("redis-round-trip-us", rt, fmt.Sprintf("derived: (key-store-us − cold-key's %.1f µs/check) ÷ the %.2f Redis commands of a cold-key-redis check (%s; %s): a round trip with no record to decode",
				cold, calls, pc.cite(), pStore.cite()))
		}
	}
	// Redis: CPU per command over the Redis-heavy scenarios, net of the
	// background; the lease script's extra from INFO commandstats.
	var rUS, rCalls float64
	var rCites []string
	cmds := map[string]RedisCommandStat{}
	for _, name := range []string{"redis-key", "cold-key-redis", "jwt-first-sight"} {
		if p := sc[name]; p != nil && p.redis && p.netCalls > 0 {
			rUS += p.netRedisUS
			rCalls += p.netCalls
			rCites = append(rCites, p.cite())
		}
	}
	for _, p := range sc {
		for k, c := range p.cmds {
			cur := cmds[k]
			cmds[k] = RedisCommandStat{Calls: cur.Calls + c.Calls, Usec: cur.Usec + c.Usec}
		}
	}
	var extra float64
	if e, g := cmds["evalsha"], cmds["get"]; e.Calls > 0 && g.Calls > 0 {
		extra = float64(e.Usec)/float64(e.Calls) - float64(g.Usec)/float64(g.Calls)
		if extra > 0 {
			set("redis-lease-extra-us", extra, fmt.Sprintf("measured: INFO commandstats over every odin run: EVALSHA %.1f µs/call (the script's own commands included) − GET %.1f µs/call",
				float64(e.Usec)/float64(e.Calls), float64(g.Usec)/float64(g.Calls)))
		}
	}
	if rCalls > 0 {
		// The leases among those commands cost the script's extra on top.
		var leases float64
		for _, name := range []string{"redis-key", "cold-key-redis", "jwt-first-sight"} {
			if p := sc[name]; p != nil && p.redis && p.netCalls > 0 {
				leases += float64(p.cmds["evalsha"].Calls)
			}
		}
		op := (rUS - leases*max(extra, 0)) / rCalls
		if op <= 0 {
			op = rUS / rCalls
		}
		set("redis-op-us", op, "measured: "+strings.Join(rCites, "; ")+
			": redis-server CPU per command clients sent, net of background, less the lease script's extra")
	}
	// PostgreSQL: CPU per lookup over the cold scenarios, net of the
	// background; per usage row from the usage probe.
	var pgUS, pgQ float64
	var pgCites []string
	for _, name := range []string{"cold-key-redis", "cold-key"} {
		if p := sc[name]; p != nil && p.pg && p.pgQueries > 0 {
			pgUS += p.netPGUS
			pgQ += p.pgQueries
			pgCites = append(pgCites, p.cite())
		}
	}
	if pgQ > 0 {
		set("pg-query-us", pgUS/pgQ, "measured: "+strings.Join(pgCites, "; ")+": postgres CPU per odin_keystore_store_queries_total, net of background")
	}
	var rss *RSSResult
	var rssFrom string
	for _, nr := range reps {
		for i := range nr.Report.RSS {
			if r := &nr.Report.RSS[i]; r.RSSAfter > 0 && (rss == nil || r.Keys > rss.Keys) {
				rss, rssFrom = r, nr.Name
			}
		}
		if w := nr.Report.StoreProcesses; w != nil {
			if u := w.Usage; u != nil {
				set("pg-usage-row-us", u.PGCPUPerRowUS, fmt.Sprintf("measured: %s, usage probe (%d × %d rows)", nr.Name, u.Batches, u.RowsPerBatch))
			}
			if v := w.RedisEntryBytes["key"]; v > 0 {
				set("redis-key-bytes", v, "measured: "+nr.Name+", MEMORY USAGE of odin's key entries after cold-key-redis")
			}
			if v := w.RedisEntryBytes["jwt"]; v > 0 {
				set("redis-session-bytes", v, "measured: "+nr.Name+", MEMORY USAGE of odin's session entries after jwt-first-sight")
			}
		}
	}
	if rss != nil {
		src := fmt.Sprintf("measured: %s, RSS probe (%d keys", rssFrom, rss.Keys)
		if !rss.GCAfterWarm {
			src += ", no GC after the warm-up"
		}
		set("base-rss", float64(rss.RSSBefore), src+"): RSS before the warm-up")
		set("key-entry-bytes", rss.RSSPerKey, src+"): RSS per key")
		set("session-entry-bytes", rss.RSSPerKey, "derived: key-entry-bytes (a session entry also holds a pre-rendered principal; not measured)")
	}
	return notes
}

// solve3 solves a·x = b by Gaussian elimination with partial pivoting.
func solve3(a [3][3]float64, b [3]float64) ([3]float64, bool) {
	for c := range 3 {
		p := c
		for r := c + 1; r < 3; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		if math.Abs(a[p][c]) < 1e-9 {
			return [3]float64{}, false
		}
		a[c], a[p] = a[p], a[c]
		b[c], b[p] = b[p], b[c]
		for r := c + 1; r < 3; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k < 3; k++ {
				a[r][k] -= f * a[c][k]
			}
			b[r] -= f * b[c]
		}
	}
	var x [3]float64
	for r := 2; r >= 0; r-- {
		s := b[r]
		for k := r + 1; k < 3; k++ {
			s -= a[r][k] * x[k]
		}
		x[r] = s / a[r][r]
	}
	return x, true
}

// Check reports inputs that are missing or out of range.
func (in *CapacityInputs) Check() error {
	var errs []error
	for _, f := range in.Fields() {
		v := *f.Ptr
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			errs = append(errs, fmt.Errorf("--%s %v: want a finite, non-negative number", f.Flag, v))
		} else if f.Measured && v == 0 {
			errs = append(errs, fmt.Errorf("--%s: no measured value in the reports (run the scenario, or set the flag)", f.Flag))
		}
	}
	switch {
	case len(in.Rates) == 0:
		errs = append(errs, errors.New("--rps: no target rate"))
	case in.Keys < 1 || in.ActiveFraction <= 0 || in.ActiveFraction > 1:
		errs = append(errs, errors.New("--keys must be ≥ 1 and --active-fraction in (0, 1]"))
	case math.Abs(in.MixKeys+in.MixSessions+in.MixInvalid-1) > 1e-6:
		errs = append(errs, fmt.Errorf("--mix-keys + --mix-sessions + --mix-invalid = %v, want 1", in.MixKeys+in.MixSessions+in.MixInvalid))
	case in.CoresPerReplica <= 0 || in.TargetUtil <= 0 || in.TargetUtil > 1 || in.StoreUtil <= 0 || in.StoreUtil > 1:
		errs = append(errs, errors.New("--cores must be positive, --util and --store-util in (0, 1]"))
	case in.LRUSize < 1 || in.SessionLRUSize < 1 || in.LeaseBatch < 1 || in.UsageInterval <= 0 || in.SessionSync <= 0:
		errs = append(errs, errors.New("--lru-size, --session-lru-size and --lease-batch must be ≥ 1, --usage-interval and --session-sync positive"))
	case in.MixSessions > 0 && (in.SessionRate <= 0 || (in.TokenLifetime <= 0 && in.FirstSightRate <= 0)):
		errs = append(errs, errors.New("--session-rate and --token-lifetime (or --first-sight-rate) must be positive"))
	}
	for _, r := range in.Rates {
		if !(r > 0) || math.IsInf(r, 0) {
			errs = append(errs, fmt.Errorf("--rps %v: want positive", r))
		}
	}
	return errors.Join(errs...)
}

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

	// API keys. Each replica gets 1/N of every key's requests.
	keyRate := rate * in.MixKeys
	p.InvalidChecks = rate * in.MixInvalid
	p.InvalidNew = p.InvalidChecks * in.InvalidUnique
	// A credential's requests go to every replica (random balancing: each
	// sees 1/N of its rate) or, with --sticky, all to one replica (each
	// replica serves 1/N of the credentials at their full rate).
	share, per, reps := 1.0, 1/N, n
	if in.Sticky >= 0.5 {
		share, per, reps = 1/N, 1.0, 1
	}
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

	// Sessions: A active sessions, each with one live token at a time,
	// checked at SessionRate, uniformly spread over the replicas.
	p.SessionChecks = rate * in.MixSessions
	var newTokens float64
	if p.SessionChecks > 0 {
		p.ActiveSessions = p.SessionChecks / in.SessionRate
		newTokens = in.FirstSightRate
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
		leases += float64(reps) * p.ActiveSessions * leaseRate(rho, in.LeaseBatch, in.LeaseTTL)
	}
	p.Leases = leases

	// Revocation fan-out: one SET, SUBSCRIBE, ZRANGEBYSCORE, PUBLISH (to N
	// subscribers), N acknowledgements (each delivered to every revoker
	// waiting at the time), UNSUBSCRIBE.
	h := 0.0
	for k := 1; k <= n; k++ {
		h += 1 / float64(k)
	}
	p.RevokeLatencyMS = min(4*in.RedisRTTMS+in.AckDelayMS*h, (in.FenceAfter+0.5)*1000)
	inflight := max(1, in.Revocations*p.RevokeLatencyMS/1000)
	p.RevokeRedisOps = 5 + N
	p.RevokeDeliveries = N + N*inflight
	p.RevokeOdinUS = N * in.RedisRoundTripUS

	// odin CPU, cores.
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

	// Redis.
	ops := p.RedisOpsByKind
	ops["key GET after an LRU miss"] = misses
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
	p.RedisMemory = redisLive*in.RedisKeyBytes + p.ActiveSessions*in.RedisSessionBytes

	// PostgreSQL.
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

	p.RSSPerReplica = in.BaseRSS + p.LRUEntries*in.KeyEntryBytes + p.SessionLRUEntries*in.SessionEntryBytes
	return p
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

// WriteJSON writes the plan as indented JSON.
func (c *CapacityPlan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("write capacity JSON: %w", err)
	}
	return nil
}

// capacityPreamble is the hand-written part of docs/CAPACITY.md; the rest
// is generated from the figures.
const capacityPreamble = `# Capacity plan: 100k and 1M checks/s over 10M API keys

This file is generated by ` + "`odin-load capacity`" + ` from one or more odin-load JSON reports: do
not edit it by hand, change the reports, the flags or the preamble in
` + "`internal/loadtest/capacity.go`" + ` and run the command below again. Every input says where it came from:
**measured** (a report, a scenario and what was divided by what), **derived** (from measured
figures, by the stated formula), **assumed** (a flag default, with the reason) or **set** (a flag
given on the command line).

## What the model does

- **Paths.** A check takes one of these paths, each with its own measured odin CPU cost: an API key
  answered by the LRU, by Redis after an LRU miss, or by PostgreSQL after a Redis miss (then written
  back to Redis); an unknown key answered by the negative cache, or new (Redis miss, PostgreSQL);
  a session JWT answered by the session LRU, by Redis, or seen for the first time (RS256
  verification, a revoked-session lookup and a Redis write). Rate-limit leases, the invalidation bus
  and revocations add Redis round trips.
- **Key popularity.** Requests go to ` + "`keys × active-fraction`" + ` active keys with Zipf(s) popularity,
  spread evenly over the replicas by the load balancer, so a replica sees each key at 1/N of its
  rate. The sums over 10M ranks use the 1,024 most popular ranks one by one, then logarithmic
  buckets at most 1% wide (about 2,000 buckets).
- **LRU hit ratio.** Che's approximation for an LRU under independent requests: the characteristic
  time T_C solves Σ_i (1 − e^(−λ_i·T_C)) + u·T_C = LRU size (u: new unknown keys, each cached once), by
  bisection; key i hits with probability 1 − e^(−λ_i·T_C). Entries also expire ` + "`cache-ttl`" + ` after
  they were read from PostgreSQL, so a key requested at λ per replica misses at least
  λ/(1 + λ·TTL) times a second; the model takes the larger of the two miss rates.
- **Replicas ↔ hit ratio.** More replicas means fewer requests per key per replica, so more TTL
  refreshes, first sights, rate-limit leases and usage rows. The replica count is the least fixed
  point of N = ⌈odin cores(N) / (cores per replica × target utilisation)⌉, found by iterating from
  N = 1 (the load only grows with N, so the iteration rises to it).
- **Redis tier.** A record in Redis carries the time it was read from PostgreSQL, and every replica's
  LRU entry filled from it expires with it. So the cluster queries PostgreSQL for key i at
  Λ_i/(1 + Λ_i·TTL) a second (Λ_i: the key's cluster-wide rate), and every other LRU miss is a
  Redis hit.
- **Sessions.** ` + "`rate × mix-sessions / session-rate`" + ` active sessions, each with one live token
  replaced every ` + "`token-lifetime`" + `; a token is verified once, found in Redis by every other replica
  it reaches, and cached in each replica's session LRU (Che again, dead tokens counted as one-shot
  entries).
- **Leases.** A replica takes a lease per limit key when its batch is spent or a lease lifetime has
  passed: λ / min(batch, 1 + λ·lease-ttl) leases a second for a key requested at λ on that replica.
  A key requested less than once a second per replica pays about one lease per check.
- **Usage flushes.** Every replica writes one row per distinct key it saw in each
  ` + "`usage-interval`" + ` (at most ` + "`usage-max`" + `): Σ_i (1 − e^(−λ_i·interval)) rows per replica.
- **Stores.** Redis CPU = commands × measured CPU per command (+ the lease script's extra, + pub/sub
  deliveries); a Redis shard is one core (commands run on one thread), sized to the store
  utilisation. PostgreSQL CPU = lookups × measured CPU per lookup + usage rows × measured CPU per row.
- **Revocation fan-out.** A revoke writes PostgreSQL, overwrites the key's Redis record, reads the
  live replicas (heartbeat set), PUBLISHes once (delivered to N replicas) and waits for N
  acknowledgements, each a PUBLISH delivered to every revoker waiting at the time. Latency ≈ 4
  Redis round trips + the slowest of N replicas (the mean acknowledgement delay × H_N for
  exponential delays), never more than the fence window + 0.5 s.

## What it does not model

- Tail latency and queueing: the model sizes for mean CPU at the target utilisation.
- The harness measured each path on a loaded 2-core machine, closed loop at the highest
  concurrency of the report (batching lowers the CPU per check; see BENCHMARKS.md). Production
  CPUs, kernels and network stacks differ: re-run the harness on the target hardware.
- The measured cached paths include the harness's own rate-limit leases (about one per key per
  second, under 2% of its checks); the model adds leases separately, so these are counted twice.
- Rate limiting refusals (over-limit keys answered locally) and the bound on leases they bring.
- Redis memory of rate-limit state and revoked sessions; PostgreSQL writes other than usage and
  revocations; read replicas (` + "`--database-read-url`" + `, docs/SCALING.md), which can take the key lookups off the primary.
`

// capacityConclusions is the hand-written reading of the plan. It states
// mechanisms, which hold whatever the measured costs; the figures are in
// the generated findings and tables around it.
const capacityConclusions = `
## What this means

- **What dominates is missing the replica's LRU, not the cached check.** A cached API key or
  session is the cheapest path; every miss adds a Redis round trip to odin's CPU (the
  ` + "`redis-round-trip-us`" + ` input) and a command to Redis. With a load balancer that spreads
  every credential over every replica, three kinds of misses grow with the replica count, and
  together they outweigh the cached checks: rate-limit leases, session tokens seen for the first
  time on a replica, and API keys whose LRU entry expired.
- **The key LRU hit ratio is capped by the cache TTL, not the LRU size.** Each replica sees a key
  at 1/N of its rate, and an entry lives at most ` + "`cache-ttl`" + ` after the cluster read it, so a
  key requested less than about once per TTL on a replica misses there every time. The LRU-size
  table shows the hit ratio barely moving from 100k to 10M entries while RSS grows by the measured
  bytes per entry: keep the default 100k. What moves it is a longer TTL (revokes are pushed on the
  bus and acknowledged; the TTL only bounds a lost message) or sending each credential to the same
  replica.
- **A 50% versus a 99% LRU hit ratio** is the forced-hit table: the difference is one Redis GET
  (and its round trip in odin) per check for half of the API-key checks, so replicas and Redis
  commands grow by about the share of API-key checks times that cost, while PostgreSQL does not
  change: it is read once per key per TTL whatever the LRU does.
- **Rate-limit leases are the largest Redis load.** A lease is per limit key per replica: a key
  requested less than once a lease lifetime on a replica takes a lease (an EVALSHA, the dearest
  command measured) on nearly every check, so the batch size hardly matters for the long tail
  (the lease-batch table). Levers, for the rate-limit owners: let the replica spend a small local
  allowance before it leases, key limits by organisation, or route by credential.
- **Session tokens barely use the session LRU at scale.** A token lives ` + "`token-lifetime`" + `
  and is spread over all the replicas, so most of its checks are its first on that replica: a
  Redis GET each. One verification per token (RS256) is cheap in aggregate.
- **Routing by credential** (consistent hashing on the Authorization header) reduces all three:
  a key's whole rate lands on one replica, so its LRU and session entries are reused and fewer
  keys fall under the lease and TTL thresholds (the routing table: fewer replicas, Redis shards and
  PostgreSQL cores; the long tail still leases on most checks). Envoy can hash ext_authz calls
  only with a cluster-level ` + "`hash_policy`" + `, added by envoyproxy/envoy#41928 (opened 2025-11,
  for envoyproxy/envoy#23060); older Envoys spread them.
- **PostgreSQL is small**: key lookups are bounded by the active keys ÷ TTL whatever the rate, and
  the largest part is the usage flush, one row per distinct key per replica per
  ` + "`usage-interval`" + `, which grows with the replica count; a longer interval (the usage-interval
  table) or aggregating usage before writing it shrinks it.
- **Redis shards** are Redis CPU ÷ one core at the store utilisation. The CPU per command was
  measured on a loaded 2-core machine whose cores the generator, odin and PostgreSQL shared: the
  shard count scales with that figure, so re-run the harness on the target hardware before
  buying.
- **Memory per replica** is the base RSS plus the measured bytes per entry for the key and the
  session LRU (both 100k by default): under a gigabyte at 100k entries each, several gigabytes
  at 1M key entries, for no gain in hit ratio here.
- **Revocation fan-out is cheap**: per revoke about N + 5 Redis commands, 2N pub/sub deliveries
  and one round trip of odin CPU per replica; its latency is a few Redis round trips plus the
  slowest replica's acknowledgement, so it grows with log N, and is capped by the fence window.
`

// WriteMarkdown writes the plan as the capacity document.
func (c *CapacityPlan) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	in := c.Inputs
	b.WriteString(capacityPreamble)
	b.WriteString("\n## How to regenerate\n\nFrom the repository's root, on the machine to size for (the run takes about five minutes):\n\n```sh\n")
	if len(c.RunCommands) > 0 {
		b.WriteString("go build -o odin ./cmd/odin && go build -o odin-load ./cmd/odin-load\n")
		for _, rc := range c.RunCommands {
			b.WriteString("./" + rc + "\n")
		}
		b.WriteString("./")
	}
	b.WriteString(c.Command + "\n```\n\n")
	if len(c.Machine) > 0 {
		b.WriteString("Measured on:\n\n")
		for _, m := range c.Machine {
			fmt.Fprintf(&b, "- %s\n", m)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Generated %s.\n\n", c.Generated.Format(time.RFC3339))

	b.WriteString("## The plan\n\n")
	fmt.Fprintf(&b, "%s keys (%s active, Zipf s = %g), %s%% API keys / %s%% sessions / %s%% unknown keys, LRU %s entries per replica, cache TTL %g s, %g cores per replica at %.0f%% CPU.\n\n",
		human(in.Keys), human(in.Keys*in.ActiveFraction), in.ZipfS, pct(in.MixKeys), pct(in.MixSessions), pct(in.MixInvalid),
		human(in.LRUSize), in.CacheTTL, in.CoresPerReplica, in.TargetUtil*100)
	b.WriteString("| | " + strings.Join(mapPlans(c.Plans, func(p RatePlan) string { return human(p.Rate) + " checks/s" }), " | ") + " |\n")
	b.WriteString("|---" + strings.Repeat("|---", len(c.Plans)) + "|\n")
	row := func(name string, f func(p RatePlan) string) {
		b.WriteString("| " + name + " | " + strings.Join(mapPlans(c.Plans, f), " | ") + " |\n")
	}
	row("**replicas** (cores)", func(p RatePlan) string { return fmt.Sprintf("**%d** (%s)", p.Replicas, human(p.Cores)) })
	row("odin CPU busy, cores", func(p RatePlan) string { return fmt.Sprintf("%.1f", p.OdinCores) })
	row("key LRU hit ratio", func(p RatePlan) string { return fmt.Sprintf("%.2f%%", 100*p.KeyLRUHit) })
	row("LRU characteristic time", func(p RatePlan) string { return tcString(p.TCSeconds) })
	row("key checks/s: LRU / Redis / PostgreSQL", func(p RatePlan) string {
		return fmt.Sprintf("%s / %s / %s", human(p.KeyLRUHits), human(p.KeyRedisHits), human(p.KeyPGQueries))
	})
	row("Redis answers of LRU misses", func(p RatePlan) string { return fmt.Sprintf("%.1f%%", 100*p.RedisHitOfMisses) })
	row("session checks/s: LRU / Redis / first sight", func(p RatePlan) string {
		return fmt.Sprintf("%s / %s / %s", human(p.SessionLRUHits), human(p.SessionRedisHits), human(p.FirstSight))
	})
	row("active sessions", func(p RatePlan) string { return human(p.ActiveSessions) })
	row("unknown-key checks/s (new)", func(p RatePlan) string { return fmt.Sprintf("%s (%s)", human(p.InvalidChecks), human(p.InvalidNew)) })
	row("rate-limit leases/s", func(p RatePlan) string { return human(p.Leases) })
	row("**Redis** commands/s", func(p RatePlan) string { return human(p.RedisOps) })
	row("Redis CPU, cores (shards at target)", func(p RatePlan) string { return fmt.Sprintf("%.2f (**%d**)", p.RedisCores, p.RedisShards) })
	row("Redis memory", func(p RatePlan) string { return bytesString(p.RedisMemory) })
	row("**PostgreSQL** statements/s", func(p RatePlan) string { return human(p.PGQueries) })
	row("usage rows written/s", func(p RatePlan) string { return human(p.UsageRows) })
	row("PostgreSQL CPU, cores (at target)", func(p RatePlan) string { return fmt.Sprintf("%.2f (**%d**)", p.PGCores, p.PGServers) })
	row("**memory per replica** (RSS)", func(p RatePlan) string { return "**" + bytesString(p.RSSPerReplica) + "**" })
	row("LRU entries per replica: keys / sessions", func(p RatePlan) string {
		return fmt.Sprintf("%s / %s", human(p.LRUEntries), human(p.SessionLRUEntries))
	})
	row("revoke: Redis commands + deliveries", func(p RatePlan) string {
		return fmt.Sprintf("%s + %s", human(p.RevokeRedisOps), human(p.RevokeDeliveries))
	})
	row("revoke: odin CPU over all replicas", func(p RatePlan) string { return fmt.Sprintf("%.1f ms", p.RevokeOdinUS/1000) })
	row("revoke latency (PublishAndWait)", func(p RatePlan) string { return fmt.Sprintf("%.1f ms", p.RevokeLatencyMS) })
	b.WriteString("\n")

	b.WriteString("### Where the CPU goes\n\n")
	writeBreakdown(&b, "odin cores", c.Plans, func(p RatePlan) map[string]float64 { return p.OdinByPath }, func(p RatePlan) float64 { return p.OdinCores })
	writeBreakdown(&b, "Redis commands/s", c.Plans, func(p RatePlan) map[string]float64 { return p.RedisOpsByKind }, func(p RatePlan) float64 { return p.RedisOps })
	writeBreakdown(&b, "PostgreSQL cores", c.Plans, func(p RatePlan) map[string]float64 { return p.PGByKind }, func(p RatePlan) float64 { return p.PGCores })

	b.WriteString("## Findings\n\n")
	for _, f := range c.findings() {
		fmt.Fprintf(&b, "- %s\n", f)
	}
	b.WriteString(capacityConclusions)
	b.WriteString("\n## Sensitivity\n\nEach table varies one input, the others as above.\n\n")
	for _, s := range c.Sensitivity {
		fmt.Fprintf(&b, "### %s\n\n", s.Label)
		b.WriteString("| value | " + strings.Join(mapPlans(c.Plans, func(p RatePlan) string {
			return human(p.Rate) + "/s: replicas · key LRU hit · Redis cmd/s (shards) · PG cores · RSS/replica"
		}), " | ") + " |\n")
		b.WriteString("|---" + strings.Repeat("|---", len(c.Plans)) + "|\n")
		for i, v := range s.Values {
			cells := make([]string, len(s.Plans[i]))
			for j, p := range s.Plans[i] {
				cells[j] = fmt.Sprintf("%d · %.1f%% · %s (%d) · %.1f · %s", p.Replicas, 100*p.KeyLRUHit, human(p.RedisOps), p.RedisShards, p.PGCores, bytesString(p.RSSPerReplica))
			}
			fmt.Fprintf(&b, "| %s | %s |\n", humanValue(v), strings.Join(cells, " | "))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Inputs and their sources\n\n| input | value | source |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| rps | %s | %s |\n", strings.Join(mapFloats(in.Rates, human), ", "), in.Sources["rps"])
	for _, f := range in.Fields() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", f.Flag, humanValue(*f.Ptr), strings.ReplaceAll(in.Sources[f.Flag], "|", "\\|"))
	}
	b.WriteString("\n")
	for _, n := range c.Notes {
		fmt.Fprintf(&b, "- Note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// findings are the conclusions the figures support, in sentences.
func (c *CapacityPlan) findings() []string {
	var out []string
	in := c.Inputs
	for _, p := range c.Plans {
		top, share := topShare(p.OdinByPath, p.OdinCores)
		out = append(out, fmt.Sprintf("At %s checks/s: %d replicas of %g cores (%s cores busy). The largest share of odin's CPU is %s (%.0f%%). Redis needs %d shard(s) for %s commands/s, %.0f%% of them rate-limit leases; PostgreSQL %.1f cores, %.0f%% of it usage flushes. A replica holds %s.",
			human(p.Rate), p.Replicas, in.CoresPerReplica, human(p.OdinCores), top, 100*share, p.RedisShards, human(p.RedisOps),
			100*p.Leases/math.Max(p.RedisOps, 1), p.PGCores, 100*p.PGByKind["usage flushes"]/math.Max(p.PGCores, 1e-12), bytesString(p.RSSPerReplica)))
	}
	for _, p := range c.Plans {
		out = append(out, fmt.Sprintf("At %s checks/s: %.0f%% of the authenticated checks take a rate-limit lease (a Redis round trip): a key requested less than once per lease lifetime on a replica pays one per check, whatever the batch. The session LRU answers %.0f%% of session checks: a %g s token reaches %d replicas a few times each, so most of its checks are its first on that replica (a Redis GET).",
			human(p.Rate), 100*p.Leases/math.Max(p.KeyChecks+p.SessionChecks, 1), 100*p.SessionLRUHits/math.Max(p.SessionChecks, 1),
			c.Inputs.TokenLifetime, p.Replicas))
	}
	for _, s := range c.Sensitivity {
		if s.Input != "lru-size" || len(s.Plans) == 0 {
			continue
		}
		big := s.Plans[len(s.Plans)-1]
		for j, p := range c.Plans {
			out = append(out, fmt.Sprintf("At %s checks/s the key LRU hit ratio is %.1f%% with %s entries and %.1f%% with %s (%s): the ceiling is the cache TTL, not the LRU size. A key requested less than once per TTL on a replica misses there every time, and more replicas make that more keys.",
				human(p.Rate), 100*p.KeyLRUHit, human(in.LRUSize), 100*big[j].KeyLRUHit, human(s.Values[len(s.Values)-1]), tcString(big[j].TCSeconds)))
		}
	}
	for _, s := range c.Sensitivity {
		if s.Input != "forced-hit" || len(s.Plans) == 0 {
			continue
		}
		for j, p := range c.Plans {
			lo, hi := s.Plans[0][j], s.Plans[len(s.Plans)-1][j]
			out = append(out, fmt.Sprintf("At %s checks/s, a key LRU hit ratio of %.0f%% instead of %.0f%% takes %d replicas instead of %d, and %s instead of %s Redis commands/s (modelled: %.1f%%).",
				human(p.Rate), 100*s.Values[0], 100*s.Values[len(s.Values)-1], lo.Replicas, hi.Replicas, human(lo.RedisOps), human(hi.RedisOps), 100*p.KeyLRUHit))
		}
	}
	for _, s := range c.Sensitivity {
		if s.Input != "sticky" || len(s.Plans) != 2 {
			continue
		}
		for j, p := range c.Plans {
			a, b := s.Plans[0][j], s.Plans[1][j]
			out = append(out, fmt.Sprintf("At %s checks/s, routing each credential to one replica instead of spreading it takes %d replicas instead of %d, %d Redis shards instead of %d and %.1f instead of %.1f PostgreSQL cores; the key LRU hit ratio becomes %.1f%% (from %.1f%%).",
				human(p.Rate), b.Replicas, a.Replicas, b.RedisShards, a.RedisShards, b.PGCores, a.PGCores, 100*b.KeyLRUHit, 100*a.KeyLRUHit))
		}
	}
	for _, s := range c.Sensitivity {
		if s.Input != "lru-size" {
			continue
		}
		for i, v := range s.Values {
			if v == 100_000 || v == 1_000_000 {
				p := s.Plans[i][len(s.Plans[i])-1]
				out = append(out, fmt.Sprintf("With %s key LRU entries a replica's RSS is about %s (%s base + %s B per key entry + the session LRU), and the key LRU hit ratio at %s checks/s is %.1f%%.",
					human(v), bytesString(p.RSSPerReplica), bytesString(in.BaseRSS), humanValue(in.KeyEntryBytes), human(p.Rate), 100*p.KeyLRUHit))
			}
		}
	}
	return out
}

func topShare(m map[string]float64, total float64) (string, float64) {
	best, v := "", -1.0
	for k, x := range m {
		if x > v || (x == v && k < best) {
			best, v = k, x
		}
	}
	if total <= 0 {
		return best, 0
	}
	return best, v / total
}

func writeBreakdown(b *strings.Builder, what string, plans []RatePlan, parts func(RatePlan) map[string]float64, total func(RatePlan) float64) {
	if len(plans) == 0 {
		return
	}
	keys := make([]string, 0, len(parts(plans[len(plans)-1])))
	for k := range parts(plans[len(plans)-1]) {
		keys = append(keys, k)
	}
	last := parts(plans[len(plans)-1])
	sort.Slice(keys, func(i, j int) bool {
		if last[keys[i]] != last[keys[j]] {
			return last[keys[i]] > last[keys[j]]
		}
		return keys[i] < keys[j]
	})
	b.WriteString("| " + what + " | " + strings.Join(mapPlans(plans, func(p RatePlan) string { return human(p.Rate) + "/s" }), " | ") + " |\n")
	b.WriteString("|---" + strings.Repeat("|---", len(plans)) + "|\n")
	for _, k := range keys {
		cells := mapPlans(plans, func(p RatePlan) string {
			v, t := parts(p)[k], total(p)
			if t <= 0 {
				return humanValue(v)
			}
			return fmt.Sprintf("%s (%.1f%%)", humanValue(v), 100*v/t)
		})
		b.WriteString("| " + k + " | " + strings.Join(cells, " | ") + " |\n")
	}
	b.WriteString("\n")
}

func mapPlans(ps []RatePlan, f func(RatePlan) string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = f(p)
	}
	return out
}

func mapFloats(fs []float64, f func(float64) string) []string {
	out := make([]string, len(fs))
	for i, v := range fs {
		out[i] = f(v)
	}
	return out
}

func pct(f float64) string { return humanValue(100 * f) }

// human writes a count with a k/M/G suffix, three significant digits.
func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a < 0.05:
		return "0"
	case a >= 1e9:
		return sig3(v/1e9) + "G"
	case a >= 1e6:
		return sig3(v/1e6) + "M"
	case a >= 1e4:
		return sig3(v/1e3) + "k"
	}
	return sig3(v)
}

// humanValue writes an input value: integers as such, others to three
// significant digits.
func humanValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		if math.Abs(v) >= 1e4 {
			return human(v)
		}
		return fmt.Sprintf("%.0f", v)
	}
	return sig3(v)
}

func sig3(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func bytesString(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", b/(1<<10))
}

func tcString(s float64) string {
	switch {
	case s < 0:
		return "∞ (never full)"
	case s >= 3600:
		return fmt.Sprintf("%.1f h", s/3600)
	case s >= 60:
		return fmt.Sprintf("%.1f min", s/60)
	}
	return fmt.Sprintf("%.2f s", s)
}
