package loadtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/pprof/profile"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// odinPackages prefixes the functions of odin's own packages.
const odinPackages = "github.com/odin-scan/odin-authz/"

// TestRunWritesOdinProfiles runs cold-key for two seconds with ProfileDir
// against a real odin authz and checks the files are profiles that sampled
// odin's own code, and the report names them. cold-key spends most of its
// CPU in odin's own packages (the key lookup), so even a loaded machine's
// few samples find them.
func TestRunWritesOdinProfiles(t *testing.T) {
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	cfg := ShortConfig()
	cfg.Mode = "test"
	cfg.OdinBinary = buildOdin(t)
	cfg.DatabaseURL, cfg.SeedInPlace = db, true
	cfg.RedisURL, cfg.RedisPrefix = redisURL, prefix
	cfg.Keys, cfg.CachedKeys = 300, 20
	cfg.Scenarios = []string{"cold-key"}
	cfg.Concurrency, cfg.Rounds = []int{8}, 1
	cfg.Duration, cfg.Requests = 2*time.Second, 10_000_000
	cfg.Burst = 0
	cfg.MaxTime = 60 * time.Second
	cfg.WorkDir = t.TempDir()
	cfg.ProfileDir = t.TempDir()
	baselineSelf(&cfg)

	rep, err := Run(context.Background(), cfg, discardLogger())
	if err != nil {
		t.Fatalf("Run: %v (server logs in %s)", err, cfg.WorkDir)
	}
	dir := cfg.ProfileDir
	want := []ProfiledScenario{{Scenario: "cold-key", Concurrency: 8, Windows: 1, Seconds: 2,
		CPU: filepath.Join(dir, "cold-key-cpu.pprof"), Allocs: filepath.Join(dir, "cold-key-allocs.pprof"), Top: filepath.Join(dir, "cold-key-top.txt")}}
	if len(rep.Profiles) == 1 {
		want[0].CPUSeconds = rep.Profiles[0].CPUSeconds
	}
	if diff := cmp.Diff(want, rep.Profiles); diff != "" {
		t.Fatalf("report's profiles (-want, +got):\n%s", diff)
	}
	if rep.Profiles[0].CPUSeconds <= 0 {
		t.Errorf("CPU sampled %v s, want some", rep.Profiles[0].CPUSeconds)
	}
	for path, sampleType := range map[string]string{want[0].CPU: "cpu", want[0].Allocs: "alloc_space"} {
		p := readProfile(t, path)
		i := sampleIndex(p, sampleType)
		if i < 0 {
			t.Errorf("%s: no %s values (sample types %v)", path, sampleType, p.SampleType)
			continue
		}
		if total(p, i) <= 0 {
			t.Errorf("%s: %s total %d, want positive", path, sampleType, total(p, i))
		}
		if !sampledOdin(p, i) {
			t.Errorf("%s: none of %d %s samples has a function of %s on its stack", path, len(p.Sample), sampleType, odinPackages)
		}
	}
	top, err := os.ReadFile(want[0].Top)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"== CPU: total", "== allocations, alloc_space: total", "-- functions by cum --", odinPackages} {
		if !strings.Contains(string(top), s) {
			t.Errorf("%s lacks %q:\n%s", want[0].Top, s, top)
		}
	}
}

func readProfile(t *testing.T, path string) *profile.Profile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := p.CheckValid(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// sampledOdin reports whether a sample with a positive value i has one of
// odin's functions on its stack.
func sampledOdin(p *profile.Profile, i int) bool {
	for _, s := range p.Sample {
		if s.Value[i] <= 0 {
			continue
		}
		for _, loc := range s.Location {
			for _, fn := range frames(loc) {
				if strings.HasPrefix(fn, odinPackages) {
					return true
				}
			}
		}
	}
	return false
}

func TestProfileWindow(t *testing.T) {
	for _, tc := range []struct {
		run  time.Duration
		want int
	}{
		{400 * time.Millisecond, 1},
		{1500 * time.Millisecond, 1},
		{2 * time.Second, 2},
		{5 * time.Second, 5},
		{time.Minute, maxProfileSeconds},
	} {
		if got := profileWindow(tc.run); got != tc.want {
			t.Errorf("profileWindow(%s) = %d, want %d", tc.run, got, tc.want)
		}
	}
}

func TestTops(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	check, mallocgc, lookup := fn(1, odinPackages+"internal/extauthz.(*Server).Check"), fn(2, "runtime.mallocgc"), fn(3, odinPackages+"keystore.(*Store).Lookup")
	// Location 2: Lookup inlined into Check.
	l1 := &profile.Location{ID: 1, Line: []profile.Line{{Function: mallocgc}}}
	l2 := &profile.Location{ID: 2, Line: []profile.Line{{Function: lookup}, {Function: check}}}
	l3 := &profile.Location{ID: 3, Line: []profile.Line{{Function: check}}}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{l1, l2}, Value: []int64{30}},
			{Location: []*profile.Location{l2}, Value: []int64{50}},
			{Location: []*profile.Location{l3, l3}, Value: []int64{20}}, // recursion counts once in cum
		},
	}
	funcs, pkgs := tops(p, 0)
	wantFuncs := []topRow{
		{name: lookup.Name, flat: 50, cum: 80},
		{name: mallocgc.Name, flat: 30, cum: 30},
		{name: check.Name, flat: 20, cum: 100},
	}
	wantPkgs := []topRow{
		{name: odinPackages + "keystore", flat: 50},
		{name: "runtime", flat: 30},
		{name: odinPackages + "internal/extauthz", flat: 20},
	}
	if diff := cmp.Diff(wantFuncs, funcs, cmp.AllowUnexported(topRow{})); diff != "" {
		t.Errorf("functions (-want, +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantPkgs, pkgs, cmp.AllowUnexported(topRow{})); diff != "" {
		t.Errorf("packages (-want, +got):\n%s", diff)
	}
}
