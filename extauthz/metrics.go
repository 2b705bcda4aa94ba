package extauthz

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the decision core's Prometheus collectors. Label values come
// from fixed sets (outcome and credential kind names).
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	// own and storeWait split latency: the time waiting for PostgreSQL or
	// Redis, observed only by the checks that waited, and the rest.
	own, storeWait prometheus.Histogram
	// byOutcome caches every label combination, so the hot path does no
	// label lookup.
	byOutcome [numOutcomes][numCredentialKinds]prometheus.Counter
}

// NewMetrics registers the collectors on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		decisions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_authz_decisions_total",
			Help: "Check decisions by result (allow, unauthorized, forbidden, rate_limited, unavailable, misconfigured) and credential kind (none, malformed, api_key, jwt).",
		}, []string{"result", "credential"}),
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "odin_authz_check_duration_seconds",
			Help:    "Time to decide one check, excluding transport.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1},
		}),
		own: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "odin_authz_check_own_seconds",
			Help:    "Time to decide one check, excluding transport and the time waiting for PostgreSQL or Redis: odin's own share.",
			Buckets: shareBuckets,
		}),
		storeWait: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "odin_authz_check_store_wait_seconds",
			Help:    "Time one check waited for PostgreSQL or Redis (key and session cache misses, the revoked-session mirror, rate-limit leases, a concurrent lookup of the same key); only checks that waited are counted.",
			Buckets: shareBuckets,
		}),
	}
	for o := range numOutcomes {
		for c := range numCredentialKinds {
			m.byOutcome[o][c] = m.decisions.WithLabelValues(Outcome(o).String(), CredentialKind(c).String())
		}
	}
	return m
}

// shareBuckets are the buckets of odin_authz_check_own_seconds and
// odin_authz_check_store_wait_seconds: fine enough below a millisecond to
// read a p50 or a p99 there.
var shareBuckets = []float64{
	1e-6, 2e-6, 3e-6, 5e-6, 7.5e-6, 1e-5, 1.5e-5, 2e-5, 3e-5, 5e-5, 7.5e-5,
	1e-4, 1.5e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7.5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 5e-3,
	1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1,
}

// observe counts and logs a decision. Denials are logged at info, allows at
// debug (one line per request is too much for a hot gateway). The path is
// logged without its query string, which may carry secrets.
func (a *Authorizer) observe(d *Decision, r *Request, took time.Duration) {
	a.metrics.byOutcome[d.Outcome][d.Credential.Kind].Inc()
	a.metrics.latency.Observe(took.Seconds())
	a.metrics.own.Observe(max(took-d.StoreWait, 0).Seconds())
	if d.StoreWait > 0 {
		a.metrics.storeWait.Observe(d.StoreWait.Seconds())
	}
	level := slog.LevelInfo
	switch d.Outcome {
	case Allow:
		level = slog.LevelDebug
	case DenyMisconfigured: // for an operator to fix, not a caller's mistake
		level = slog.LevelError
	}
	if a.log == nil || !a.log.Enabled(context.Background(), level) {
		return
	}
	path, _, _ := strings.Cut(r.Path, "?")
	attrs := []slog.Attr{
		slog.String("request_id", d.RequestID),
		slog.String("result", d.Outcome.String()),
		slog.String("credential", d.Credential.Kind.String()),
		slog.String("method", r.Method),
		slog.String("path", path),
	}
	if d.Reason != "" {
		attrs = append(attrs, slog.String("reason", d.Reason))
	}
	if d.ClientAddr.IsValid() { // read for a key's network allowlist
		attrs = append(attrs, slog.String("client_address", d.ClientAddr.String()))
	}
	if d.Principal != nil {
		attrs = append(attrs, slog.String("subject", d.Principal.Subject), slog.String("key_id", d.Principal.KeyID))
		if d.Principal.Actor != "" {
			attrs = append(attrs, slog.String("actor", d.Principal.Actor))
		}
	}
	a.log.LogAttrs(context.Background(), level, "check", attrs...)
}
