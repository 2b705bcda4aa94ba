package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The server counters a run reports the change of, read from odin's ops
// port. They say which path the checks took: the LRU, Redis or PostgreSQL.
var watchedCounters = []string{
	"odin_keystore_lookups_total",
	"odin_keystore_store_queries_total",
	"odin_authz_decisions_total",
	"odin_authz_session_lookups_total",
	"odin_keystore_redis_errors_total",
}

// memoryGauges are the Go runtime gauges the RSS probe reads.
var memoryGauges = []string{
	"go_memstats_heap_inuse_bytes", "go_memstats_heap_alloc_bytes", "go_memstats_next_gc_bytes",
	"go_memstats_last_gc_time_seconds", "go_gc_gogc_percent", "process_resident_memory_bytes",
	processCPUSeconds,
}

// processCPUSeconds is the Prometheus process collector's CPU time (user
// and system, from /proc/self/stat): a remote deployment's CPU.
const processCPUSeconds = "process_cpu_seconds_total"

// counters are the samples of the watched counters, keyed
// `name{label="value",…}`.
type counters map[string]float64

// scrapeCounters reads the watched counters and the memory gauges from a
// /metrics endpoint.
func scrapeCounters(ctx context.Context, opsAddr string) (counters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+opsAddr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	out := counters{}
	for _, name := range append(watchedCounters, memoryGauges...) {
		mf := families[name]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[sampleKey(name, m)] = sampleValue(m)
		}
	}
	return out, nil
}

func sampleKey(name string, m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return name
	}
	labels := make([]string, 0, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	sort.Strings(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// delta returns after − c for the counters that changed.
func (c counters) delta(after counters) counters {
	out := counters{}
	for k, v := range after {
		if !isCounter(k) {
			continue
		}
		if d := v - c[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func isCounter(key string) bool {
	for _, name := range watchedCounters {
		if strings.HasPrefix(key, name) {
			return true
		}
	}
	return false
}

// sum adds the samples of a metric whose labels include every given
// `label="value"` pair.
func (c counters) sum(name string, labels ...string) float64 {
	var s float64
next:
	for k, v := range c {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(k, l) {
				continue next
			}
		}
		s += v
	}
	return s
}

// denials is the number of decisions other than allow.
func (c counters) denials() float64 {
	return c.sum("odin_authz_decisions_total") - c.sum("odin_authz_decisions_total", `result="allow"`)
}
