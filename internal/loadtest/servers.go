package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startBaseline starts the do-nothing server, by default this executable's
// `baseline` command, on loopback port 0.
func (h *harness) startBaseline(ctx context.Context) (*Process, error) {
	argv := h.cfg.BaselineCommand
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		argv = []string{exe, "baseline"}
	}
	argv = append(append([]string(nil), argv...), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	return startProcess(ctx, processSpec{
		name: "baseline", argv: argv, env: h.cfg.BaselineEnv, readyMsg: baselineReadyMsg,
		cpus: h.cfg.ServerCPUs, logPath: filepath.Join(h.cfg.WorkDir, "baseline.log"),
	})
}

// odinOptions are the per-profile differences of an odin server.
type odinOptions struct {
	profile   string
	redis     bool
	jwt       bool
	cacheSize int
	extra     []string
	// pprof serves Go's profiler on the ops port (Config.ProfileDir).
	pprof bool
}

func (h *harness) profileOptions(prof string) odinOptions {
	pprof := h.cfg.ProfileDir != ""
	switch prof {
	case profileCold:
		return odinOptions{profile: prof, cacheSize: h.cfg.ColdCacheSize, pprof: pprof}
	case profileColdRedis:
		return odinOptions{profile: prof, redis: true, cacheSize: h.cfg.ColdCacheSize, pprof: pprof}
	}
	return odinOptions{profile: prof, redis: h.cfg.RedisURL != "", jwt: h.issuer != nil, pprof: pprof}
}

// startOdin starts `odin authz` on loopback port 0 and waits until /readyz
// answers 200.
func (h *harness) startOdin(ctx context.Context, o odinOptions) (*Process, error) {
	args := []string{h.cfg.OdinBinary, "authz",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--ops-addr", "127.0.0.1:0",
		"--log-format", "json", "--log-level", h.cfg.ServerLogLevel, "--drain-timeout", "2s",
		"--negative-ttl", h.cfg.NegativeTTL.String()}
	if o.cacheSize > 0 {
		args = append(args, "--cache-size", strconv.Itoa(o.cacheSize))
	}
	if o.jwt {
		args = append(args, "--jwks-url", h.issuer.url, "--jwt-issuer", h.issuer.p.Issuer())
	}
	args = append(args, o.extra...)
	// Environment rather than flags where a binary may predate the setting:
	// older binaries ignore unknown variables but refuse unknown flags.
	env := []string{"ODIN_DATABASE_URL=" + h.dbURL, "ODIN_RATE_LIMIT_TIERS=" + loadTierLimit}
	if o.pprof {
		env = append(env, "ODIN_PPROF=true")
	}
	env = append(env, h.cfg.ServerEnv...)
	if o.redis {
		prefix := h.cfg.RedisPrefix + randomSuffix() + ":"
		h.prefixes = append(h.prefixes, prefix)
		// A secret of its own: each server has its own prefix too.
		env = append(env, "ODIN_REDIS_URL="+h.cfg.RedisURL, "ODIN_REDIS_PREFIX="+prefix,
			"ODIN_REDIS_MAC_SECRET="+randomSuffix()+randomSuffix()+randomSuffix())
	}
	h.servers++
	p, err := startProcess(ctx, processSpec{
		name: "odin-" + o.profile, argv: args, env: env, readyMsg: "odin authz serving", cpus: h.cfg.ServerCPUs,
		logPath: filepath.Join(h.cfg.WorkDir, fmt.Sprintf("odin-%d-%s.log", h.servers, o.profile)),
	})
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"grpc", "http", "ops"} {
		if err := checkAddr(p.Addrs[k]); err != nil {
			p.Stop()
			return nil, fmt.Errorf("odin %s address: %w", k, err)
		}
	}
	if err := waitReady(ctx, p.Addrs["ops"], 20*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	h.log.Info("odin started", "profile", o.profile, "pid", p.PID(), "grpc", p.Addrs["grpc"])
	return p, nil
}

func checkAddr(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	return checkLoopbackHost(host)
}

func waitReady(ctx context.Context, opsAddr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+opsAddr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("odin not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// childEnv is the harness's environment without ODIN_* variables, so a
// child gets exactly the configuration the harness gives it.
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ODIN_") {
			out = append(out, kv)
		}
	}
	return out
}

// cpuCount counts the CPUs of a taskset list such as "0", "0,1" or "0-3".
func cpuCount(list string) int {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		if !isRange {
			hi = lo
		}
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || b < a {
			continue
		}
		n += b - a + 1
	}
	return max(n, 1)
}
