package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// harness is the state of one Run.
type harness struct {
	cfg      Config
	log      *slog.Logger
	rep      *Report
	dbURL    string
	issuer   *issuer
	baseline *Process
	prefixes []string // Redis prefixes to clean up
	servers  int      // odin servers started, to name their logs

	store *storeWatcher // nil: store CPU not measured (remote)
}

// Run seeds the database, starts the baseline and odin servers, runs the
// scenarios and probes, and returns the report. When ctx ends or MaxTime
// passes it stops and returns what was measured so far with the error.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.MaxTime)
	defer cancel()
	if cfg.Remote != nil {
		cfg.SeedInPlace = true // the deployment's own database
	}
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "odin-load-")
		if err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		cfg.WorkDir = dir
	}
	if cfg.LoadCPUs != "" {
		if err := pinSelf(cfg.LoadCPUs); err != nil {
			return nil, err
		}
		runtime.GOMAXPROCS(cpuCount(cfg.LoadCPUs))
	}
	h := &harness{cfg: cfg, log: log, rep: newReport(&cfg)}
	defer h.cleanup()
	err := h.run(ctx)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("stopped after %s (--max-time or interrupt): %w", time.Since(h.rep.Started).Round(time.Second), err)
	}
	if err != nil {
		h.rep.Notes = append(h.rep.Notes, "incomplete: "+err.Error())
	}
	h.rep.finish()
	return h.rep, err
}

func (h *harness) run(ctx context.Context) error {
	dbURL, seeded, err := prepareDatabase(ctx, &h.cfg, h.log)
	if err != nil {
		return err
	}
	h.dbURL, h.rep.Seeding = dbURL, &seeded
	if h.cfg.Remote == nil {
		h.store = newStoreWatcher(ctx, h.cfg.RedisURL)
		h.rep.StoreProcesses = h.store.watch
	}
	list := buildScenarios(&h.cfg, &material{})
	m, err := h.material(ctx, list)
	if err != nil {
		return err
	}
	list = buildScenarios(&h.cfg, m)
	if len(list) > 0 {
		if h.baseline, err = h.startBaseline(ctx); err != nil {
			return err
		}
	}
	for _, prof := range profiles(list) {
		if err := h.runProfile(ctx, prof, list, m); err != nil {
			return err
		}
	}
	if len(list) > 0 {
		if err := h.usageProbe(ctx); err != nil {
			h.rep.Notes = append(h.rep.Notes, "usage probe: "+err.Error())
		}
	}
	if h.cfg.RSSKeys > 0 {
		r, err := h.rssProbe(ctx, m)
		if err != nil {
			return err
		}
		h.rep.RSS = append(h.rep.RSS, r)
	}
	return nil
}

// Prepare creates, migrates and seeds the load database of cfg, as Run
// does first (`odin-load seed`: seeding a million keys once, ahead of time).
func Prepare(ctx context.Context, cfg Config, log *slog.Logger) (SeedResult, error) {
	if cfg.OdinBinary == "" {
		return SeedResult{}, errors.New("the odin binary is required: its `odin migrate` creates the schema")
	}
	if err := checkLoopbackURL(cfg.DatabaseURL); err != nil {
		return SeedResult{}, fmt.Errorf("database URL: %w", err)
	}
	if cfg.Keys < 1 {
		return SeedResult{}, errors.New("keys must be positive")
	}
	_, res, err := prepareDatabase(ctx, &cfg, log)
	return res, err
}

// prepareDatabase creates (unless SeedInPlace), migrates (with the odin
// binary under test, so the schema is the one it expects) and seeds the
// load database, and returns its URL.
func prepareDatabase(ctx context.Context, cfg *Config, log *slog.Logger) (string, SeedResult, error) {
	dbURL := cfg.DatabaseURL
	if !cfg.SeedInPlace {
		var err error
		if dbURL, err = EnsureDatabase(ctx, cfg.DatabaseURL, "odin_load_"+strconv.Itoa(cfg.Keys)); err != nil {
			return "", SeedResult{}, err
		}
	}
	if cfg.OdinBinary != "" && cfg.Remote == nil { // a deployment migrates itself
		mctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(mctx, cfg.OdinBinary, "migrate")
		cmd.Env = append(childEnv(), "ODIN_DATABASE_URL="+dbURL)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", SeedResult{}, fmt.Errorf("odin migrate: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	res, err := Seed(ctx, dbURL, Keys{Seed: cfg.Seed}, cfg.Keys, log)
	return dbURL, res, err
}

// material derives the keys and mints the tokens the scenarios need,
// before anything is measured.
func (h *harness) material(ctx context.Context, list []*scenario) (*material, error) {
	c := &h.cfg
	keys := Keys{Seed: c.Seed}
	m := &material{keys: keys, n: c.Keys, runCap: c.Requests, walk: newPermutation(c.Keys)}
	for i := range c.CachedKeys {
		m.cachedKeys = append(m.cachedKeys, keys.Known(i))
	}
	for i := range c.RedisKeys {
		m.redisKeys = append(m.redisKeys, keys.Known(c.CachedKeys+i))
	}
	for i := range c.UnknownKeys {
		m.unknown = append(m.unknown, keys.Unknown(i))
	}
	needJWT, needFirst := false, false
	for _, s := range list {
		needJWT = needJWT || s.needsJWT
		needFirst = needFirst || s.name == "jwt-first-sight"
	}
	if !needJWT {
		return m, nil
	}
	var mint minter
	if c.Remote != nil {
		mint = httpMinter{url: c.Remote.MintURL, client: &http.Client{Timeout: 10 * time.Second}}
	} else {
		var err error
		if h.issuer, err = startIssuer(); err != nil {
			return nil, err
		}
		mint = h.issuer
	}
	var err error
	start := time.Now()
	workers := runtime.GOMAXPROCS(0)
	if m.sessions, err = mint.mint(ctx, "cached_", c.CachedSessions, workers); err != nil {
		return nil, err
	}
	if needFirst {
		for ri := range len(c.Concurrency) * c.Rounds {
			toks, err := mint.mint(ctx, fmt.Sprintf("r%d_", ri), c.FirstSightTokens, workers)
			if err != nil {
				return nil, err
			}
			m.firstSight = append(m.firstSight, toks)
		}
	}
	h.log.Info("session tokens minted", "tokens", c.CachedSessions+len(m.firstSight)*c.FirstSightTokens, "took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// runProfile starts one odin server, runs its probes and scenarios, and
// stops it.
func (h *harness) runProfile(ctx context.Context, prof string, list []*scenario, m *material) error {
	var odin *Process
	var err error
	if h.cfg.Remote != nil {
		odin, err = h.startRemote(ctx)
	} else {
		odin, err = h.startOdin(ctx, h.profileOptions(prof))
	}
	if err != nil {
		return err
	}
	defer odin.Stop()
	// The burst probe counts one replica's queries: it needs a server of
	// the harness's own.
	if h.cfg.Burst > 0 && h.cfg.Remote == nil && (prof == profileMain || prof == profileCold) {
		for b := range burstProbes {
			r, err := h.burstProbe(ctx, odin, prof, m, m.n-1-b)
			if err != nil {
				return err
			}
			h.rep.Bursts = append(h.rep.Bursts, r)
		}
	}
	for _, s := range list {
		if s.profile != prof {
			continue
		}
		if err := h.runScenario(ctx, s, odin); err != nil {
			return err
		}
		if !odin.Alive() {
			return fmt.Errorf("odin (%s) exited during %s; see its log in %s", prof, s.name, h.cfg.WorkDir)
		}
	}
	return nil
}

// runScenario measures one scenario at every concurrency level, the
// baseline and odin alternating round by round.
func (h *harness) runScenario(ctx context.Context, s *scenario, odin *Process) error {
	for ci, conc := range h.cfg.Concurrency {
		res := Result{Scenario: s.name, About: s.about, Transport: "grpc", Concurrency: conc, Keys: h.cfg.Keys, Profile: s.profile}
		if s.http {
			res.Transport = "http"
		}
		var flood FloodCheck
		var prof *profileSet
		if h.cfg.ProfileDir != "" && !s.proxy && odin.remote == nil {
			prof = &profileSet{ops: odin.Addrs["ops"], seconds: profileWindow(h.cfg.Duration)}
		}
		for round := range h.cfg.Rounds {
			ri := ci*h.cfg.Rounds + round
			if !s.proxy {
				if _, _, err := h.measure(ctx, s, h.baseline, false, ri, conc, &res.Baseline, nil); err != nil {
					return err
				}
			}
			st, delta, err := h.measure(ctx, s, odin, true, ri, conc, &res.Odin, prof)
			if err != nil {
				return err
			}
			if s.name == "invalid-flood" {
				flood.add(st, delta, int64(h.cfg.UnknownKeys), h.cfg.NegativeTTL)
			}
			if s.warm != nil && res.Odin.warmMismatch > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("round %d: %d of %d warm-up checks were not %s",
					round+1, res.Odin.warmMismatch, len(s.warm(ri)), s.warmExpect))
				res.Odin.warmMismatch = 0
			}
		}
		if s.name == "invalid-flood" {
			flood.finish()
			res.Flood = &flood
		}
		res.finish()
		h.rep.Results = append(h.rep.Results, res)
		if prof != nil {
			name := s.name
			if len(h.cfg.Concurrency) > 1 {
				name += "-c" + strconv.Itoa(conc)
			}
			written, err := prof.write(h.cfg.ProfileDir, name, conc)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			written.Scenario, written.Concurrency = s.name, conc
			h.rep.Profiles = append(h.rep.Profiles, written)
		}
		h.log.Info("measured", "scenario", s.name, "concurrency", conc,
			"odin_rps", int(res.Odin.RPS), "baseline_rps", int(res.Baseline.RPS),
			"odin_cpu_us", round1(res.Odin.ServerCPUPerReqUS), "baseline_cpu_us", round1(res.Baseline.ServerCPUPerReqUS),
			"odin_p99_us", res.Odin.P99US, "loadavg", LoadAvg())
	}
	return nil
}

// measure runs one bounded run of s against p and folds it into m. With
// prof it profiles p during the run.
func (h *harness) measure(ctx context.Context, s *scenario, p *Process, isOdin bool, ri, conc int, m *Measurement, prof *profileSet) (*runStats, counters, error) {
	// The proxy scenario loads a stack the harness did not start: its
	// servers' CPU and counters are not this odin's, unless odin is a
	// remote deployment, the proxy's own ext_authz servers.
	own := isOdin && (!s.proxy || p.remote != nil)
	if s.warm != nil && own {
		for _, addr := range p.grpcAddrs() { // every replica holds the set
			mismatch, err := warmUp(ctx, addr, s.warm(ri), s.warmExpect)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: warm-up of %s: %w", s.name, addr, err)
			}
			m.warmMismatch += mismatch
		}
	}
	r := run{addr: p.Addrs["grpc"], balanced: p.remote != nil, concurrency: conc, connections: h.cfg.Connections,
		requests: h.cfg.Requests, duration: h.cfg.Duration, rate: h.cfg.Rate, timeout: h.cfg.Timeout,
		cred: func(i int64) credential { return s.cred(ri, i) }, cycled: !s.fresh}
	if s.requestCap > 0 {
		r.requests = min(r.requests, s.requestCap)
	}
	switch {
	case s.proxy:
		r.addr = strings.TrimSuffix(h.cfg.ProxyURL, "/")
		m.ServerCPUNotMeasured = !own
	case s.http:
		r.addr = "http://" + p.Addrs["http"]
	}
	var before counters
	var err error
	if own {
		if before, err = p.counters(ctx); err != nil {
			return nil, nil, err
		}
	}
	time.Sleep(100 * time.Millisecond) // let the warm-up's and the previous run's tail settle
	la := LoadAvg()
	cpu := func() (time.Duration, error) {
		switch {
		case !own && s.proxy:
			return 0, nil
		case p.remote != nil:
			return remoteCPU(ctx, p.remote.ops)
		}
		return CPUTime(p.PID())
	}
	store0 := h.store.snapshot(ctx)
	cpu0, err := cpu()
	if err != nil {
		return nil, nil, err
	}
	self0, err := CPUTime(os.Getpid())
	if err != nil {
		return nil, nil, err
	}
	var profiling *pendingProfiles
	if prof != nil {
		profiling = prof.start(ctx)
	}
	var st *runStats
	if s.http {
		st, err = runHTTP(ctx, r)
	} else {
		st, err = runGRPC(ctx, r)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s on %s: %w", s.name, p.Name, err)
	}
	cpu1, err := cpu()
	if err != nil {
		return nil, nil, err
	}
	self1, _ := CPUTime(os.Getpid())
	store1 := h.store.snapshot(ctx)
	var delta counters
	if own {
		after, err := p.counters(ctx)
		if err != nil {
			return nil, nil, err
		}
		delta = before.delta(after)
		if !s.http {
			st.nonOK = int64(delta.denials())
		}
	}
	if profiling != nil {
		if err := prof.wait(profiling); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	m.add(st, cpu1-cpu0, self1-self0, la, delta)
	m.addStore(store0, store1, delta)
	if own && len(h.prefixes) > 0 {
		h.store.sampleEntries(ctx, s.name, h.prefixes[len(h.prefixes)-1])
	}
	return st, delta, ctx.Err()
}

// cleanup stops the children and the issuer and removes the Redis keys
// the servers wrote.
func (h *harness) cleanup() {
	h.store.close()
	if h.baseline != nil {
		h.baseline.Stop()
	}
	if h.issuer != nil {
		h.issuer.close()
	}
	if len(h.prefixes) == 0 {
		return
	}
	opts, err := redis.ParseURL(h.cfg.RedisURL)
	if err != nil {
		return
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, prefix := range h.prefixes {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var batch []string
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 1000 {
				c.Del(ctx, batch...)
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			c.Del(ctx, batch...)
		}
	}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
