package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/filewatch"
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
	poll    time.Duration
	cur     atomic.Pointer[Policy]

	mu      sync.Mutex         // serialises loads; guards the fields below
	lastSum [32]byte           // SHA-256 of the file content last tried, good or bad
	files   *filewatch.Watcher // the file as Watch last saw it; nil without a file
}

// NewHolder loads the policy file at path. An empty path selects Default,
// which is never reloaded. A file that cannot be loaded is an error: the
// server must not start with a policy other than the one configured.
// logger and reg may be nil.
func NewHolder(path string, logger *slog.Logger, reg prometheus.Registerer) (*Holder, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Holder{path: path, log: logger, metrics: newHolderMetrics(reg), poll: pollInterval}
	if path == "" {
		h.cur.Store(Default())
		h.metrics.current(Default(), time.Now())
		logger.Info("policy: no file configured, using the built-in default (read for GET, HEAD, OPTIONS; write otherwise)")
		return h, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files = filewatch.New(path)
	if err := h.load("start"); err != nil {
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
func (h *Holder) Reload() error { return h.reload("reload") }

func (h *Holder) reload(trigger string) error {
	if h.path == "" {
		h.log.Info("policy: no policy file to reload", "trigger", trigger)
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files.Reset()
	return h.load(trigger)
}

// Watch reloads the policy on SIGHUP and when the file changes, until ctx
// ends. It polls the file's identity, size and modification time
// (internal/filewatch) rather than relying on file-system events: os.Stat
// follows symbolic links, so an editor's write-and-rename and a Kubernetes
// ConfigMap's symlink swap are both seen, on any file system. A change is
// applied once it has held still for one poll, so a file caught
// half-written is not reported as broken.
// Without a file Watch only takes SIGHUP, so that the signal an operator
// sends out of habit does not kill the process.
func (h *Holder) Watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	h.watch(ctx, hup)
}

// watch is Watch with the signal channel given, for tests.
func (h *Holder) watch(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if h.path != "" {
		t := time.NewTicker(h.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = h.reload("SIGHUP") // logged and counted
		case <-tick:
			h.pollOnce()
		}
	}
}

// pollOnce is one look at the file.
func (h *Holder) pollOnce() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.files.Poll() {
		return // unchanged, or not settled yet
	}
	data, err := readFile(h.path)
	if err == nil && sha256.Sum256(data) == h.lastSum {
		return // touched, or replaced by the same content
	}
	_ = h.apply(data, err, "file change") // logged and counted
}

// load reads and applies the file. h.mu is held.
func (h *Holder) load(trigger string) error {
	data, err := readFile(h.path)
	return h.apply(data, err, trigger)
}

// apply parses data, or reports err from reading it, and puts a valid
// policy in force. h.mu is held.
func (h *Holder) apply(data []byte, err error, trigger string) error {
	var p *Policy
	h.lastSum = [32]byte{}
	if err == nil {
		h.lastSum = sha256.Sum256(data)
		p, err = Parse(data, h.path)
	}
	if err != nil {
		h.metrics.loads.WithLabelValues("error").Inc()
		h.metrics.ok.Set(0)
		h.log.Error("policy: load failed, keeping the policy in force",
			"file", h.path, "trigger", trigger, "error", err)
		return err
	}
	h.cur.Store(p)
	h.metrics.loads.WithLabelValues("ok").Inc()
	h.metrics.current(p, time.Now())
	h.log.Info("policy: loaded", "file", h.path, "trigger", trigger,
		"rules", p.Len(), "sha256", hex.EncodeToString(p.sum[:6]))
	return nil
}

// holderMetrics are the Holder's collectors.
type holderMetrics struct {
	loads    *prometheus.CounterVec
	rules    prometheus.Gauge
	loadedAt prometheus.Gauge
	ok       prometheus.Gauge
}

func newHolderMetrics(reg prometheus.Registerer) *holderMetrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &holderMetrics{
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_authz_policy_loads_total",
			Help: "Policy file loads (at start, on reload, on SIGHUP, on file change) by result (ok, error).",
		}, []string{"result"}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "odin_authz_policy_rules",
			Help: "Rules in the policy in force, not counting the default.",
		}),
		loadedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "odin_authz_policy_loaded_timestamp_seconds",
			Help: "When the policy in force was loaded, in Unix seconds.",
		}),
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "odin_authz_policy_last_load_ok",
			Help: "1 when the last policy load succeeded, 0 when the file in place is refused and an older policy is in force.",
		}),
	}
	reg.MustRegister(m.loads, m.rules, m.loadedAt, m.ok)
	m.loads.WithLabelValues("ok")
	m.loads.WithLabelValues("error")
	return m
}

// current records the policy just put in force.
func (m *holderMetrics) current(p *Policy, at time.Time) {
	m.rules.Set(float64(p.Len()))
	m.loadedAt.Set(float64(at.UnixNano()) / 1e9)
	m.ok.Set(1)
}
