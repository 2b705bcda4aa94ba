package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is the outcome of a run, written as JSON and as Markdown.
type Report struct {
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Mode     string        `json:"mode"`
	Machine  Machine       `json:"machine"`
	Settings Settings      `json:"settings"`
	Seeding  *SeedResult   `json:"seeding,omitempty"`
	Results  []Result      `json:"results"`
	Bursts   []BurstResult `json:"burst_probes,omitempty"`
	RSS      []RSSResult   `json:"rss_probes,omitempty"`
	Targets  []Target      `json:"targets"`
	Notes    []string      `json:"notes,omitempty"`
	// Profiles are the odin profiles written (Config.ProfileDir).
	Profiles []ProfiledScenario `json:"profiles,omitempty"`

	// StoreProcesses: the store processes watched, and the store probes.
	StoreProcesses *StoreWatch `json:"store_processes,omitempty"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPUs      int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	// LoadAvgStart is /proc/loadavg when the run began: other work on the
	// machine makes every absolute figure noisy, ratios less so.
	LoadAvgStart string `json:"loadavg_start"`
}

// Settings are the parts of Config a reader needs to repeat a run.
type Settings struct {
	Keys          int      `json:"keys"`
	Seed          string   `json:"seed"`
	Concurrency   []int    `json:"concurrency"`
	Rounds        int      `json:"rounds"`
	RunDuration   string   `json:"run_duration"`
	RunRequests   int64    `json:"run_requests"`
	Rate          float64  `json:"rate_per_second,omitempty"`
	ColdCacheSize int      `json:"cold_cache_size"`
	NegativeTTL   string   `json:"negative_ttl"`
	Connections   int      `json:"grpc_connections"`
	ServerCPUs    string   `json:"server_cpus,omitempty"`
	LoadCPUs      string   `json:"load_cpus,omitempty"`
	Redis         bool     `json:"redis"`
	WorkDir       string   `json:"work_dir"`
	Scenarios     []string `json:"scenarios,omitempty"`
	ProfileDir    string   `json:"profile_dir,omitempty"`
}

// Result is one scenario at one concurrency level on both servers.
type Result struct {
	Scenario    string      `json:"scenario"`
	About       string      `json:"about"`
	Transport   string      `json:"transport"`
	Profile     string      `json:"profile"`
	Concurrency int         `json:"concurrency"`
	Keys        int         `json:"keys"`
	Odin        Measurement `json:"odin"`
	Baseline    Measurement `json:"baseline"`
	// Ratios are odin / baseline (RPSRatio: higher is better; the others:
	// lower is better); 0 when there is no baseline.
	CPURatio float64     `json:"cpu_per_req_ratio"`
	P50Ratio float64     `json:"p50_ratio"`
	P99Ratio float64     `json:"p99_ratio"`
	RPSRatio float64     `json:"rps_ratio"`
	Flood    *FloodCheck `json:"flood,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
}

func (r *Result) finish() {
	r.Odin.finish()
	r.Baseline.finish()
	b, o := r.Baseline, r.Odin
	r.CPURatio, r.P50Ratio, r.P99Ratio, r.RPSRatio = ratio(o.ServerCPUPerReqUS, b.ServerCPUPerReqUS),
		ratio(o.P50US, b.P50US), ratio(o.P99US, b.P99US), ratio(o.RPS, b.RPS)
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func newReport(c *Config) *Report {
	return &Report{
		Started: time.Now().UTC(), Mode: c.Mode,
		Machine: Machine{CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(), LoadAvgStart: LoadAvg()},
		Settings: Settings{Keys: c.Keys, Seed: c.Seed, Concurrency: c.Concurrency, Rounds: c.Rounds,
			RunDuration: c.Duration.String(), RunRequests: c.Requests, Rate: c.Rate, ColdCacheSize: c.ColdCacheSize,
			NegativeTTL: c.NegativeTTL.String(), Connections: c.Connections, ServerCPUs: c.ServerCPUs,
			LoadCPUs: c.LoadCPUs, Redis: c.RedisURL != "", WorkDir: c.WorkDir, Scenarios: c.Scenarios, ProfileDir: c.ProfileDir},
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func (r *Report) finish() {
	r.Finished = time.Now().UTC()
	r.Targets = evaluateTargets(r)
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

// WriteMarkdown writes the report as Markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## odin-load %s run, %s\n\n", r.Mode, r.Started.Format(time.RFC3339))
	fmt.Fprintf(&b, "Machine: %d CPUs, %s, %s; load average at start %s. Keys in PostgreSQL: %d",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.LoadAvgStart, r.Settings.Keys)
	if r.Seeding != nil {
		fmt.Fprintf(&b, " (%s)", seedNote(r.Seeding))
	}
	pace := "closed loop"
	if r.Settings.Rate > 0 {
		pace = fmt.Sprintf("paced at %.0f requests/s", r.Settings.Rate)
	}
	fmt.Fprintf(&b, ". Runs: %d round(s) of at most %s / %d requests per server, %s, interleaved baseline/odin.\n\n",
		r.Settings.Rounds, r.Settings.RunDuration, r.Settings.RunRequests, pace)
	if len(r.Results) > 0 {
		b.WriteString("| scenario | conc | server | requests | RPS | p50 µs | p90 µs | p99 µs | max µs | errors | non-OK | server CPU µs/req | generator CPU µs/req | loadavg (1 min) |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, res := range r.Results {
			for _, row := range []struct {
				name string
				m    Measurement
			}{{"baseline", res.Baseline}, {"odin", res.Odin}} {
				if row.m.Rounds == 0 {
					continue
				}
				m := row.m
				cpu := fmt.Sprintf("%.1f", m.ServerCPUPerReqUS)
				if m.ServerCPUNotMeasured {
					row.name, cpu = "proxy", "n/a"
				}
				fmt.Fprintf(&b, "| %s | %d | %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %d | %d | %s | %.1f | %s |\n",
					res.Scenario+transportNote(res), res.Concurrency, row.name, m.Requests, m.RPS, m.P50US, m.P90US, m.P99US, m.MaxUS,
					m.Errors, m.NonOK, cpu, m.LoadCPUPerReqUS, loadRange(m.LoadAvg))
			}
		}
		b.WriteString("\n| scenario | conc | CPU/req odin÷baseline | p50 ÷ | p99 ÷ | RPS ÷ | odin answered by |\n|---|---|---|---|---|---|---|\n")
		for _, res := range r.Results {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", res.Scenario+transportNote(res), res.Concurrency,
				fmtRatio(res.CPURatio), fmtRatio(res.P50Ratio), fmtRatio(res.P99Ratio), fmtRatio(res.RPSRatio), tiers(res.Odin.Server))
		}
		b.WriteString("\n")
		writeShareTable(&b, r)
	}
	writeStoreTable(&b, r)
	for _, res := range r.Results {
		for _, w := range res.Warnings {
			fmt.Fprintf(&b, "- warning, %s c=%d: %s\n", res.Scenario, res.Concurrency, w)
		}
		if f := res.Flood; f != nil {
			fmt.Fprintf(&b, "- unknown-key flood, c=%d: %d distinct keys over %.1f s, negative TTL %.0f s: %.0f PostgreSQL queries, bound %.0f (%s)\n",
				res.Concurrency, f.DistinctKeys, f.Seconds, f.NegativeTTL, f.StoreQueries, f.Bound, map[bool]string{true: "within", false: "EXCEEDED"}[f.WithinBound])
		}
	}
	for _, p := range r.Bursts {
		fmt.Fprintf(&b, "- burst, %s server: %d concurrent checks of one uncached key → %.0f PostgreSQL quer%s, %d allowed, %d errors, %.1f ms (loadavg %s)\n",
			p.Profile, p.Concurrent, p.StoreQueries, plural(p.StoreQueries, "y", "ies"), p.Allowed, p.Errors, p.MillisTotal, p.LoadAvg)
	}
	for _, p := range r.RSS {
		gc := "after a garbage collection"
		if !p.GCAfterWarm {
			gc = "no garbage collection after the warm-up: live heap is from an earlier one"
		}
		fmt.Fprintf(&b, "- RSS: %d keys cached (%.0f PostgreSQL lookups in %.0f s): RSS %.1f → %.1f MiB (%.0f B/key); live Go heap %.1f → %.1f MiB (%.0f B/key), %s, %.0f s after (loadavg %s)\n",
			p.Keys, p.StoreLookups, p.WarmSeconds, mib(float64(p.RSSBefore)), mib(float64(p.RSSAfter)), p.RSSPerKey,
			mib(p.HeapBefore), mib(p.LiveHeapAfter), p.LiveHeapPerKey, gc, p.SettleSeconds, p.LoadAvg)
	}
	if len(r.Targets) > 0 {
		b.WriteString("\n| target | measured | verdict |\n|---|---|---|\n")
		for _, t := range r.Targets {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", t.Name, t.Measured, t.Verdict)
		}
	}
	if len(r.Profiles) > 0 {
		fmt.Fprintf(&b, "\nodin was profiled (--profile %s) in: ", r.Settings.ProfileDir)
		for i, p := range r.Profiles {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s c=%d (%d × %d s, %.2f s of CPU sampled)", p.Scenario, p.Concurrency, p.Windows, p.Seconds, p.CPUSeconds)
		}
		b.WriteString(". Their odin CPU figures include the profiler's own cost. Files: <scenario>-cpu.pprof, -allocs.pprof, -top.txt.\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\nNote: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func seedNote(s *SeedResult) string {
	if s.Reused {
		return "seeded earlier, reused"
	}
	return fmt.Sprintf("seeded with COPY in %.1f s", s.Took.Seconds())
}

func transportNote(r Result) string {
	if r.Transport == "http" && !strings.Contains(r.Scenario, "http") && !strings.HasPrefix(r.Scenario, "proxy") {
		return " (http)"
	}
	return ""
}

func fmtRatio(f float64) string {
	if f == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", f)
}

// tiers summarises which tier answered odin's key lookups and how many
// PostgreSQL queries ran.
func tiers(c map[string]float64) string {
	cs := counters(c)
	var parts []string
	for _, t := range []string{"lru", "redis", "store", "stale"} {
		if v := cs.sum("odin_keystore_lookups_total", `tier="`+t+`"`); v > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", t, v))
		}
	}
	for _, t := range []string{"lru", "redis", "verified"} {
		if v := cs.sum("odin_authz_session_lookups_total", `tier="`+t+`"`); v > 0 {
			parts = append(parts, fmt.Sprintf("session-%s %.0f", t, v))
		}
	}
	if q := cs.sum("odin_keystore_store_queries_total"); q > 0 {
		parts = append(parts, fmt.Sprintf("PG queries %.0f", q))
	}
	if e := cs.sum("odin_keystore_redis_errors_total"); e > 0 {
		parts = append(parts, fmt.Sprintf("Redis errors %.0f", e))
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

func loadRange(list []string) string {
	if len(list) == 0 {
		return ""
	}
	lo, hi := "", ""
	var lof, hif float64
	for i, la := range list {
		var f float64
		_, _ = fmt.Sscanf(la, "%g", &f)
		one, _, _ := strings.Cut(la, " ")
		if i == 0 || f < lof {
			lo, lof = one, f
		}
		if i == 0 || f > hif {
			hi, hif = one, f
		}
	}
	if lo == hi {
		return lo
	}
	return lo + "–" + hi
}

func plural(n float64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func mib(b float64) float64 { return b / (1 << 20) }

// writeShareTable writes odin's time inside Check, told apart: its own
// share and the time waiting for PostgreSQL or Redis, per scenario.
func writeShareTable(b *strings.Builder, r *Report) {
	rows := 0
	for _, res := range r.Results {
		if res.Odin.OwnShare != nil {
			rows++
		}
	}
	if rows == 0 {
		return
	}
	b.WriteString("odin's time inside Check (transport excluded), bucket estimates from the changes of `odin_authz_check_own_seconds` and `odin_authz_check_store_wait_seconds`: its own share (every check), and the time waiting for PostgreSQL or Redis (the checks that waited).\n\n")
	b.WriteString("| scenario | conc | own p50 / p90 / p99 µs | checks | store wait p50 / p90 / p99 µs | checks that waited |\n|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		own := res.Odin.OwnShare
		if own == nil {
			continue
		}
		wait, waited := "—", "0"
		if w := res.Odin.StoreWait; w != nil {
			wait, waited = fmt.Sprintf("%.1f / %.1f / %.1f", w.P50US, w.P90US, w.P99US), fmt.Sprintf("%.0f", w.Count)
		}
		fmt.Fprintf(b, "| %s | %d | %.1f / %.1f / %.1f | %.0f | %s | %s |\n", res.Scenario+transportNote(res), res.Concurrency,
			own.P50US, own.P90US, own.P99US, own.Count, wait, waited)
	}
	b.WriteString("\n")
}
