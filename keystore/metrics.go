package keystore

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the keystore's Prometheus collectors. Label values come from
// small fixed sets; no key, hash or token is ever a label.
type Metrics struct {
	cacheHits    *prometheus.CounterVec // by tier: lru, redis, store, stale
	storeQueries *prometheus.CounterVec // by result: found, not_found, error
	redisErrors  *prometheus.CounterVec // by op
	busMessages  *prometheus.CounterVec // by kind

	storeThrottled prometheus.Counter
	filterBuilds   *prometheus.CounterVec // by result: ok, error
	filterKeys     prometheus.Gauge
	filterBytes    prometheus.Gauge
	// filterChecks by verdict: untrusted, vouched, refused
	filterChecks [3]prometheus.Counter

	hitLRU, hitRedis, hitStore, hitStale, hitFilter, hitNegative prometheus.Counter
	renders                                                      prometheus.Counter
}

// NewMetrics registers the keystore collectors on reg (nil: not registered,
// for tests and one-shot commands).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		cacheHits: f.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_lookups_total",
			Help: "Key lookups by the tier that answered: lru (known keys), filter (refused by the key filter), negative (the unknown-key tier), redis, store (PostgreSQL), stale (an expired entry served while PostgreSQL is unreachable or the unknown-key budget is spent).",
		}, []string{"tier"}),
		storeQueries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_store_queries_total",
			Help: "Key lookups sent to PostgreSQL, by result: found, not_found, error.",
		}, []string{"result"}),
		redisErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_redis_errors_total",
			Help: "Redis operations that failed, by operation; op=\"mac\" counts entries refused because their MAC did not verify (treated as absent).",
		}, []string{"op"}),
		busMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_bus_messages_total",
			Help: "Invalidation bus events, by kind: received, invalid, resubscribed.",
		}, []string{"kind"}),
	}
	m.renders = f.NewCounter(prometheus.CounterOpts{
		Name: "odin_keystore_key_renders_total",
		Help: "Cached keys' answers rendered from their compact record: checks (counted as tier=\"lru\" lookups) of a cached key outside the hot tier (--hot-cache-size).",
	})
	m.storeThrottled = f.NewCounter(prometheus.CounterOpts{
		Name: "odin_keystore_store_throttled_total",
		Help: "Misses not sent to PostgreSQL because the unknown-key lookup budget (--unknown-key-rate) was spent.",
	})
	m.filterBuilds = f.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_keystore_filter_builds_total",
		Help: "Key filter builds from PostgreSQL, by result: ok, error.",
	}, []string{"result"})
	m.filterKeys = f.NewGauge(prometheus.GaugeOpts{
		Name: "odin_keystore_filter_keys",
		Help: "Key hashes in the key filter's last build.",
	})
	m.filterBytes = f.NewGauge(prometheus.GaugeOpts{
		Name: "odin_keystore_filter_bytes",
		Help: "Size of the key filter's last build, in bytes.",
	})
	checks := f.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_keystore_filter_checks_total",
		Help: "Key filter checks of LRU misses, by verdict: refused (no key has the hash: answered 401 with no lookup of its own), vouched (may exist), untrusted (no filter built yet, or the refusal could not be confirmed: looked up as without a filter).",
	}, []string{"verdict"})
	m.filterChecks[filterUntrusted] = checks.WithLabelValues("untrusted")
	m.filterChecks[filterVouched] = checks.WithLabelValues("vouched")
	m.filterChecks[filterRefused] = checks.WithLabelValues("refused")
	m.hitFilter = m.cacheHits.WithLabelValues("filter")
	m.hitNegative = m.cacheHits.WithLabelValues("negative")
	m.hitLRU = m.cacheHits.WithLabelValues("lru")
	m.hitRedis = m.cacheHits.WithLabelValues("redis")
	m.hitStore = m.cacheHits.WithLabelValues("store")
	m.hitStale = m.cacheHits.WithLabelValues("stale")
	return m
}
