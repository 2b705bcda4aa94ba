// Package ops serves what operators and orchestrators ask of every Odin
// process: liveness, readiness from per-component health, and metrics.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Probe checks one component (PostgreSQL, Redis, the JWKS…).
type Probe struct {
	Name string
	Fn   func(context.Context) error
}

// StateReporter is an error whose ReportState text is safe to show in the
// readiness report: it names no host, user or secret. Any other probe error
// is reported as "unavailable".
type StateReporter interface {
	error
	ReportState() string
}

// Report is the last result of every probe.
type Report struct {
	Ready    bool              `json:"ready"`
	Draining bool              `json:"draining,omitempty"`
	Checks   map[string]string `json:"checks"`
}

// Readiness runs probes in the background and decides readiness with a
// rule of the caller's (for example "PostgreSQL is up, or the cache is
// warm"). Draining makes it not ready at once, whatever the probes say.
type Readiness struct {
	probes   []Probe
	rule     func(ok map[string]bool) bool
	interval time.Duration
	log      *slog.Logger
	onChange func(ready bool)

	mu       sync.Mutex
	report   Report
	draining atomic.Bool
}

// NewReadiness returns a readiness tracker; onChange (optional) is told
// every change of readiness, for example to flip the gRPC health status.
func NewReadiness(probes []Probe, rule func(ok map[string]bool) bool, interval time.Duration, logger *slog.Logger, onChange func(bool)) *Readiness {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	return &Readiness{probes: probes, rule: rule, interval: interval, log: logger, onChange: onChange,
		report: Report{Checks: map[string]string{}}}
}

// Run probes every interval until ctx ends. The first round runs at once.
func (r *Readiness) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.Probe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Probe runs every probe once and updates the report.
func (r *Readiness) Probe(ctx context.Context) {
	ok := make(map[string]bool, len(r.probes))
	checks := make(map[string]string, len(r.probes))
	for _, p := range r.probes {
		pctx, cancel := context.WithTimeout(ctx, r.interval)
		err := p.Fn(pctx)
		cancel()
		ok[p.Name] = err == nil
		checks[p.Name] = "ok"
		if err != nil {
			// The error text can name hosts; the report says only the state,
			// or what an error made to be shown says.
			checks[p.Name] = "unavailable"
			var sr StateReporter
			if errors.As(err, &sr) {
				checks[p.Name] = sr.ReportState()
			}
		}
	}
	ready := r.rule(ok) && !r.draining.Load()
	r.mu.Lock()
	changed := ready != r.report.Ready
	for name, state := range checks {
		if r.report.Checks[name] != state && r.log != nil {
			r.log.Info("component health changed", "component", name, "state", state)
		}
	}
	r.report = Report{Ready: ready, Draining: r.draining.Load(), Checks: checks}
	r.mu.Unlock()
	if changed && r.onChange != nil {
		r.onChange(ready)
	}
}

// Drain marks the process as shutting down: not ready from now on.
func (r *Readiness) Drain() {
	r.draining.Store(true)
	r.mu.Lock()
	was := r.report.Ready
	r.report.Ready, r.report.Draining = false, true
	r.mu.Unlock()
	if was && r.onChange != nil {
		r.onChange(false)
	}
}

// Report returns the last report.
func (r *Readiness) Report() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.report
	rep.Checks = make(map[string]string, len(r.report.Checks))
	for k, v := range r.report.Checks {
		rep.Checks[k] = v
	}
	return rep
}

// Collector returns the readiness report as metrics, read at each scrape:
// odin_ready (1 ready, 0 not or draining) and odin_component_up{component}
// (1 when the component's last probe succeeded). Components are the probes'
// names (postgres, sqlite, redis, postgres-replica, jwks), fixed at start.
func (r *Readiness) Collector() prometheus.Collector { return readinessCollector{r} }

var (
	readyDesc = prometheus.NewDesc("odin_ready",
		"1 when the process is ready (answers /readyz with 200), 0 otherwise.", nil, nil)
	componentUpDesc = prometheus.NewDesc("odin_component_up",
		"1 when the component's last readiness probe succeeded, 0 when it failed.", []string{"component"}, nil)
)

type readinessCollector struct{ r *Readiness }

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- componentUpDesc
}

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	rep := c.r.Report()
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolValue(rep.Ready))
	for _, p := range c.r.probes {
		state, probed := rep.Checks[p.Name]
		if !probed {
			continue // not probed yet: neither up nor down
		}
		ch <- prometheus.MustNewConstMetric(componentUpDesc, prometheus.GaugeValue, boolValue(state == "ok"), p.Name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves /healthz (the process is alive), /readyz (200 when ready,
// 503 otherwise, with the report) and /metrics.
func Handler(g prometheus.Gatherer, r *Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		rep := r.Report()
		w.Header().Set("content-type", "application/json")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// WithProfiling adds Go's profiler (net/http/pprof) under /debug/pprof/ to
// an ops handler. It is off unless asked for: a CPU profile costs the
// replica while it runs, and heap profiles show memory contents' shapes.
func WithProfiling(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}
