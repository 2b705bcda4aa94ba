package loadtest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEvaluateTargets(t *testing.T) {
	rep := &Report{
		Results: []Result{
			{Scenario: "cached-key", Concurrency: 8, CPURatio: 1.1},
			{Scenario: "cached-key", Concurrency: 32, CPURatio: 1.5},
			{Scenario: "cached-session", Concurrency: 32, CPURatio: 1.2},
			{Scenario: "cold-key", Concurrency: 32, Keys: 1_000_000, Odin: Measurement{P99US: 4200}},
			{Scenario: "invalid-flood", Concurrency: 32, Flood: &FloodCheck{StoreQueries: 120, Bound: 100}},
		},
		Bursts: []BurstResult{{Concurrent: 1000, StoreQueries: 1}, {Concurrent: 1000, StoreQueries: 1}},
		RSS:    []RSSResult{{Keys: 100_000, RSSPerKey: 512, LiveHeapPerKey: 300}},
	}
	got := evaluateTargets(rep)
	want := []Target{
		{Name: "cached API key: CPU per check ≤ 1.25× baseline", Measured: "1.50× baseline CPU per check (worst concurrency: 32)", Verdict: "missed by 0.25× (20% over)"},
		{Name: "cached session JWT: CPU per check ≤ 1.25× baseline", Measured: "1.20× baseline CPU per check (worst concurrency: 32)", Verdict: "met"},
		{Name: "first-sight RS256 JWT: CPU per check ≤ 2× baseline", Measured: "—", Verdict: "not measured"},
		{Name: "cold key p99 < 5 ms at concurrency 32 with 1M keys", Measured: "p99 4.20 ms with 1000000 keys", Verdict: "met"},
		{Name: "burst of concurrent checks of one uncached key → exactly one PostgreSQL query", Measured: "2 probes of 1000 concurrent checks: 1, 1 queries", Verdict: "met"},
		{Name: "unknown-key flood: ≤ 1 PostgreSQL query per distinct key per negative TTL", Measured: "120 queries, bound 100", Verdict: "missed by 20 queries"},
		{Name: "< 400 B RSS per cached key at 1M keys", Measured: "512 B/key RSS (300 B/key live Go heap) at 100000 keys", Verdict: "not measured at 1M keys (missed by 112.00 B (28% over) at 100000)"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("evaluateTargets (-want, +got):\n%s", diff)
	}
}

func TestCountersSumAndDelta(t *testing.T) {
	before := counters{
		`odin_keystore_store_queries_total{result="found"}`:                      10,
		`odin_keystore_store_queries_total{result="not_found"}`:                  5,
		`odin_authz_decisions_total{credential="api_key",result="allow"}`:        100,
		`odin_authz_decisions_total{credential="api_key",result="unauthorized"}`: 7,
		"go_memstats_heap_inuse_bytes":                                           1 << 20,
	}
	after := counters{
		`odin_keystore_store_queries_total{result="found"}`:                      12,
		`odin_keystore_store_queries_total{result="not_found"}`:                  9,
		`odin_authz_decisions_total{credential="api_key",result="allow"}`:        150,
		`odin_authz_decisions_total{credential="api_key",result="unauthorized"}`: 10,
		`odin_authz_decisions_total{credential="jwt",result="forbidden"}`:        1,
		"go_memstats_heap_inuse_bytes":                                           2 << 20,
	}
	d := before.delta(after)
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"all queries", d.sum("odin_keystore_store_queries_total"), 6},
		{"not_found", d.sum("odin_keystore_store_queries_total", `result="not_found"`), 4},
		{"denials", d.denials(), 4},
		{"gauges are not deltas", d.sum("go_memstats_heap_inuse_bytes"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestBoundedPacer(t *testing.T) {
	ctx := t.Context()
	p := boundedPacer{ctx: ctx, max: 10, dur: 1e9}
	if _, stop := p.Pace(0, 9); stop {
		t.Error("stopped before max")
	}
	if _, stop := p.Pace(0, 10); !stop {
		t.Error("did not stop at max")
	}
	if _, stop := p.Pace(1e9, 0); !stop {
		t.Error("did not stop at the duration")
	}
	paced := boundedPacer{ctx: ctx, max: 100, dur: 1e10, rate: 100}
	if wait, _ := paced.Pace(0, 50); wait != 5e8 {
		t.Errorf("at 100/s, hit 50 at t=0 waits %v, want 500ms", wait)
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"postgres://postgres@127.0.0.1:5432/test", true},
		{"redis://localhost:6379/0", true},
		{"http://[::1]:8080/", true},
		{"postgres://db.example.com/test", false},
		{"http://10.0.0.1:10000", false},
		{"postgres:///test?host=/var/run/postgresql", false},
	} {
		if err := checkLoopbackURL(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopbackURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestProcReaders(t *testing.T) {
	if _, err := CPUTime(1 << 30); err == nil {
		t.Error("CPUTime of a process that does not exist: want an error")
	}
	rss, err := RSS(selfPID())
	if err != nil || rss <= 0 {
		t.Errorf("RSS of this process = %d, %v", rss, err)
	}
	if _, err := CPUTime(selfPID()); err != nil {
		t.Error(err)
	}
	if got := cpuCount("0,2-3"); got != 3 {
		t.Errorf(`cpuCount("0,2-3") = %d, want 3`, got)
	}
}
