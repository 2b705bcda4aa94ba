package loadtest

import (
	"fmt"
	"strings"
)

// Target is one performance target of the load harness, judged on what this run measured.
type Target struct {
	Name     string `json:"name"`
	Measured string `json:"measured"`
	// Verdict is "met", "missed by …" or "not measured …".
	Verdict string `json:"verdict"`
}

const (
	coldP99LimitUS  = 5000
	rssPerKeyLimit  = 400
	targetKeysLarge = 1_000_000
)

// evaluateTargets judges the targets. A figure measured under
// other conditions than the target names (fewer keys, another
// concurrency) is reported but judged "not measured".
func evaluateTargets(r *Report) []Target {
	var out []Target
	ratioTarget := func(name, scenario string, limit float64) {
		t := Target{Name: name}
		worst, at := 0.0, 0
		for _, res := range r.Results {
			if res.Scenario == scenario && res.CPURatio > 0 && res.CPURatio >= worst {
				worst, at = res.CPURatio, res.Concurrency
			}
		}
		if worst == 0 {
			t.Measured, t.Verdict = "—", "not measured"
		} else {
			t.Measured = fmt.Sprintf("%.2f× baseline CPU per check (worst concurrency: %d)", worst, at)
			t.Verdict = judge(worst, limit, "×")
		}
		out = append(out, t)
	}
	ratioTarget("cached API key: CPU per check ≤ 1.25× baseline", "cached-key", 1.25)
	ratioTarget("cached session JWT: CPU per check ≤ 1.25× baseline", "cached-session", 1.25)
	ratioTarget("first-sight RS256 JWT: CPU per check ≤ 2× baseline", "jwt-first-sight", 2)

	cold := Target{Name: "cold key p99 < 5 ms at concurrency 32 with 1M keys", Measured: "—", Verdict: "not measured"}
	for _, res := range r.Results {
		if res.Scenario != "cold-key" || res.Concurrency != 32 {
			continue
		}
		cold.Measured = fmt.Sprintf("p99 %.2f ms with %d keys", res.Odin.P99US/1000, res.Keys)
		if res.Keys >= targetKeysLarge {
			cold.Verdict = judge(res.Odin.P99US/1000, coldP99LimitUS/1000, " ms")
		} else {
			cold.Verdict = fmt.Sprintf("not measured at 1M keys (%s at %d)", judge(res.Odin.P99US/1000, coldP99LimitUS/1000, " ms"), res.Keys)
		}
	}
	out = append(out, cold)

	burst := Target{Name: "burst of concurrent checks of one uncached key → exactly one PostgreSQL query", Measured: "—", Verdict: "not measured"}
	if len(r.Bursts) > 0 {
		var qs []string
		ok, n := true, 0
		for _, b := range r.Bursts {
			qs = append(qs, fmt.Sprintf("%.0f", b.StoreQueries))
			ok = ok && b.StoreQueries == 1 && b.Errors == 0
			n = b.Concurrent
		}
		burst.Measured = fmt.Sprintf("%d probes of %d concurrent checks: %s queries", len(r.Bursts), n, strings.Join(qs, ", "))
		burst.Verdict = "met"
		if !ok {
			burst.Verdict = "missed"
		}
		if n < 1000 {
			burst.Verdict += fmt.Sprintf(" (with %d, not 1000, concurrent checks)", n)
		}
	}
	out = append(out, burst)

	flood := Target{Name: "unknown-key flood: ≤ 1 PostgreSQL query per distinct key per negative TTL", Measured: "—", Verdict: "not measured"}
	var q, bound float64
	for _, res := range r.Results {
		if f := res.Flood; f != nil {
			q, bound = q+f.StoreQueries, bound+f.Bound
			flood.Verdict = "met"
		}
	}
	if flood.Verdict == "met" {
		flood.Measured = fmt.Sprintf("%.0f queries, bound %.0f", q, bound)
		if q > bound {
			flood.Verdict = fmt.Sprintf("missed by %.0f queries", q-bound)
		}
	}
	out = append(out, flood)

	rss := Target{Name: "< 400 B RSS per cached key at 1M keys", Measured: "—", Verdict: "not measured"}
	for _, p := range r.RSS {
		rss.Measured = fmt.Sprintf("%.0f B/key RSS (%.0f B/key live Go heap) at %d keys", p.RSSPerKey, p.LiveHeapPerKey, p.Keys)
		if p.Keys >= targetKeysLarge {
			rss.Verdict = judge(p.RSSPerKey, rssPerKeyLimit, " B")
		} else {
			rss.Verdict = fmt.Sprintf("not measured at 1M keys (%s at %d)", judge(p.RSSPerKey, rssPerKeyLimit, " B"), p.Keys)
		}
	}
	out = append(out, rss)
	return out
}

// judge says whether got is within limit, and if not by how much.
func judge(got, limit float64, unit string) string {
	if got <= limit {
		return "met"
	}
	return fmt.Sprintf("missed by %.2f%s (%.0f%% over)", got-limit, unit, (got/limit-1)*100)
}
