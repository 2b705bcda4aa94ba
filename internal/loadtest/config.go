package loadtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"slices"
	"time"
)

// Config is one load-test run. ShortConfig and LongConfig give the two
// presets; cmd/odin-load binds flags onto one of them.
type Config struct {
	// OdinBinary is the `odin` executable to measure (go build -o … ./cmd/odin).
	OdinBinary string
	// DatabaseURL is a loopback PostgreSQL URL. The harness creates the
	// database odin_load_<keys> beside it (on the same server), migrates it
	// with `odin migrate` and seeds it.
	DatabaseURL string
	// SeedInPlace uses the database of DatabaseURL itself instead.
	SeedInPlace bool
	// RedisURL is a loopback Redis; empty skips the scenarios that need it.
	RedisURL string
	// RedisPrefix is prepended to the per-server prefixes (default "odinload:").
	RedisPrefix string

	// Keys is how many API keys the database holds; Seed names the set.
	Keys int
	Seed string

	// Scenarios to run, by name; empty: all; ["none"]: only the RSS probe.
	Scenarios []string
	// Concurrency levels: closed-loop workers sending Check back to back.
	Concurrency []int
	// Rounds per scenario and concurrency; each round runs the baseline
	// then odin (A B A B …), so both see the machine in the same state.
	Rounds int
	// Duration and Requests bound every run: it ends at whichever comes first.
	Duration time.Duration
	Requests int64
	// Rate, when positive, paces every run at that many requests per
	// second (open loop, at most Concurrency in flight), so odin and the
	// baseline are compared at the same throughput; 0 is closed loop.
	Rate float64
	// FirstSightTokens is how many tokens are minted for each
	// jwt-first-sight run (also that run's request bound).
	FirstSightTokens int
	// CachedKeys, CachedSessions and UnknownKeys size the working sets of
	// the cached and invalid scenarios; RedisKeys that of redis-key (it
	// must exceed ColdCacheSize).
	CachedKeys, CachedSessions, UnknownKeys, RedisKeys int
	// ColdCacheSize is the LRU size (--cache-size) of the cold-key servers.
	ColdCacheSize int
	// NegativeTTL is passed to odin (--negative-ttl) and bounds the
	// queries a flood of unknown keys may cause.
	NegativeTTL time.Duration
	// Burst is how many concurrent checks of one uncached key the burst
	// probe sends (0 skips it).
	Burst int
	// RSSKeys is how many keys the RSS probe caches (0 skips it; needs
	// Keys ≥ RSSKeys).
	RSSKeys int
	// RSSSettle bounds the wait for a garbage collection after the RSS
	// probe's warm-up (Go forces one every two minutes).
	RSSSettle time.Duration

	// ServerCPUs and LoadCPUs pin the servers and the generator with
	// taskset (CPU lists such as "0" or "0,1"); empty: not pinned.
	ServerCPUs, LoadCPUs string
	// Connections is how many HTTP/2 connections the gRPC generator opens
	// (Envoy uses about one per worker thread).
	Connections int
	// Timeout bounds one request.
	Timeout time.Duration
	// ProxyURL, when set, adds the proxy-cached-key scenario: the HTTP load
	// sent to this loopback URL (Envoy, NGINX… in front of odin) instead of
	// the forward-auth port.
	ProxyURL string
	// MaxTime bounds the whole run.
	MaxTime time.Duration
	// Remote, when set, measures a deployment the harness did not start
	// instead of starting odin: no odin binary, the database is seeded in
	// place (SeedInPlace), and addresses need not be on loopback.
	Remote *Remote

	// BaselineCommand starts the baseline server; the harness appends
	// --grpc-addr and --http-addr. Default: this executable with "baseline".
	BaselineCommand []string
	// BaselineEnv is added to the baseline's environment.
	BaselineEnv []string
	// ProfileDir, when set, profiles odin during every measured run of each
	// scenario (odin is started with ODIN_PPROF=true; a CPU profile and an
	// allocation delta per run, merged per scenario and concurrency) and
	// writes <scenario>-cpu.pprof, <scenario>-allocs.pprof and
	// <scenario>-top.txt here ("-c<N>" is added to the name when there are
	// several concurrency levels). Empty: no profiling, whose cost would
	// distort the CPU ratios.
	ProfileDir string
	// WorkDir receives the servers' logs.
	WorkDir string
	// ServerEnv is added to the odin servers' environment (NAME=value),
	// e.g. ODIN_RATE_LIMIT_DISABLED=true; it overrides the harness's own.
	ServerEnv []string
	// ServerLogLevel is odin's --log-level (default info: denials are
	// logged, as in production).
	ServerLogLevel string
	// Mode names the preset in the report ("short", "long", "test").
	Mode string
}

// ShortConfig is the default: every scenario at concurrency 32, two rounds
// of at most 1.5 s, done in under two minutes on a 2-core machine once the
// database is seeded.
func ShortConfig() Config {
	return Config{
		Mode:             "short",
		DatabaseURL:      "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		RedisURL:         "redis://127.0.0.1:6379/0",
		RedisPrefix:      "odinload:",
		Keys:             1_000,
		Seed:             "odin-load-v1",
		Concurrency:      []int{32},
		Rounds:           2,
		Duration:         1500 * time.Millisecond,
		Requests:         50_000,
		FirstSightTokens: 2_000,
		CachedKeys:       100,
		CachedSessions:   100,
		UnknownKeys:      500,
		RedisKeys:        500,
		ColdCacheSize:    100,
		NegativeTTL:      5 * time.Second,
		Burst:            1_000,
		RSSSettle:        150 * time.Second,
		Connections:      1,
		Timeout:          5 * time.Second,
		MaxTime:          4 * time.Minute,
		ServerLogLevel:   "info",
	}
}

// LongConfig is --long: four concurrency levels, three rounds of 5 s.
func LongConfig() Config {
	c := ShortConfig()
	c.Mode = "long"
	c.Concurrency = []int{1, 8, 32, 128}
	c.Rounds = 3
	c.Duration = 5 * time.Second
	c.Requests = 500_000
	c.FirstSightTokens = 4_000
	c.RedisKeys = 2_000
	c.MaxTime = 90 * time.Minute
	return c
}

// check validates the configuration: every address must be on loopback.
func (c *Config) check() error {
	if c.Remote != nil {
		return c.checkRemote()
	}
	switch {
	case c.OdinBinary == "":
		return errors.New("the odin binary is required (go build -o /tmp/odin ./cmd/odin; --odin-bin /tmp/odin)")
	case c.Keys < 200:
		return fmt.Errorf("keys %d: want at least 200", c.Keys)
	case c.RSSKeys > c.Keys:
		return fmt.Errorf("rss-keys %d exceeds the %d seeded keys", c.RSSKeys, c.Keys)
	case c.Rounds < 1 || len(c.Concurrency) == 0 || c.Duration <= 0 || c.Requests <= 0 || c.Rate < 0:
		return errors.New("rounds, concurrency, duration and requests must be positive, rate not negative")
	case c.ColdCacheSize < 1 || c.CachedKeys < 1 || c.UnknownKeys < 1 || c.CachedSessions < 1:
		return errors.New("cold-cache-size and the working sets must be positive")
	}
	redisKeys := 0
	if c.RedisURL != "" && c.wants("redis-key") {
		if redisKeys = c.RedisKeys; redisKeys <= c.ColdCacheSize {
			return fmt.Errorf("redis-keys %d must exceed cold-cache-size %d", c.RedisKeys, c.ColdCacheSize)
		}
	}
	if c.CachedKeys+redisKeys+burstProbes > c.Keys {
		return fmt.Errorf("keys %d: want at least cached-keys + redis-keys + %d", c.Keys, burstProbes)
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 4096 {
			return fmt.Errorf("concurrency %d: want 1 to 4096", n)
		}
	}
	if _, err := exec.LookPath(c.OdinBinary); err != nil {
		return fmt.Errorf("odin binary: %w", err)
	}
	if c.ServerCPUs != "" || c.LoadCPUs != "" {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("--server-cpu/--load-cpu need taskset (util-linux), which is not installed")
		}
	}
	for _, u := range []struct{ what, url string }{{"database", c.DatabaseURL}, {"redis", c.RedisURL}, {"proxy", c.ProxyURL}} {
		if u.url == "" {
			if u.what == "database" {
				return errors.New("a database URL is required")
			}
			continue
		}
		if err := checkLoopbackURL(u.url); err != nil {
			return fmt.Errorf("%s URL: %w", u.what, err)
		}
	}
	known := append(scenarioNames(), "none")
	for _, s := range c.Scenarios {
		if !slices.Contains(known, s) {
			return fmt.Errorf("unknown scenario %q (known: %v)", s, known)
		}
	}
	return nil
}

// checkRemote validates a run against a remote deployment.
func (c *Config) checkRemote() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("a database URL is required: the deployment's PostgreSQL, where the load keys are seeded")
	case c.Keys < c.CachedKeys+1:
		return fmt.Errorf("keys %d: want more than cached-keys %d", c.Keys, c.CachedKeys)
	case c.Rounds < 1 || len(c.Concurrency) == 0 || c.Duration <= 0 || c.Requests <= 0 || c.Rate < 0:
		return errors.New("rounds, concurrency, duration and requests must be positive, rate not negative")
	case c.CachedKeys < 1 || c.UnknownKeys < 1 || c.CachedSessions < 1:
		return errors.New("the working sets must be positive")
	case c.ServerCPUs != "":
		return errors.New("--server-cpu: a remote deployment's servers cannot be pinned from here")
	case c.RSSKeys > 0:
		return errors.New("--rss-keys: the RSS probe needs a server of the harness's own")
	case c.ProfileDir != "":
		return errors.New("--profile: profiling needs a server of the harness's own (a deployment's replicas are profiled with their own --pprof)")
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 4096 {
			return fmt.Errorf("concurrency %d: want 1 to 4096", n)
		}
	}
	if c.LoadCPUs != "" {
		if _, err := exec.LookPath("taskset"); err != nil {
			return errors.New("--load-cpu needs taskset (util-linux), which is not installed")
		}
	}
	return c.Remote.check(c)
}

// checkLoopbackURL refuses a URL whose host is not a loopback address: the
// harness only ever loads this machine.
func checkLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	return checkLoopbackHost(u.Hostname())
}

func checkLoopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("host %q is not a loopback address (127.0.0.0/8, ::1, localhost)", host)
	}
	return nil
}

// wants reports whether scenario name was selected.
func (c *Config) wants(name string) bool {
	return len(c.Scenarios) == 0 || slices.Contains(c.Scenarios, name)
}
