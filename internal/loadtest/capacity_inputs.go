package loadtest

import (
	"errors"
	"fmt"
	"math"
)

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
