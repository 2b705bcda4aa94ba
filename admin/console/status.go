package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/odin-scan/odin-authz/keystore"
)

// Status is what the status page shows of this odin admin process and
// of the deployment it sees: its readiness checks and the bus's replicas.
type Status struct {
	// Ready is this process's readiness (/readyz).
	Ready bool
	// Checks are its readiness probes by name (postgres, redis, jwks…)
	// with their last state: "ok" or a text safe to show.
	Checks []StatusCheck
	// RedisConfigured: there is a bus to list replicas from.
	RedisConfigured bool
	// Replicas are the bus's heartbeat set; ReplicasError says why it
	// could not be read.
	Replicas      []keystore.Replica
	ReplicasError string
}

// StatusCheck is one readiness probe's last result.
type StatusCheck struct {
	Name, State string
}

// OK reports whether the probe passed.
func (c StatusCheck) OK() bool { return c.State == "ok" }

// decisionSample is one scrape of odin authz's decision counters.
type decisionSample struct {
	at     time.Time
	byName map[string]float64 // result → count
}

// decisions scrapes odin authz's metrics (--console-authz-metrics-url)
// and keeps the previous scrape, so that the page can show rates.
type decisions struct {
	url    string
	client *http.Client
	mu     sync.Mutex
	last   *decisionSample
}

// DecisionRow is one decision result with its count and rate.
type DecisionRow struct {
	Result string
	Total  float64
	// PerSecond is the rate since the previous scrape; HasRate is false
	// on the first scrape or after a counter reset.
	PerSecond float64
	HasRate   bool
}

// decisionView is the page's decision section.
type decisionView struct {
	Configured bool
	URL        string
	Rows       []DecisionRow
	Since      time.Duration // since the previous scrape (rates' window)
	HasSince   bool          // there was a previous scrape
	Error      string
}

const decisionsMetric = "odin_authz_decisions_total"

// scrape reads the counters and returns them with the rates since the
// previous scrape.
func (d *decisions) scrape(ctx context.Context, now time.Time) decisionView {
	v := decisionView{Configured: true, URL: d.url}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		v.Error = "the metrics URL is not valid"
		return v
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := d.client.Do(req)
	if err != nil {
		v.Error = "odin authz's metrics could not be read (unreachable or too slow)"
		return v
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		v.Error = fmt.Sprintf("odin authz's metrics answered %d", resp.StatusCode)
		return v
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		v.Error = "odin authz's metrics could not be parsed (is the URL its /metrics?)"
		return v
	}
	fam, ok := fams[decisionsMetric]
	if !ok {
		v.Error = "no " + decisionsMetric + " there (is the URL odin authz's /metrics?)"
		return v
	}
	cur := &decisionSample{at: now, byName: map[string]float64{}}
	for _, m := range fam.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "result" {
				cur.byName[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	d.mu.Lock()
	prev := d.last
	d.last = cur
	d.mu.Unlock()
	names := make([]string, 0, len(cur.byName))
	for n := range cur.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	if prev != nil {
		v.Since, v.HasSince = now.Sub(prev.at).Round(100*time.Millisecond), true
	}
	for _, n := range names {
		row := DecisionRow{Result: n, Total: cur.byName[n]}
		if prev != nil {
			if p, ok := prev.byName[n]; ok && row.Total >= p && now.After(prev.at) {
				row.PerSecond, row.HasRate = (row.Total-p)/now.Sub(prev.at).Seconds(), true
			}
		}
		v.Rows = append(v.Rows, row)
	}
	return v
}

type statusPage struct {
	Available bool
	Status    Status
	Decisions decisionView
	At        time.Time
}

func (statusPage) title() string { return "Status" }

// age is how long ago t was, to the second.
func age(now, t time.Time) string { return now.Sub(t).Round(100 * time.Millisecond).String() }

func (c *Console) statusPage(w http.ResponseWriter, r *http.Request, req *request) {
	if !req.session.principal.Operator {
		c.render(w, r, http.StatusForbidden, "error", req, errorPage{Title: "Forbidden", Message: "The status page is for the operator."})
		return
	}
	now := c.now()
	v := statusPage{At: now}
	if c.status != nil {
		v.Available, v.Status = true, c.status(r.Context())
	}
	if c.decisions != nil {
		v.Decisions = c.decisions.scrape(r.Context(), now)
	}
	c.render(w, r, http.StatusOK, "status", req, v)
}
