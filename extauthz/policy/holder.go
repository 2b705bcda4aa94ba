package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/odin-scan/odin-authz/internal/reload"
)

// pollInterval is how often Watch looks at the policy file. A stat per
// second costs nothing, and a ConfigMap update takes far longer than that
// to reach the pod anyway.
const pollInterval = time.Second

// Holder keeps the current policy for concurrent readers and replaces it
// when the file changes. Readers call Current on every request; a reload
// builds a whole new Policy and swaps one pointer, so a request sees either
// the old policy or the new one, never a mix.
type Holder struct {
	path    string
	log     *slog.Logger
	metrics *holderMetrics
	cur     atomic.Pointer[Policy]
	loop    *reload.Loop // serialises loads and triggers them

	lastSum [32]byte // SHA-256 of the file content last tried, good or bad; guarded by loop
}

// NewHolder loads the policy file at path. An empty path selects Default,
// which is never reloaded. A file that cannot be loaded is an error: the
// server must not start with a policy other than the one configured.
// logger and reg may be nil.
func NewHolder(path string, logger *slog.Logger, reg prometheus.Registerer) (*Holder, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Holder{path: path, log: logger, metrics: newHolderMetrics(reg)}
	if path == "" {
		h.loop = reload.NewLoop(pollInterval, h.load)
		h.cur.Store(Default())
		h.metrics.current(Default(), time.Now())
		logger.Info("policy: no file configured, using the built-in default (read for GET, HEAD, OPTIONS; write otherwise)")
		return h, nil
	}
	h.loop = reload.NewLoop(pollInterval, h.load, path)
	if err := h.loop.Reload(reload.Start); err != nil {
		return nil, err
	}
	return h, nil
}

// Current returns the policy in force. It is one atomic load: no lock, no
// allocation.
func (h *Holder) Current() *Policy { return h.cur.Load() }

// Reload reads the file again and, when it is valid, puts it in force. A
// file that cannot be read or parsed leaves the current policy in force; the
// failure is logged, counted and returned. Without a file Reload does
// nothing.
func (h *Holder) Reload() error { return h.loop.Reload(reload.Explicit) }

// Watch reloads the policy on SIGHUP and when the file changes, until ctx
// ends (internal/reload). A change is applied once it has held still for
// one poll, so a file caught half-written is not reported as broken.
// Without a file Watch only takes SIGHUP, so that the signal an operator
// sends out of habit does not kill the process.
func (h *Holder) Watch(ctx context.Context) { h.loop.Watch(ctx) }

// load reads and applies the file; h.loop calls it, one load at a time. A
// file change whose content is the content last tried (a touch, a
// replacement by the same bytes) loads nothing.
func (h *Holder) load(trigger string) error {
	if h.path == "" {
		h.log.Info("policy: no policy file to reload", "trigger", trigger)
		return nil
	}
	data, err := readFile(h.path)
	if trigger == reload.FileChange && err == nil && sha256.Sum256(data) == h.lastSum {
		return nil // touched, or replaced by the same content
	}
	return h.apply(data, err, trigger)
}

// apply parses data, or reports err from reading it, and puts a valid
// policy in force. It runs under h.loop.
func (h *Holder) apply(data []byte, err error, trigger string) error {
	var p *Policy
	h.lastSum = [32]byte{}
	if err == nil {
		h.lastSum = sha256.Sum256(data)
		p, err = Parse(data, h.path)
	}
	if err != nil {
		h.metrics.Failed()
		h.log.Error("policy: load failed, keeping the policy in force",
			"file", h.path, "trigger", trigger, "error", err)
		return err
	}
	h.cur.Store(p)
	h.metrics.Loaded()
	h.metrics.current(p, time.Now())
	h.log.Info("policy: loaded", "file", h.path, "trigger", trigger,
		"rules", p.Len(), "sha256", hex.EncodeToString(p.sum[:6]))
	return nil
}

// holderMetrics are the Holder's collectors: its loads, and the policy in
// force.
type holderMetrics struct {
	*reload.Metrics
	rules    prometheus.Gauge
	loadedAt prometheus.Gauge
}

func newHolderMetrics(reg prometheus.Registerer) *holderMetrics {
	f := promauto.With(reg) // nil: not registered, for tests and one-shot commands
	return &holderMetrics{
		Metrics: reload.NewMetrics(reg, prometheus.CounterOpts{
			Name: "odin_authz_policy_loads_total",
			Help: "Policy file loads (at start, on reload, on SIGHUP, on file change) by result (ok, error).",
		}, prometheus.GaugeOpts{
			Name: "odin_authz_policy_last_load_ok",
			Help: "1 when the last policy load succeeded, 0 when the file in place is refused and an older policy is in force.",
		}),
		rules: f.NewGauge(prometheus.GaugeOpts{
			Name: "odin_authz_policy_rules",
			Help: "Rules in the policy in force, not counting the default.",
		}),
		loadedAt: f.NewGauge(prometheus.GaugeOpts{
			Name: "odin_authz_policy_loaded_timestamp_seconds",
			Help: "When the policy in force was loaded, in Unix seconds.",
		}),
	}
}

// current records the policy just put in force.
func (m *holderMetrics) current(p *Policy, at time.Time) {
	m.rules.Set(float64(p.Len()))
	m.loadedAt.Set(float64(at.UnixNano()) / 1e9)
	m.LastOK.Set(1)
}
