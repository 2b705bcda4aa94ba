package loadtest

import (
	"context"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The own-share and store-wait quantiles come from the change of each
// histogram bucket between two scrapes, interpolated inside the bucket
// that holds the rank.
func TestBucketQuantilesFromScrapes(t *testing.T) {
	reg := prometheus.NewRegistry()
	own := prometheus.NewHistogram(prometheus.HistogramOpts{Name: ownSeconds, Buckets: []float64{1e-5, 2e-5, 1e-4, 1e-3}})
	reg.MustRegister(own)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for range 1000 { // before the run: must not count
		own.Observe(0.5)
	}
	before, err := scrapeCounters(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		own.Observe(5e-6) // (0, 10 µs]
	}
	for range 40 {
		own.Observe(15e-6) // (10, 20 µs]
	}
	for range 10 {
		own.Observe(50e-6) // (20, 100 µs]
	}
	after, err := scrapeCounters(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	d := before.delta(after)
	if d.bucketQuantiles(storeWaitSeconds) != nil {
		t.Error("quantiles of a histogram odin did not export")
	}
	q := d.bucketQuantiles(ownSeconds)
	if q == nil {
		t.Fatal("no quantiles")
	}
	// p50: rank 50 of 100, the top of the first bucket; p90: rank 90, the
	// top of the second; p99: rank 99, 9/10 into (20, 100 µs].
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"count", q.Count, 100}, {"p50", q.P50US, 10}, {"p90", q.P90US, 20}, {"p99", q.P99US, 92}} {
		if math.Abs(c.got-c.want) > 1e-6 {
			t.Errorf("%s = %g, want %g", c.name, c.got, c.want)
		}
	}

	// Past the last bound: the bound, as histogram_quantile says.
	for range 100 {
		own.Observe(2)
	}
	last, err := scrapeCounters(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if q := after.delta(last).bucketQuantiles(ownSeconds); q == nil || q.P99US != 1000 {
		t.Errorf("p99 beyond the last bucket = %+v, want 1000 µs", q)
	}
}

// The report shows the own share and the store wait of every scenario
// odin exported them for.
func TestReportShowsOwnShare(t *testing.T) {
	r := &Report{Results: []Result{
		{Scenario: "cold-key", Concurrency: 32, Odin: Measurement{Rounds: 1, OwnShare: &BucketQuantiles{Count: 3000, P50US: 12.5, P90US: 30, P99US: 250},
			StoreWait: &BucketQuantiles{Count: 3000, P50US: 800, P90US: 1500, P99US: 4000}}},
		{Scenario: "cached-key", Concurrency: 32, Odin: Measurement{Rounds: 1, OwnShare: &BucketQuantiles{Count: 9000, P50US: 3, P90US: 5, P99US: 9}}},
	}}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| cold-key | 32 | 12.5 / 30.0 / 250.0 | 3000 | 800.0 / 1500.0 / 4000.0 | 3000 |",
		"| cached-key | 32 | 3.0 / 5.0 / 9.0 | 9000 | — | 0 |",
		"bucket estimates",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
