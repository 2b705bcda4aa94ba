// Package reload drives what a server reloads from files while it runs (the
// policy, the TLS certificate): it serialises the loads, triggers them on
// SIGHUP and when the files change, and counts them.
//
// The server keeps its own load function, which reads, checks and puts the
// files in force; a Loop calls it with the trigger that caused it, one call
// at a time, so the function may keep what it last read without a lock of
// its own.
package reload

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/odin-scan/odin-authz/internal/filewatch"
)

// The triggers a load is made for, as logged.
const (
	Start      = "start"       // the first load, before the server starts
	Explicit   = "reload"      // a call of Reload by the server's code
	Signal     = "SIGHUP"      // the process received SIGHUP
	FileChange = "file change" // a poll saw the files changed and settled
)

// Loop serialises a server's loads of its files and triggers them.
type Loop struct {
	// Interval is how often Watch polls the files; zero or negative: never,
	// only on SIGHUP or Reload. Set it before Watch.
	Interval time.Duration

	load  func(trigger string) error
	mu    sync.Mutex         // serialises loads; guards files
	files *filewatch.Watcher // nil: no files to poll
}

// NewLoop returns a Loop that calls load for the files at paths. Without
// paths nothing is polled; SIGHUP and Reload still call load.
func NewLoop(interval time.Duration, load func(trigger string) error, paths ...string) *Loop {
	l := &Loop{Interval: interval, load: load}
	if len(paths) > 0 {
		l.files = filewatch.New(paths...)
	}
	return l
}

// Reload loads the files now, for trigger, whatever the polls saw: the load
// reads them as they are.
func (l *Loop) Reload(trigger string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.files != nil {
		l.files.Reset()
	}
	return l.load(trigger)
}

// Watch reloads on SIGHUP and when the files change, until ctx ends. It
// polls each file's identity, size and modification time
// (internal/filewatch): os.Stat follows symbolic links, so a rename into
// place and a Kubernetes ConfigMap or Secret volume's symlink swap are both
// seen, on any file system. A change is loaded once it has held still for
// one poll, so a file caught half-written, or a certificate written before
// its key, is not reported as broken. Without files Watch only takes SIGHUP,
// so that the signal an operator sends out of habit does not kill the
// process.
func (l *Loop) Watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	l.Run(ctx, hup)
}

// Run is Watch with the signal channel given, for tests: any value received
// on hup stands for SIGHUP.
func (l *Loop) Run(ctx context.Context, hup <-chan os.Signal) {
	var tick <-chan time.Time
	if l.files != nil && l.Interval > 0 {
		t := time.NewTicker(l.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = l.Reload(Signal) // logged and counted by load
		case <-tick:
			l.poll()
		}
	}
}

// poll is one look at the files.
func (l *Loop) poll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.files.Poll() {
		return // unchanged, or not settled yet
	}
	_ = l.load(FileChange) // logged and counted by load
}

// Seen returns the files as the last load or settled change saw them (nil
// without files), for tests.
func (l *Loop) Seen() filewatch.State {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.files == nil {
		return nil
	}
	return l.files.Seen()
}

// Metrics count a server's loads of its files: by result, and whether the
// last one succeeded.
type Metrics struct {
	Loads  *prometheus.CounterVec // by result: ok, error
	LastOK prometheus.Gauge       // 1 after a good load, 0 after a refused one
}

// NewMetrics builds the two collectors and registers them on reg (nil: not
// registered, for tests and one-shot commands). Both results of loads exist
// from the start, at zero.
func NewMetrics(reg prometheus.Registerer, loads prometheus.CounterOpts, lastOK prometheus.GaugeOpts) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Loads:  f.NewCounterVec(loads, []string{"result"}),
		LastOK: f.NewGauge(lastOK),
	}
	m.Loads.WithLabelValues("ok")
	m.Loads.WithLabelValues("error")
	return m
}

// Loaded counts a good load.
func (m *Metrics) Loaded() {
	m.Loads.WithLabelValues("ok").Inc()
	m.LastOK.Set(1)
}

// Failed counts a refused load.
func (m *Metrics) Failed() {
	m.Loads.WithLabelValues("error").Inc()
	m.LastOK.Set(0)
}
