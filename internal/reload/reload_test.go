package reload

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder is a load function that records its triggers.
type recorder struct {
	mu       sync.Mutex
	triggers []string
}

func (r *recorder) load(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.triggers = append(r.triggers, trigger)
	return nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.triggers...)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// run starts l.Run with a signal channel the test controls; it stops at
// the end of the test.
func run(t *testing.T, l *Loop) chan<- os.Signal {
	t.Helper()
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, hup) }()
	t.Cleanup(func() { cancel(); <-done })
	return hup
}

func TestLoopTriggers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	l := NewLoop(2*time.Millisecond, rec.load, path)
	if err := l.Reload(Start); err != nil {
		t.Fatal(err)
	}
	hup := run(t, l)
	hup <- syscall.SIGHUP
	eventually(t, "the SIGHUP load", func() bool { return len(rec.got()) == 2 })
	later := time.Now().Add(time.Hour)
	if err := os.WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the file change load", func() bool { return len(rec.got()) == 3 })
	if err := l.Reload(Explicit); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{Start, Signal, FileChange, Explicit}, rec.got()); diff != "" {
		t.Errorf("triggers (-want, +got):\n%s", diff)
	}
	if seen := l.Seen(); seen[0] == nil || !seen[0].ModTime().Equal(later) {
		t.Errorf("Seen %v, want the changed file", seen)
	}
}

// TestLoopWithoutFiles: SIGHUP still loads; nothing is polled.
func TestLoopWithoutFiles(t *testing.T) {
	rec := &recorder{}
	l := NewLoop(time.Millisecond, rec.load)
	hup := run(t, l)
	hup <- syscall.SIGHUP
	eventually(t, "the SIGHUP load", func() bool { return len(rec.got()) == 1 })
	time.Sleep(20 * time.Millisecond)
	if diff := cmp.Diff([]string{Signal}, rec.got()); diff != "" {
		t.Errorf("triggers (-want, +got):\n%s", diff)
	}
	if l.Seen() != nil {
		t.Error("Seen without files is not nil")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, prometheus.CounterOpts{Name: "x_loads_total", Help: "Loads."},
		prometheus.GaugeOpts{Name: "x_last_load_ok", Help: "Last load ok."})
	read := func() []float64 {
		return []float64{testutil.ToFloat64(m.Loads.WithLabelValues("ok")),
			testutil.ToFloat64(m.Loads.WithLabelValues("error")), testutil.ToFloat64(m.LastOK)}
	}
	if n := testutil.CollectAndCount(reg, "x_loads_total"); n != 2 {
		t.Errorf("x_loads_total has %d series before any load, want 2 (ok, error)", n)
	}
	for _, step := range []struct {
		do   func()
		want []float64 // ok, error, last ok
	}{
		{m.Loaded, []float64{1, 0, 1}},
		{m.Failed, []float64{1, 1, 0}},
		{m.Loaded, []float64{2, 1, 1}},
	} {
		step.do()
		if diff := cmp.Diff(step.want, read()); diff != "" {
			t.Errorf("loads ok, loads error, last ok (-want, +got):\n%s", diff)
		}
	}
}
