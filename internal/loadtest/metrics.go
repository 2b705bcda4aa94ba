package loadtest

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
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

// The histograms of odin's time inside Check, told apart: waiting for
// PostgreSQL or Redis, and the rest (odin's own share). Their cumulative
// bucket counts are read as counters (`name_bucket{le="…"}`), so a run's
// change in each bucket gives the distribution of that run's checks.
const (
	ownSeconds       = "odin_authz_check_own_seconds"
	storeWaitSeconds = "odin_authz_check_store_wait_seconds"
)

var watchedHistograms = []string{ownSeconds, storeWaitSeconds}

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
	for _, name := range watchedHistograms {
		mf := families[name]
		if mf == nil { // an odin that does not export it
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			for _, b := range h.GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) { // that one is the sample count
					out[bucketKey(name, b.GetUpperBound())] += float64(b.GetCumulativeCount())
				}
			}
			out[bucketKey(name, math.Inf(1))] += float64(h.GetSampleCount())
		}
	}
	return out, nil
}

// bucketKey is the counters key of a histogram bucket.
func bucketKey(name string, le float64) string {
	return name + `_bucket{le="` + strconv.FormatFloat(le, 'g', -1, 64) + `"}`
}

// BucketQuantiles are quantiles of a histogram's change over the runs,
// estimated from its buckets as Prometheus's histogram_quantile does:
// linear interpolation inside the bucket that holds the rank, so each is
// only as fine as the buckets around it.
type BucketQuantiles struct {
	// Count is the number of observations (checks) over the runs.
	Count float64 `json:"count"`
	P50US float64 `json:"p50_us_bucket_estimate"`
	P90US float64 `json:"p90_us_bucket_estimate"`
	P99US float64 `json:"p99_us_bucket_estimate"`
}

// bucketQuantiles estimates the quantiles of histogram name from the
// bucket changes in c; nil when it has no observation.
func (c counters) bucketQuantiles(name string) *BucketQuantiles {
	type bucket struct{ le, cum float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range c {
		if le, ok := strings.CutPrefix(k, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSuffix(le, `"}`), 64)
			if err == nil {
				bs = append(bs, bucket{f, v})
			}
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].cum <= 0 {
		return nil
	}
	total := bs[len(bs)-1].cum
	quantile := func(q float64) float64 {
		rank := q * total
		lower, below := 0.0, 0.0
		for _, b := range bs {
			if b.cum >= rank && b.cum > below {
				if math.IsInf(b.le, 1) { // beyond the last bound: say the bound
					return lower * 1e6
				}
				return (lower + (b.le-lower)*(rank-below)/(b.cum-below)) * 1e6
			}
			lower, below = b.le, b.cum
		}
		return lower * 1e6
	}
	return &BucketQuantiles{Count: total, P50US: quantile(0.5), P90US: quantile(0.9), P99US: quantile(0.99)}
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
		// Every bucket is kept, changed or not: its bound is the lower
		// bound of the next one.
		if d := v - c[k]; d != 0 || strings.Contains(k, "_bucket{le=") {
			out[k] = d
		}
	}
	return out
}

func isCounter(key string) bool {
	for _, name := range append(watchedCounters, watchedHistograms...) {
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
