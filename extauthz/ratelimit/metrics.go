package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// path says how a decision was reached; the names are metric label values.
type path uint8

const (
	pathLease    path = iota // from the replica's lease, no round trip
	pathRedis                // after a lease request to Redis
	pathFallback             // Redis unreachable: per-replica limit or refusal
	pathLocal                // no Redis configured: per-replica limit
	numPaths
)

var pathNames = [numPaths]string{"lease", "redis", "fallback", "local"}

// Decision results, also label values.
const (
	resultAllowed = iota
	resultLimited
	resultUnavailable
	numResults
)

var resultNames = [numResults]string{"allowed", "limited", "unavailable"}

// Outcomes of a lease request.
const (
	callGranted = iota
	callRefused
	callError
	numCalls
)

var callNames = [numCalls]string{"granted", "refused", "error"}

// metrics are the limiter's collectors. No limit key is ever a label.
// Decisions are counted in the key table's shards (see shard.decisions) and
// summed when scraped; lease requests are rare enough for plain counters.
type metrics struct {
	redisCalls [numCalls]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, kt *keyTable) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	decisions := &decisionCollector{kt: kt, desc: prometheus.NewDesc(
		"odin_ratelimit_decisions_total",
		"Rate limit decisions by result (allowed, limited, unavailable) and path: lease (from tokens this replica had leased), redis (after a lease request), fallback (Redis unreachable), local (no Redis configured).",
		[]string{"result", "path"}, nil)}
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_ratelimit_redis_calls_total",
		Help: "Lease requests to Redis by result: granted, refused (the caller's budget is spent), error (Redis unreachable or too slow).",
	}, []string{"result"})
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "odin_ratelimit_tracked_keys",
		Help: "Limit keys this replica holds state for.",
	}, func() float64 { return float64(kt.len()) })
	reg.MustRegister(decisions, calls, keys)
	m := &metrics{}
	for c := range numCalls {
		m.redisCalls[c] = calls.WithLabelValues(callNames[c])
	}
	return m
}

// decisionCollector exports the key table's decision counters.
type decisionCollector struct {
	kt   *keyTable
	desc *prometheus.Desc
}

func (c *decisionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *decisionCollector) Collect(ch chan<- prometheus.Metric) {
	for r := range numResults {
		for p := range numPaths {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue,
				float64(c.kt.decisions(r, p)), resultNames[r], pathNames[p])
		}
	}
}
