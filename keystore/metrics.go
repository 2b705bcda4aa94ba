package keystore

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the keystore's Prometheus collectors. Label values come from
// small fixed sets; no key, hash or token is ever a label.
type Metrics struct {
	cacheHits    *prometheus.CounterVec // by tier: lru, redis, store, stale
	storeQueries *prometheus.CounterVec // by result: found, not_found, error
	redisErrors  *prometheus.CounterVec // by op
	busMessages  *prometheus.CounterVec // by kind

	hitLRU, hitRedis, hitStore, hitStale prometheus.Counter
}

// NewMetrics registers the keystore collectors on reg (nil: a private
// registry, for tests and one-shot commands).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_lookups_total",
			Help: "Key lookups by the tier that answered: lru, redis, store (PostgreSQL), stale (an expired LRU entry served while PostgreSQL is unreachable).",
		}, []string{"tier"}),
		storeQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_store_queries_total",
			Help: "Key lookups sent to PostgreSQL, by result: found, not_found, error.",
		}, []string{"result"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_redis_errors_total",
			Help: "Redis operations that failed, by operation; op=\"mac\" counts entries refused because their MAC did not verify (treated as absent).",
		}, []string{"op"}),
		busMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_bus_messages_total",
			Help: "Invalidation bus events, by kind: received, invalid, resubscribed.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.cacheHits, m.storeQueries, m.redisErrors, m.busMessages)
	m.hitLRU = m.cacheHits.WithLabelValues("lru")
	m.hitRedis = m.cacheHits.WithLabelValues("redis")
	m.hitStore = m.cacheHits.WithLabelValues("store")
	m.hitStale = m.cacheHits.WithLabelValues("stale")
	return m
}
