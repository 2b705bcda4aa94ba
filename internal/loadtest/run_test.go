package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// TestRunProducesASaneReport runs every scenario for a fraction of a second
// against a real odin authz (built from this tree, started as a child) and
// the baseline, and checks the report's figures are there and consistent.
// It asserts no timings: the machine may be busy.
func TestRunProducesASaneReport(t *testing.T) {
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	cfg := ShortConfig()
	cfg.Mode = "test"
	cfg.OdinBinary = buildOdin(t)
	cfg.DatabaseURL, cfg.SeedInPlace = db, true
	cfg.RedisURL, cfg.RedisPrefix = redisURL, prefix
	cfg.Keys, cfg.CachedKeys, cfg.RedisKeys, cfg.UnknownKeys, cfg.CachedSessions = 400, 20, 120, 40, 20
	cfg.ColdCacheSize = 50
	cfg.Concurrency, cfg.Rounds = []int{4}, 1
	cfg.Duration, cfg.Requests, cfg.FirstSightTokens = 400*time.Millisecond, 600, 60
	cfg.Burst, cfg.RSSKeys, cfg.RSSSettle = 100, 300, 0
	cfg.MaxTime = 90 * time.Second
	cfg.WorkDir = t.TempDir()
	baselineSelf(&cfg)

	rep, err := Run(context.Background(), cfg, discardLogger())
	if err != nil {
		t.Fatalf("Run: %v (server logs in %s)", err, cfg.WorkDir)
	}
	want := []string{"cached-key", "cached-key-http", "cached-session", "jwt-first-sight", "invalid-flood", "mixed",
		"cold-key", "cold-key-redis", "redis-key"}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %d (%v)", len(rep.Results), len(want), want)
	}
	var serverCPU float64
	for i, res := range rep.Results {
		if res.Scenario != want[i] {
			t.Errorf("result %d is %s, want %s", i, res.Scenario, want[i])
		}
		for name, m := range map[string]Measurement{"odin": res.Odin, "baseline": res.Baseline} {
			checkMeasurement(t, res.Scenario+"/"+name, m)
			serverCPU += m.ServerCPUSeconds
			if m.Store == nil || !m.Store.PGMeasured || !m.Store.RedisMeasured {
				t.Errorf("%s/%s: store CPU not recorded: %+v", res.Scenario, name, m.Store)
			}
		}
		if len(res.Warnings) > 0 {
			t.Errorf("%s: warnings %v", res.Scenario, res.Warnings)
		}
		if res.Baseline.NonOK != 0 {
			t.Errorf("%s: the baseline denied %d requests", res.Scenario, res.Baseline.NonOK)
		}
		switch res.Scenario {
		case "invalid-flood":
			if res.Odin.NonOK != res.Odin.Requests {
				t.Errorf("invalid-flood: %d of %d denied, want all", res.Odin.NonOK, res.Odin.Requests)
			}
			if res.Flood == nil || !res.Flood.WithinBound {
				t.Errorf("invalid-flood: flood check %+v, want within the bound", res.Flood)
			}
		case "cold-key":
			if q := counters(res.Odin.Server).sum("odin_keystore_store_queries_total"); q < float64(res.Odin.Requests)/2 {
				t.Errorf("cold-key: %v PostgreSQL queries for %d requests: the keys were not cold", q, res.Odin.Requests)
			}
			// /proc counts CPU in 10 ms clock ticks, and this short run's few
			// hundred queries can take less than one on a quiet machine: the
			// reading is required, a non-zero one is not.
			if s := res.Odin.Store; s == nil || !s.PGMeasured || s.PGQueries <= 0 || s.PGCPUSeconds < 0 ||
				(s.PGCPUSeconds > 0) != (s.PGCPUPerQueryUS > 0) {
				t.Errorf("cold-key: PostgreSQL CPU not measured: %+v", s)
			}
		case "redis-key":
			if s := res.Odin.Store; s == nil || !s.RedisMeasured || s.RedisCalls <= 0 || s.RedisHits <= 0 {
				t.Errorf("redis-key: Redis commands not measured: %+v", s)
			}
		case "cached-key", "cached-session":
			if res.Odin.NonOK != 0 {
				t.Errorf("%s: %d denials", res.Scenario, res.Odin.NonOK)
			}
		}
	}
	if serverCPU <= 0 {
		t.Errorf("no server CPU time measured at all")
	}
	if w := rep.StoreProcesses; w == nil || w.PostgresProcesses == 0 || w.RedisPID == 0 || w.Usage == nil || w.Usage.PGCPUPerRowUS < 0 || w.RedisEntryBytes["key"] <= 0 {
		t.Errorf("store processes and probes: %+v", w)
	}
	if len(rep.Bursts) != 2*burstProbes {
		t.Errorf("got %d burst probes, want %d", len(rep.Bursts), 2*burstProbes)
	}
	for _, b := range rep.Bursts {
		if b.StoreQueries != 1 || b.Allowed != int64(cfg.Burst) {
			t.Errorf("burst probe %+v: want 1 query and every check allowed", b)
		}
	}
	if len(rep.RSS) != 1 || rep.RSS[0].RSSAfter <= 0 || rep.RSS[0].Requests != int64(cfg.RSSKeys) || rep.RSS[0].StoreLookups <= 0 {
		t.Errorf("RSS probe: %+v", rep.RSS)
	}
	if len(rep.Profiles) != 0 {
		t.Errorf("profiles written without a profile directory: %+v", rep.Profiles)
	}
	if len(rep.Targets) != 7 {
		t.Errorf("got %d targets, want 7", len(rep.Targets))
	}

	var md, js bytes.Buffer
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, s := range append(want, "| scenario | conc | server |", "| target | measured | verdict |", "| scenario | conc | PG queries/req |", "usage flush") {
		if !strings.Contains(md.String(), s) {
			t.Errorf("Markdown report lacks %q", s)
		}
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Results) != len(want) {
		t.Errorf("JSON report does not read back: %v", err)
	}
}

func checkMeasurement(t *testing.T, name string, m Measurement) {
	t.Helper()
	finite := func(fs ...float64) bool {
		for _, f := range fs {
			if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
				return false
			}
		}
		return true
	}
	switch {
	case m.Rounds != 1 || m.Requests <= 0 || m.RPS <= 0:
		t.Errorf("%s: %d rounds, %d requests, %.0f RPS: want a measured run", name, m.Rounds, m.Requests, m.RPS)
	case m.Errors != 0:
		t.Errorf("%s: %d errors %v", name, m.Errors, m.ErrorKinds)
	case !finite(m.P50US, m.P90US, m.P99US, m.MaxUS, m.ServerCPUPerReqUS, m.LoadCPUPerReqUS):
		t.Errorf("%s: figures not finite and non-negative: %+v", name, m)
	case m.P50US <= 0 || m.P50US > m.P90US || m.P90US > m.P99US || m.P99US > m.MaxUS:
		t.Errorf("%s: percentiles out of order: p50 %v p90 %v p99 %v max %v", name, m.P50US, m.P90US, m.P99US, m.MaxUS)
	case len(m.LoadAvg) != 1:
		t.Errorf("%s: load average not recorded", name)
	case m.Store != nil && !finite(m.Store.PGCPUSeconds, m.Store.RedisCPUSeconds, m.Store.PGCPUPerQueryUS, m.Store.PGCPUPerReqUS,
		m.Store.RedisCPUPerReqUS, m.Store.RedisCPUPerCallUS, m.Store.RedisCallsPerReq, float64(m.Store.RedisCalls)):
		t.Errorf("%s: store figures not finite and non-negative: %+v", name, *m.Store)
	}
}
