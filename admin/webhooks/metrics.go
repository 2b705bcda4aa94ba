package webhooks

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/keystore"
)

// The result label values of odin_webhook_attempts_total.
const (
	resultSuccess = "success"    // a 2xx answer
	resultHTTP    = "http_error" // another status
	resultNetwork = "no_answer"  // no answer: connection, TLS, timeout
)

// metrics are the worker's; every label value is from a fixed set (event
// types, outcomes), never an endpoint's URL.
type metrics struct {
	enqueued *prometheus.CounterVec
	events   *prometheus.CounterVec
	attempts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	backlog  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_webhook_events_enqueued_total",
			Help: "Outgoing webhook events taken from the outbox for their first attempt, by type.",
		}, []string{"type"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_webhook_events_total",
			Help: "Outgoing webhook events finished, by type and outcome: delivered, failed (attempts ran out), skipped (no endpoint takes the type).",
		}, []string{"type", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_webhook_attempts_total",
			Help: "Outgoing webhook requests, by event type and result: success (2xx), http_error, no_answer.",
		}, []string{"type", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "odin_webhook_delivery_duration_seconds",
			Help:    "Time an endpoint took to answer an outgoing webhook request, by event type.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"type"}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "odin_webhook_outbox_pending",
			Help: "Outgoing webhook events waiting for delivery (pending), as this admin replica last counted them.",
		}),
	}
	for _, t := range keystore.EventTypes { // exported at 0 from the start, so rate() sees the first one
		m.enqueued.WithLabelValues(t)
		m.latency.WithLabelValues(t)
		for _, o := range []string{keystore.OutboxDelivered, keystore.OutboxFailed, keystore.OutboxSkipped} {
			m.events.WithLabelValues(t, o)
		}
		for _, r := range []string{resultSuccess, resultHTTP, resultNetwork} {
			m.attempts.WithLabelValues(t, r)
		}
	}
	for _, c := range []prometheus.Collector{m.enqueued, m.events, m.attempts, m.latency, m.backlog} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
