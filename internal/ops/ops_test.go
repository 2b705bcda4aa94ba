package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadiness(t *testing.T) {
	var pgDown atomic.Bool
	var changes []bool
	probes := []Probe{
		{Name: "postgres", Fn: func(context.Context) error {
			if pgDown.Load() {
				return errors.New("dial tcp 10.0.0.5:5432: connection refused")
			}
			return nil
		}},
		{Name: "redis", Fn: func(context.Context) error { return errors.New("down") }},
	}
	r := NewReadiness(probes, func(ok map[string]bool) bool { return ok["postgres"] }, 0, nil, func(ready bool) { changes = append(changes, ready) })
	h := Handler(prometheus.NewRegistry(), r)
	get := func(path string) (int, Report) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var rep Report
		_ = json.Unmarshal(rec.Body.Bytes(), &rep)
		return rec.Code, rep
	}

	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("before the first probe: %d, want 503 (never ready by default)", code)
	}
	r.Probe(context.Background())
	code, rep := get("/readyz")
	if code != 200 || !rep.Ready || rep.Checks["redis"] != "unavailable" || rep.Checks["postgres"] != "ok" {
		t.Fatalf("ready with redis down: %d %+v", code, rep)
	}
	pgDown.Store(true)
	r.Probe(context.Background())
	code, rep = get("/readyz")
	if code != 503 || rep.Ready {
		t.Fatalf("postgres down: %d %+v", code, rep)
	}
	if body := rep.Checks["postgres"]; body != "unavailable" {
		t.Errorf("the report must not carry error text (hosts): %q", body)
	}
	pgDown.Store(false)
	r.Probe(context.Background())
	r.Drain()
	r.Probe(context.Background())
	if code, rep = get("/readyz"); code != 503 || !rep.Draining {
		t.Fatalf("draining: %d %+v", code, rep)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Errorf("/metrics %d", code)
	}
	want := []bool{true, false, true, false}
	if len(changes) != len(want) {
		t.Fatalf("readiness changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("readiness changes %v, want %v", changes, want)
		}
	}
}

// TestProfilingIsOptIn: /debug/pprof/ answers only on a handler wrapped by
// WithProfiling, which still serves the ops endpoints.
func TestProfilingIsOptIn(t *testing.T) {
	r := NewReadiness(nil, func(map[string]bool) bool { return true }, 0, nil, nil)
	plain := Handler(prometheus.NewRegistry(), r)
	for _, tc := range []struct {
		h    http.Handler
		path string
		want int
	}{
		{plain, "/debug/pprof/", http.StatusNotFound},
		{WithProfiling(plain), "/debug/pprof/", http.StatusOK},
		{WithProfiling(plain), "/debug/pprof/symbol", http.StatusOK},
		{WithProfiling(plain), "/metrics", http.StatusOK},
		{WithProfiling(plain), "/healthz", http.StatusOK},
	} {
		w := httptest.NewRecorder()
		tc.h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if w.Code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.path, w.Code, tc.want)
		}
	}
}

func TestReadinessCollector(t *testing.T) {
	var redisDown atomic.Bool
	probes := []Probe{
		{Name: "postgres", Fn: func(context.Context) error { return nil }},
		{Name: "redis", Fn: func(context.Context) error {
			if redisDown.Load() {
				return errors.New("down")
			}
			return nil
		}},
	}
	r := NewReadiness(probes, func(ok map[string]bool) bool { return ok["postgres"] }, 0, nil, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Collector())
	want := func(text string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(text), "odin_ready", "odin_component_up"); err != nil {
			t.Fatal(err)
		}
	}
	// probed is the text after the first probe, with redis's and the
	// process's state.
	probed := func(redisUp, ready int) string {
		return fmt.Sprintf(`# HELP odin_component_up 1 when the component's last readiness probe succeeded, 0 when it failed.
# TYPE odin_component_up gauge
odin_component_up{component="postgres"} 1
odin_component_up{component="redis"} %d
# HELP odin_ready 1 when the process is ready (answers /readyz with 200), 0 otherwise.
# TYPE odin_ready gauge
odin_ready %d
`, redisUp, ready)
	}
	want(`# HELP odin_ready 1 when the process is ready (answers /readyz with 200), 0 otherwise.
# TYPE odin_ready gauge
odin_ready 0
`)
	r.Probe(context.Background())
	redisDown.Store(true)
	r.Probe(context.Background())
	want(probed(0, 1))
	r.Drain()
	want(probed(0, 0))
}
