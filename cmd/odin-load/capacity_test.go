package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/loadtest"
)

// TestCapacityCommand feeds `odin-load capacity` a small report, overrides
// what it lacks with flags, and checks the plan cites both.
func TestCapacityCommand(t *testing.T) {
	res := func(name string, cpuUS float64, tier string) loadtest.Result {
		return loadtest.Result{Scenario: name, Concurrency: 32,
			Odin: loadtest.Measurement{Requests: 1000, Seconds: 1, ServerCPUSeconds: cpuUS * 1000 / 1e6,
				Server: map[string]float64{`odin_keystore_lookups_total{tier="` + tier + `"}`: 1000}}}
	}
	rep := loadtest.Report{Results: []loadtest.Result{
		res("cached-key", 90, "lru"), res("redis-key", 170, "redis"), res("cold-key-redis", 400, "store"),
		res("invalid-flood", 70, "lru"), res("cached-session", 100, ""), res("jwt-first-sight", 450, ""),
	}, RSS: []loadtest.RSSResult{{Keys: 1000, RSSBefore: 30 << 20, RSSAfter: 35 << 20, RSSPerKey: 5000, GCAfterWarm: true}}}
	dir := t.TempDir()
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	reportPath, md, js := filepath.Join(dir, "run.json"), filepath.Join(dir, "CAPACITY.md"), filepath.Join(dir, "plan.json")
	if err := os.WriteFile(reportPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err = run(context.Background(), []string{"capacity", "--report", reportPath, "--markdown", md, "--json", js,
		"--redis-op-us", "8", "--redis-lease-extra-us", "20", "--pg-query-us", "60", "--pg-usage-row-us", "40",
		"--redis-key-bytes", "450", "--redis-session-bytes", "400", "--zipf-s", "0.9", "--rps", "50000,500000"}, &bytes.Buffer{}, &stderr)
	if err != nil {
		t.Fatalf("capacity: %v (%s)", err, stderr.String())
	}
	out, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| 50.0k checks/s | 500k checks/s |", "| key-lru-us | 90 | measured: run.json, cached-key c=32",
		"| zipf-s | 0.9 | set: --zipf-s |", "| pg-query-us | 60 | set: --pg-query-us |",
		"odin-load capacity --report run.json --markdown " + md, "./odin-load run --odin-bin ./odin --keys 0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	var plan loadtest.CapacityPlan
	if b, err := os.ReadFile(js); err != nil || json.Unmarshal(b, &plan) != nil || len(plan.Plans) != 2 || plan.Plans[0].Replicas < 1 {
		t.Errorf("JSON plan: %v %+v", err, plan.Plans)
	}

	// Without the store figures the plan refuses, naming the flags.
	err = run(context.Background(), []string{"capacity", "--report", reportPath}, &bytes.Buffer{}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--pg-query-us") {
		t.Errorf("capacity without store figures: %v", err)
	}
}
