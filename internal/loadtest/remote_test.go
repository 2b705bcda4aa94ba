package loadtest

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// TestRunAgainstARemoteDeployment measures a deployment the harness did not
// start, as the compose load profile does: two odin authz replicas sharing
// PostgreSQL and Redis, trusting a separate `odin devissuer`. The harness
// seeds the keys into that database, mints tokens through /mint, spreads
// the load over both replicas and reads their CPU and decisions from their
// /metrics.
func TestRunAgainstARemoteDeployment(t *testing.T) {
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	odin := buildOdin(t)
	ctx := context.Background()

	issuerPort := testenv.FreePort(t)
	issuerURL := "http://127.0.0.1:" + strconv.Itoa(issuerPort)
	is := exec.Command(odin, "devissuer", "--addr", "127.0.0.1:"+strconv.Itoa(issuerPort), "--issuer", issuerURL)
	is.Env = childEnv()
	if err := is.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = is.Process.Kill(); _ = is.Wait() })
	waitHTTP(t, issuerURL+"/healthz")

	var replicas []*Process
	for i := range 2 {
		p, err := startProcess(ctx, processSpec{
			name: "replica", readyMsg: "odin authz serving", logPath: filepath.Join(t.TempDir(), "odin.log"),
			argv: []string{odin, "authz", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
				"--log-format", "json", "--jwks-url", issuerURL + "/.well-known/jwks.json", "--jwt-issuer", issuerURL},
			env: []string{"ODIN_DATABASE_URL=" + db, "ODIN_REDIS_URL=" + redisURL, "ODIN_REDIS_PREFIX=" + prefix, "ODIN_REDIS_MAC_SECRET=" + testenv.RedisMACSecret,
				"ODIN_RATE_LIMIT_TIERS=" + loadTierLimit},
		})
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		t.Cleanup(p.Stop)
		replicas = append(replicas, p)
	}

	cfg := ShortConfig()
	cfg.Mode = "test"
	cfg.DatabaseURL = db
	cfg.Keys, cfg.CachedKeys, cfg.UnknownKeys, cfg.CachedSessions = 300, 20, 40, 20
	cfg.Concurrency, cfg.Rounds = []int{4}, 1
	cfg.Duration, cfg.Requests, cfg.FirstSightTokens = 400*time.Millisecond, 600, 40
	cfg.MaxTime = 90 * time.Second
	cfg.WorkDir = t.TempDir()
	// The forward-auth port stands in for a proxy: it answers 200 or 401.
	cfg.ProxyURL = "http://" + replicas[0].Addrs["http"]
	cfg.Remote = &Remote{
		GRPC:    []string{replicas[0].Addrs["grpc"], replicas[1].Addrs["grpc"]},
		Ops:     []string{replicas[0].Addrs["ops"], replicas[1].Addrs["ops"]},
		MintURL: issuerURL + "/mint",
	}
	baselineSelf(&cfg)

	before := make([]counters, 2)
	for i, p := range replicas {
		c, err := p.counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before[i] = c
	}
	rep, err := Run(ctx, cfg, discardLogger())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"cached-key", "cached-session", "jwt-first-sight", "invalid-flood", "mixed", "proxy-cached-key"}
	if len(rep.Results) != len(want) {
		t.Fatalf("got %d results, want %v", len(rep.Results), want)
	}
	for i, res := range rep.Results {
		if res.Scenario != want[i] {
			t.Errorf("result %d is %s, want %s", i, res.Scenario, want[i])
		}
		checkMeasurement(t, res.Scenario+"/odin", res.Odin)
		if res.Odin.ServerCPUNotMeasured {
			t.Errorf("%s: odin CPU not measured", res.Scenario)
		}
		if res.Scenario != "proxy-cached-key" {
			checkMeasurement(t, res.Scenario+"/baseline", res.Baseline)
		}
		if len(res.Warnings) > 0 {
			t.Errorf("%s: warnings %v", res.Scenario, res.Warnings)
		}
		switch res.Scenario {
		case "cached-key", "cached-session", "jwt-first-sight", "proxy-cached-key":
			if res.Odin.NonOK != 0 {
				t.Errorf("%s: %d denials: the seeded keys or minted tokens were refused", res.Scenario, res.Odin.NonOK)
			}
		case "invalid-flood":
			if res.Odin.NonOK != res.Odin.Requests {
				t.Errorf("invalid-flood: %d of %d denied, want all", res.Odin.NonOK, res.Odin.Requests)
			}
		}
	}
	var cpu float64
	for _, res := range rep.Results {
		cpu += res.Odin.ServerCPUSeconds
	}
	if cpu <= 0 {
		t.Error("no CPU time read from the replicas' /metrics")
	}
	// Round-robin: both replicas decided a share of the gRPC load.
	for i, p := range replicas {
		after, err := p.counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := before[i].delta(after).sum("odin_authz_decisions_total"); n < 100 {
			t.Errorf("replica %d decided %v checks: the load was not spread over both", i, n)
		}
	}
}

func TestRemoteConfigRefusesWhatNeedsOwnServers(t *testing.T) {
	base := ShortConfig()
	base.Remote = &Remote{GRPC: []string{"authz:9001"}, Ops: []string{"authz:9003"}}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"cold scenario", func(c *Config) { c.Scenarios = []string{"cold-key"} }, `"cold-key" does not run against a remote`},
		{"session without mint", func(c *Config) { c.Scenarios = []string{"cached-session"} }, "needs --mint-url"},
		{"proxy without URL", func(c *Config) { c.Scenarios = []string{"proxy-cached-key"} }, "needs --proxy-url"},
		{"pinned servers", func(c *Config) { c.ServerCPUs = "0" }, "cannot be pinned"},
		{"rss probe", func(c *Config) { c.RSSKeys = 10 }, "RSS probe"},
		{"profiles", func(c *Config) { c.ProfileDir = "profiles" }, "profiling needs a server of the harness's own"},
		{"no ops", func(c *Config) { c.Remote = &Remote{GRPC: []string{"authz:9001"}} }, "both required"},
		{"bad target", func(c *Config) { c.Remote = &Remote{GRPC: []string{"authz"}, Ops: []string{"authz:9003"}} }, "want host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			r := *base.Remote
			c.Remote = &r
			tc.edit(&c)
			err := c.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	ok := base
	ok.Scenarios = []string{"cached-key", "invalid-flood"}
	if err := ok.check(); err != nil {
		t.Errorf("a remote run of cached-key and invalid-flood: %v", err)
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not answering", url)
}
