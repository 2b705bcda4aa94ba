package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// maxProfileSeconds bounds one CPU or allocation profile: odin's ops server
// refuses a profile as long as its 10 s write timeout.
const maxProfileSeconds = 9

// topEntries is how many functions and packages a -top.txt file lists.
const topEntries = 25

// ProfiledScenario names the profiles written for one scenario at one
// concurrency level (Config.ProfileDir).
type ProfiledScenario struct {
	Scenario    string `json:"scenario"`
	Concurrency int    `json:"concurrency"`
	// CPU, Allocs and Top are the files written: the CPU profile, the
	// allocation profile (alloc_space and alloc_objects) and their top
	// entries as text.
	CPU    string `json:"cpu_profile"`
	Allocs string `json:"allocs_profile"`
	Top    string `json:"top"`
	// Windows is how many profiled windows were merged, each of Seconds.
	Windows int `json:"windows"`
	Seconds int `json:"seconds_each"`
	// CPUSeconds is the CPU time the CPU profile sampled.
	CPUSeconds float64 `json:"cpu_seconds_sampled"`
}

// profileSet gathers odin's profiles over the rounds of one scenario at one
// concurrency level: a CPU profile and an allocation delta per measured run,
// merged when the scenario ends.
type profileSet struct {
	ops     string // odin's ops address
	seconds int
	cpu     []*profile.Profile
	allocs  []*profile.Profile
}

// profileWindow is the length of the profile taken during one run of d:
// whole seconds (net/http/pprof's unit), at least one, at most
// maxProfileSeconds, and not longer than the run unless it is under a
// second.
func profileWindow(d time.Duration) int {
	return min(max(int(d/time.Second), 1), maxProfileSeconds)
}

// pendingProfiles are the two profile requests of one run, under way.
type pendingProfiles struct {
	cpu, allocs chan profileResult
}

type profileResult struct {
	p   *profile.Profile
	err error
}

// start asks odin for a CPU profile and an allocation delta of the next
// s.seconds; the run starts right after.
func (s *profileSet) start(ctx context.Context) *pendingProfiles {
	p := &pendingProfiles{cpu: make(chan profileResult, 1), allocs: make(chan profileResult, 1)}
	q := "?seconds=" + strconv.Itoa(s.seconds)
	go func() { p.cpu <- fetchProfile(ctx, "http://"+s.ops+"/debug/pprof/profile"+q, s.seconds) }()
	go func() { p.allocs <- fetchProfile(ctx, "http://"+s.ops+"/debug/pprof/allocs"+q, s.seconds) }()
	return p
}

// wait waits for both profiles of a run and keeps them.
func (s *profileSet) wait(p *pendingProfiles) error {
	cpu, allocs := <-p.cpu, <-p.allocs
	if err := errors.Join(cpu.err, allocs.err); err != nil {
		return fmt.Errorf("profile odin: %w", err)
	}
	s.cpu, s.allocs = append(s.cpu, cpu.p), append(s.allocs, allocs.p)
	return nil
}

// fetchProfile GETs one profile from net/http/pprof and parses it.
func fetchProfile(ctx context.Context, url string, seconds int) profileResult {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return profileResult{err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return profileResult{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return profileResult{err: fmt.Errorf("%s: %w", url, err)}
	}
	if resp.StatusCode != http.StatusOK {
		return profileResult{err: fmt.Errorf("%s: %s: %s (is odin started with --pprof?)", url, resp.Status, strings.TrimSpace(string(body)))}
	}
	p, err := profile.ParseData(body)
	if err != nil {
		return profileResult{err: fmt.Errorf("%s: %w", url, err)}
	}
	return profileResult{p: p}
}

// write merges the runs' profiles and writes <name>-cpu.pprof,
// <name>-allocs.pprof and <name>-top.txt into dir.
func (s *profileSet) write(dir, name string, conc int) (ProfiledScenario, error) {
	out := ProfiledScenario{Windows: len(s.cpu), Seconds: s.seconds}
	if len(s.cpu) == 0 {
		return out, errors.New("no profile was taken")
	}
	cpu, err := profile.Merge(s.cpu)
	if err != nil {
		return out, fmt.Errorf("merge CPU profiles: %w", err)
	}
	allocs, err := profile.Merge(s.allocs)
	if err != nil {
		return out, fmt.Errorf("merge allocation profiles: %w", err)
	}
	out.CPU, out.Allocs, out.Top = filepath.Join(dir, name+"-cpu.pprof"), filepath.Join(dir, name+"-allocs.pprof"), filepath.Join(dir, name+"-top.txt")
	for path, p := range map[string]*profile.Profile{out.CPU: cpu, out.Allocs: allocs} {
		if err := writeProfile(path, p); err != nil {
			return out, err
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "odin authz, scenario %s, concurrency %d: %d measured run(s) profiled, %d s each\n", name, conc, out.Windows, out.Seconds)
	if i := sampleIndex(cpu, "cpu"); i >= 0 {
		out.CPUSeconds = float64(total(cpu, i)) / 1e9
		writeTop(&b, "CPU", cpu, i, fmtSeconds)
	}
	for _, st := range []string{"alloc_space", "alloc_objects"} {
		if i := sampleIndex(allocs, st); i >= 0 {
			f := fmtBytes
			if st == "alloc_objects" {
				f = fmtCount
			}
			writeTop(&b, "allocations, "+st, allocs, i, f)
		}
	}
	if err := os.WriteFile(out.Top, []byte(b.String()), 0o644); err != nil {
		return out, fmt.Errorf("write %s: %w", out.Top, err)
	}
	return out, nil
}

func writeProfile(path string, p *profile.Profile) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	if err := p.Write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func sampleIndex(p *profile.Profile, typ string) int {
	for i, st := range p.SampleType {
		if st.Type == typ {
			return i
		}
	}
	return -1
}

func total(p *profile.Profile, i int) int64 {
	var t int64
	for _, s := range p.Sample {
		t += s.Value[i]
	}
	return t
}

// frames are the functions of one location, innermost (inlined) first.
func frames(loc *profile.Location) []string {
	var out []string
	for _, l := range loc.Line {
		if l.Function != nil {
			out = append(out, l.Function.Name)
		}
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("0x%x", loc.Address))
	}
	return out
}

// packageOf is the import path of a Go function name such as
// "github.com/a/b/c.(*T).M" (github.com/a/b/c) or "runtime.mallocgc".
func packageOf(fn string) string {
	slash := strings.LastIndexByte(fn, '/')
	if dot := strings.IndexByte(fn[slash+1:], '.'); dot >= 0 {
		return fn[:slash+1+dot]
	}
	return fn
}

type topRow struct {
	name      string
	flat, cum int64
}

// tops sums value i of p per function (flat: the sample's innermost frame;
// cum: every function on its stack, once per sample) and per package
// (flat).
func tops(p *profile.Profile, i int) (funcs, pkgs []topRow) {
	byFunc, byPkg := map[string]*topRow{}, map[string]*topRow{}
	row := func(m map[string]*topRow, name string) *topRow {
		r := m[name]
		if r == nil {
			r = &topRow{name: name}
			m[name] = r
		}
		return r
	}
	for _, s := range p.Sample {
		v := s.Value[i]
		if v == 0 {
			continue
		}
		seen := map[string]bool{}
		for li, loc := range s.Location {
			for fi, fn := range frames(loc) {
				if li == 0 && fi == 0 {
					row(byFunc, fn).flat += v
					row(byPkg, packageOf(fn)).flat += v
				}
				if !seen[fn] {
					seen[fn] = true
					row(byFunc, fn).cum += v
				}
			}
		}
	}
	for _, r := range byFunc {
		funcs = append(funcs, *r)
	}
	for _, r := range byPkg {
		pkgs = append(pkgs, *r)
	}
	byFlat := func(a, b topRow) int {
		return cmp.Or(cmp.Compare(b.flat, a.flat), cmp.Compare(b.cum, a.cum), strings.Compare(a.name, b.name))
	}
	slices.SortFunc(funcs, byFlat)
	slices.SortFunc(pkgs, byFlat)
	return funcs, pkgs
}

// writeTop writes the top functions by flat and by cum value and the top
// packages by flat value, in the layout of `go tool pprof -top`.
func writeTop(b *strings.Builder, what string, p *profile.Profile, i int, f func(int64) string) {
	t := total(p, i)
	funcs, pkgs := tops(p, i)
	pct := func(v int64) float64 {
		if t == 0 {
			return 0
		}
		return 100 * float64(v) / float64(t)
	}
	fmt.Fprintf(b, "\n== %s: total %s, %d samples ==\n", what, f(t), len(p.Sample))
	list := func(title string, rows []topRow, withCum bool) {
		fmt.Fprintf(b, "\n-- %s --\n%10s %6s %6s", title, "flat", "flat%", "sum%")
		if withCum {
			fmt.Fprintf(b, " %10s %6s", "cum", "cum%")
		}
		b.WriteString("\n")
		var sum int64
		for _, r := range rows[:min(topEntries, len(rows))] {
			sum += r.flat
			fmt.Fprintf(b, "%10s %5.1f%% %5.1f%%", f(r.flat), pct(r.flat), pct(sum))
			if withCum {
				fmt.Fprintf(b, " %10s %5.1f%%", f(r.cum), pct(r.cum))
			}
			fmt.Fprintf(b, "  %s\n", r.name)
		}
	}
	list("functions by flat", funcs, true)
	byCum := slices.Clone(funcs)
	slices.SortStableFunc(byCum, func(a, b topRow) int { return cmp.Compare(b.cum, a.cum) })
	list("functions by cum", byCum, true)
	list("packages by flat", pkgs, false)
}

func fmtSeconds(v int64) string { return fmt.Sprintf("%.2fs", float64(v)/1e9) }
func fmtCount(v int64) string   { return strconv.FormatInt(v, 10) }
func fmtBytes(v int64) string {
	switch a := math.Abs(float64(v)); {
	case a >= 1<<30:
		return fmt.Sprintf("%.2fGB", float64(v)/(1<<30))
	case a >= 1<<20:
		return fmt.Sprintf("%.2fMB", float64(v)/(1<<20))
	case a >= 1<<10:
		return fmt.Sprintf("%.1fkB", float64(v)/(1<<10))
	}
	return fmt.Sprintf("%dB", v)
}
