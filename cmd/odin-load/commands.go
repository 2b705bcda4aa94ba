package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/internal/loadtest"
)

// bindRun binds the flags of `odin-load run` onto cfg, whose values are the
// defaults (the short or the long preset).
func bindRun(fs *flag.FlagSet, cfg *loadtest.Config, out *outputs) {
	bindStore(fs, cfg)
	fs.StringVar(&cfg.OdinBinary, "odin-bin", envOr("ODIN_LOAD_ODIN_BIN", ""), "odin binary to measure, e.g. built with go build -o /tmp/odin ./cmd/odin [ODIN_LOAD_ODIN_BIN]")
	fs.Bool("long", false, "the long preset: concurrency 1,8,32,128, 3 rounds of 5 s (default: 32, 2 rounds of 1.5 s, under 2 minutes)")
	fs.Func("scenarios", "comma-separated scenarios (default all): cached-key, cached-key-http, cached-session, jwt-first-sight, invalid-flood, mixed, proxy-cached-key, cold-key, cold-key-redis, redis-key; none: only the RSS probe",
		func(s string) error { cfg.Scenarios = splitList(s); return nil })
	fs.Func("concurrency", fmt.Sprintf("comma-separated concurrency levels (default %s)", joinInts(cfg.Concurrency)), func(s string) error {
		var err error
		cfg.Concurrency, err = parseInts(s)
		return err
	})
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds per scenario and concurrency, each baseline then odin")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "longest run (one server, one round)")
	fs.Int64Var(&cfg.Requests, "requests", cfg.Requests, "most requests of one run")
	fs.Float64Var(&cfg.Rate, "rate", 0, "pace every run at this many requests/s, to compare both servers at one throughput (default 0: closed loop, as fast as answers come)")
	fs.IntVar(&cfg.FirstSightTokens, "first-sight-tokens", cfg.FirstSightTokens, "tokens minted per jwt-first-sight run (its request bound)")
	fs.IntVar(&cfg.ColdCacheSize, "cold-cache-size", cfg.ColdCacheSize, "odin --cache-size of the cold-key servers")
	fs.DurationVar(&cfg.NegativeTTL, "negative-ttl", cfg.NegativeTTL, "odin --negative-ttl (the flood bound uses it)")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "concurrent checks of one uncached key in the burst probe (0 skips)")
	fs.IntVar(&cfg.RSSKeys, "rss-keys", cfg.RSSKeys, "keys to cache in the RSS probe (0 skips; at most --keys)")
	fs.DurationVar(&cfg.RSSSettle, "rss-settle", cfg.RSSSettle, "longest wait for a garbage collection after the RSS probe's warm-up")
	fs.StringVar(&cfg.ServerCPUs, "server-cpu", "", "pin the servers to these CPUs with taskset, e.g. 0")
	fs.StringVar(&cfg.LoadCPUs, "load-cpu", "", "pin the load generator to these CPUs with taskset, e.g. 1")
	fs.IntVar(&cfg.Connections, "connections", cfg.Connections, "gRPC connections of the generator")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "timeout of one request")
	fs.StringVar(&cfg.ProxyURL, "proxy-url", envOr("ODIN_LOAD_PROXY_URL", ""), "URL of a proxy in front of odin (Envoy, NGINX…): adds proxy-cached-key; loopback unless --grpc-target is set [ODIN_LOAD_PROXY_URL]")
	fs.Func("grpc-target", "measure a running deployment instead of starting odin: its replicas' gRPC Check addresses, host:port, comma-separated; a host name stands for every address it resolves to [ODIN_LOAD_GRPC_TARGET]",
		func(s string) error { out.remote.GRPC = splitList(s); return nil })
	fs.Func("ops-target", "with --grpc-target: the replicas' ops addresses (host:port, comma-separated), whose /metrics give their CPU time and decisions [ODIN_LOAD_OPS_TARGET]",
		func(s string) error { out.remote.Ops = splitList(s); return nil })
	fs.StringVar(&out.remote.MintURL, "mint-url", envOr("ODIN_LOAD_MINT_URL", ""), "with --grpc-target: a dev issuer's POST /mint the replicas trust (odin devissuer), for the session scenarios [ODIN_LOAD_MINT_URL]")
	fs.DurationVar(&cfg.MaxTime, "max-time", cfg.MaxTime, "bound of the whole run")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "directory for server logs and reports (default: a new temporary directory)")
	fs.StringVar(&cfg.ServerLogLevel, "server-log-level", cfg.ServerLogLevel, "odin --log-level")
	fs.Func("server-env", "NAME=value added to the odin servers' environment, e.g. ODIN_RATE_LIMIT_DISABLED=true (repeatable)", func(s string) error {
		if name, _, ok := strings.Cut(s, "="); !ok || name == "" {
			return fmt.Errorf("%q: want NAME=value", s)
		}
		cfg.ServerEnv = append(cfg.ServerEnv, s)
		return nil
	})
	fs.StringVar(&out.json, "json", "", "write the JSON report here (default <work-dir>/report.json)")
	fs.StringVar(&out.markdown, "markdown", "", "write the Markdown report here too (it always goes to stdout)")
	fs.StringVar(&out.cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator here (go tool pprof)")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "profile odin (started with --pprof) during each scenario's measured runs and write <scenario>-cpu.pprof, -allocs.pprof and -top.txt into this directory; off by default, the profiler's cost would distort the CPU ratios")
}

// bindStore binds the database and key-set flags shared by run and seed.
func bindStore(fs *flag.FlagSet, cfg *loadtest.Config) {
	fs.StringVar(&cfg.DatabaseURL, "database-url", envOr("ODIN_LOAD_DATABASE_URL", cfg.DatabaseURL), "loopback PostgreSQL; odin_load_<keys> is created beside its database [ODIN_LOAD_DATABASE_URL]")
	fs.StringVar(&cfg.RedisURL, "redis-url", envOr("ODIN_LOAD_REDIS_URL", cfg.RedisURL), "loopback Redis; empty skips the Redis scenarios [ODIN_LOAD_REDIS_URL]")
	fs.BoolVar(&cfg.SeedInPlace, "in-place", false, "use the database of --database-url itself instead of creating odin_load_<keys> beside it")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "API keys in the load database (e.g. 1000, 100000, 1000000)")
	fs.StringVar(&cfg.Seed, "seed", cfg.Seed, "seed the keys are derived from (same seed, same keys)")
}

type outputs struct {
	json, markdown, cpuProfile string
	remote                     loadtest.Remote
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := loadtest.ShortConfig()
	if wantsLong(args) {
		cfg = loadtest.LongConfig()
	}
	var out outputs
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: odin-load run --odin-bin PATH [flags]\n       odin-load run --grpc-target HOST:PORT --ops-target HOST:PORT --database-url URL [flags]\n\nSeeds (or reuses) the load database, starts the baseline and odin authz as child\nprocesses on loopback, runs every scenario against both, interleaved, and prints\nthe report as Markdown (stdout) and JSON (--json).\n\nWith --grpc-target it measures a running deployment instead (the docker compose\nstack): the keys are seeded into its database (--database-url), the load is spread\nover its replicas, their CPU is read from their /metrics, and the baseline is\nstill started here. Scenarios: cached-key, invalid-flood, proxy-cached-key (with\n--proxy-url), and cached-session, jwt-first-sight, mixed (with --mint-url).\n\nFlags:")
		fs.PrintDefaults()
	}
	out.remote.GRPC, out.remote.Ops = splitList(os.Getenv("ODIN_LOAD_GRPC_TARGET")), splitList(os.Getenv("ODIN_LOAD_OPS_TARGET"))
	bindRun(fs, &cfg, &out)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run: unexpected argument %q", fs.Arg(0))
	}
	if len(out.remote.GRPC) > 0 || len(out.remote.Ops) > 0 {
		cfg.Remote = &out.remote
		if cfg.Mode == "short" || cfg.Mode == "long" {
			cfg.Mode += ", remote"
		}
	}
	if cfg.WorkDir == "" {
		dir, err := os.MkdirTemp("", "odin-load-")
		if err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		cfg.WorkDir = dir
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("profile dir: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if out.cpuProfile != "" {
		stop, err := startCPUProfile(out.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep, runErr := loadtest.Run(ctx, cfg, log)
	if rep == nil {
		return runErr
	}
	if err := writeReports(rep, out, cfg.WorkDir, stdout, log); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

func writeReports(rep *loadtest.Report, out outputs, dir string, stdout io.Writer, log *slog.Logger) error {
	if out.json == "" {
		out.json = filepath.Join(dir, "report.json")
	}
	f, err := os.Create(out.json)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteMarkdown(stdout); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if out.markdown != "" {
		mf, err := os.Create(out.markdown)
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		if err := rep.WriteMarkdown(mf); err != nil {
			mf.Close()
			return err
		}
		if err := mf.Close(); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	log.Info("reports written", "json", out.json, "markdown", out.markdown, "server_logs", dir)
	return nil
}

// startCPUProfile profiles this process until the returned stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func runSeed(ctx context.Context, args []string, stderr io.Writer) error {
	cfg := loadtest.ShortConfig()
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.OdinBinary, "odin-bin", envOr("ODIN_LOAD_ODIN_BIN", ""), "odin binary whose `odin migrate` creates the schema [ODIN_LOAD_ODIN_BIN]")
	bindStore(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	res, err := loadtest.Prepare(ctx, cfg, log)
	if err != nil {
		return err
	}
	log.Info("load database ready", "keys", res.Keys, "reused", res.Reused, "took", res.Took.Round(time.Millisecond))
	return nil
}

func runBaseline(ctx context.Context, args []string, stderr io.Writer) error {
	opts, err := loadtest.ParseBaselineArgs(args, stderr)
	if err != nil {
		return err
	}
	return loadtest.ServeBaseline(ctx, opts, stderr)
}

// wantsLong reports whether --long is among args, so its preset can supply
// the defaults of the other flags.
func wantsLong(args []string) bool {
	for _, a := range args {
		switch a {
		case "--long", "-long", "--long=true", "-long=true":
			return true
		}
	}
	return false
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", p)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return slices.Compact(out), nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
