package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// generation returns a policy file whose two rules are both named after
// gen and require the scope gen, so a reader can tell which file it sees.
func generation(gen string) string {
	return fmt.Sprintf(`rules:
  - {name: %[1]s-a, path: /a, scopes: {all_of: [%[1]s]}}
  - {name: %[1]s-b, path: /b, scopes: {all_of: [%[1]s]}}
`, gen)
}

const badPolicy = "rules:\n  - {path: /a, methods: [FETCH], scopes: {all_of: [x]}}\n"

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

type holderEnv struct {
	h    *Holder
	path string
	logs *testenv.LogBuffer
}

func newHolderEnv(t *testing.T, content string) holderEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, content)
	logs := &testenv.LogBuffer{}
	h, err := NewHolder(path, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return holderEnv{h, path, logs}
}

// ruleFor is the rule name GET /a lands on in the current policy.
func (e holderEnv) ruleFor() string { return e.h.Current().Match("GET", "/a").Name() }

// value reads a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func (e holderEnv) counts(t testing.TB) (ok, failed, lastOK float64) {
	m := e.h.metrics
	return value(t, m.Loads.WithLabelValues("ok")), value(t, m.Loads.WithLabelValues("error")), value(t, m.LastOK)
}

func (e holderEnv) wantCounts(t *testing.T, ok, failed, lastOK float64) {
	t.Helper()
	gotOK, gotFailed, gotLast := e.counts(t)
	if diff := cmp.Diff([]float64{ok, failed, lastOK}, []float64{gotOK, gotFailed, gotLast}); diff != "" {
		t.Errorf("loads ok, loads error, last_load_ok (-want, +got):\n%s", diff)
	}
}

// eventually waits for cond, failing the test after a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestHolderWithoutFile(t *testing.T) {
	h, err := NewHolder("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.Current() != Default() {
		t.Error("Current is not the built-in default")
	}
	if err := h.Reload(); err != nil {
		t.Errorf("Reload: %v", err)
	}
	// Watch takes SIGHUP (and does nothing with it) until ctx ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	go func() { defer close(done); h.loop.Run(ctx, hup) }()
	hup <- syscall.SIGHUP
	cancel()
	<-done
	if h.Current() != Default() {
		t.Error("Current changed after SIGHUP")
	}
	if n := testing.AllocsPerRun(100, func() { _ = h.Current() }); n != 0 {
		t.Errorf("Current: %v allocations", n)
	}
}

func TestHolderRefusesBadFileAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, badPolicy)
	_, err := NewHolder(path, nil, nil)
	want := path + `:2: rule 1: methods: unknown method "FETCH"`
	if err == nil || err.Error() != want {
		t.Errorf("NewHolder error = %v, want %s", err, want)
	}
}

func TestHolderReload(t *testing.T) {
	e := newHolderEnv(t, generation("one"))
	if got := e.ruleFor(); got != "one-a" {
		t.Fatalf("start: rule %q", got)
	}
	e.wantCounts(t, 1, 0, 1)

	writeFile(t, e.path, generation("two"))
	if err := e.h.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.ruleFor(); got != "two-a" {
		t.Errorf("after a good change: rule %q, want two-a", got)
	}
	e.wantCounts(t, 2, 0, 1)

	// A bad change: the error is returned, logged and counted; the policy
	// in force stays.
	writeFile(t, e.path, badPolicy)
	err := e.h.Reload()
	want := e.path + `:2: rule 1: methods: unknown method "FETCH"`
	if err == nil || err.Error() != want {
		t.Errorf("Reload error = %v, want %s", err, want)
	}
	if got := e.ruleFor(); got != "two-a" {
		t.Errorf("after a bad change: rule %q, want two-a kept", got)
	}
	e.wantCounts(t, 2, 1, 0)
	if logs := e.logs.String(); !strings.Contains(logs, "load failed") || !strings.Contains(logs, `unknown method \"FETCH\"`) {
		t.Errorf("the failure is not logged:\n%s", logs)
	}

	// A missing file is a failure too.
	if err := os.Remove(e.path); err != nil {
		t.Fatal(err)
	}
	if err := e.h.Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}
	e.wantCounts(t, 2, 2, 0)

	writeFile(t, e.path, generation("three"))
	if err := e.h.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := e.ruleFor(); got != "three-a" {
		t.Errorf("after the fix: rule %q, want three-a", got)
	}
	e.wantCounts(t, 3, 2, 1)
	if n := value(t, e.h.metrics.rules); n != 2 {
		t.Errorf("rules gauge %v, want 2", n)
	}
}

// startWatch runs the watch loop with a short poll and a signal channel the
// test controls; it stops at the end of the test.
func startWatch(t *testing.T, e holderEnv, poll time.Duration) chan<- os.Signal {
	t.Helper()
	e.h.loop.Interval = poll
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.h.loop.Run(ctx, hup) }()
	t.Cleanup(func() { cancel(); <-done })
	return hup
}

func TestWatchFileChanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replace func(t *testing.T, path, content string)
	}{
		{"rewrite in place", func(t *testing.T, path, content string) { writeFile(t, path, content) }},
		{"rename over", func(t *testing.T, path, content string) {
			tmp := path + ".swp"
			writeFile(t, tmp, content)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newHolderEnv(t, generation("one"))
			startWatch(t, e, 5*time.Millisecond)
			tc.replace(t, e.path, generation("two"))
			eventually(t, "the new policy", func() bool { return e.ruleFor() == "two-a" })

			tc.replace(t, e.path, badPolicy)
			eventually(t, "the failure to be counted", func() bool { _, failed, _ := e.counts(t); return failed >= 1 })
			if got := e.ruleFor(); got != "two-a" {
				t.Errorf("after a bad change: rule %q, want two-a kept", got)
			}

			tc.replace(t, e.path, generation("three"))
			eventually(t, "the fixed policy", func() bool { return e.ruleFor() == "three-a" })
			if tc.name == "rename over" {
				e.wantCounts(t, 3, 1, 1)
				return
			}
			// An in-place rewrite is truncate then write: on a loaded machine a
			// poll can catch the empty file in between and count one more
			// (harmless) failure; the good policy is what stays in force.
			if ok, failed, last := e.counts(t); ok != 3 || failed < 1 || failed > 3 || last != 1 {
				t.Errorf("loads ok %v, error %v, last_load_ok %v; want 3, 1..3, 1", ok, failed, last)
			}
		})
	}
}

// TestWatchConfigMapSwap replays how the kubelet updates a mounted
// ConfigMap: policy.yaml links to ..data/policy.yaml, and ..data is a
// symlink to a timestamped directory that is replaced by renaming a new
// symlink over it.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "policy.yaml"), content)
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_one", generation("one"))
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink(filepath.Join("..data", "policy.yaml"), path); err != nil {
		t.Fatal(err)
	}
	h, err := NewHolder(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := holderEnv{h: h, path: path}
	startWatch(t, e, 5*time.Millisecond)
	version("..2026_01_02_two", generation("two"))
	eventually(t, "the swapped policy", func() bool { return e.ruleFor() == "two-a" })
}

// TestWatchIgnoresTouch: a new modification time with the same content
// reloads nothing.
func TestWatchIgnoresTouch(t *testing.T) {
	e := newHolderEnv(t, generation("one"))
	startWatch(t, e, 2*time.Millisecond)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(e.path, later, later); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the touch to be seen", func() bool {
		seen := e.h.loop.Seen()
		return seen[0] != nil && seen[0].ModTime().Equal(later)
	})
	e.wantCounts(t, 1, 0, 1)
}

func TestWatchSIGHUP(t *testing.T) {
	e := newHolderEnv(t, generation("one"))
	hup := startWatch(t, e, time.Hour) // no polling: only the signal reloads
	writeFile(t, e.path, generation("two"))
	hup <- syscall.SIGHUP
	eventually(t, "the reload on SIGHUP", func() bool { return e.ruleFor() == "two-a" })
	// SIGHUP reloads even an unchanged file, so an operator sees it logged.
	hup <- syscall.SIGHUP
	eventually(t, "the second reload", func() bool { ok, _, _ := e.counts(t); return ok == 3 })
	if logs := e.logs.String(); !strings.Contains(logs, "trigger=SIGHUP") {
		t.Errorf("no SIGHUP reload logged:\n%s", logs)
	}
}

// TestWatchRealSIGHUP sends the process a real SIGHUP. The test holds its
// own subscription, so the signal never kills the test binary, even before
// Watch has subscribed.
func TestWatchRealSIGHUP(t *testing.T) {
	own := make(chan os.Signal, 1)
	signal.Notify(own, syscall.SIGHUP)
	defer signal.Stop(own)

	e := newHolderEnv(t, generation("one"))
	e.h.loop.Interval = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.h.Watch(ctx) }()
	defer func() { cancel(); <-done }()

	writeFile(t, e.path, generation("two"))
	eventually(t, "the reload on a real SIGHUP", func() bool {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		return e.ruleFor() == "two-a"
	})
}

// TestConcurrentReload reloads between two policies while readers
// authorize: every reader must see one whole policy, never rules of both.
func TestConcurrentReload(t *testing.T) {
	e := newHolderEnv(t, generation("one"))
	dir := filepath.Dir(e.path)
	files := [2]string{filepath.Join(dir, "one.yaml"), filepath.Join(dir, "two.yaml")}
	writeFile(t, files[0], generation("one"))
	writeFile(t, files[1], generation("two"))

	var stop atomic.Bool
	var wg sync.WaitGroup
	var checks atomic.Int64
	for range 8 {
		wg.Go(func() {
			granted := []string{"one"}
			for !stop.Load() {
				p := e.h.Current()
				a := p.Authorize("GET", "/a", granted)
				b := p.Authorize("GET", "/b", granted)
				gen, _ := strings.CutSuffix(a.Rule, "-a")
				if b.Rule != gen+"-b" || a.Allowed() != (gen == "one") || b.Allowed() != a.Allowed() {
					t.Errorf("torn policy: %+v and %+v", a, b)
					return
				}
				checks.Add(1)
			}
		})
	}
	for i := range 200 {
		data, err := os.ReadFile(files[i%2])
		if err != nil {
			t.Fatal(err)
		}
		tmp := e.path + ".tmp"
		writeFile(t, tmp, string(data))
		if err := os.Rename(tmp, e.path); err != nil {
			t.Fatal(err)
		}
		if err := e.h.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if checks.Load() == 0 {
		t.Error("no reader ran")
	}
	e.wantCounts(t, 201, 0, 1)
}
