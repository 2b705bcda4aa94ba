package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Remote is an odin deployment the harness did not start (the docker
// compose stack, a staging cluster): the load goes to its replicas over the
// network, and its CPU time and counters are read from the replicas' ops
// ports (process_cpu_seconds_total and the odin_* counters of /metrics,
// summed over the replicas) instead of /proc. The baseline is still a child
// of the harness, measured with the same load in the same rounds.
type Remote struct {
	// GRPC are the replicas' Check addresses (host:port); a host name is
	// resolved to every address it has (a compose service with replicas),
	// and the load is spread over them round-robin.
	GRPC []string
	// Ops are the replicas' ops addresses (host:port), resolved the same
	// way; every replica that takes load must be listed, or its CPU and
	// decisions go uncounted.
	Ops []string
	// MintURL is a dev issuer's POST /mint (odin devissuer) trusted by the
	// replicas; it enables the session scenarios. Empty: they are skipped.
	MintURL string
}

// remoteScenarios are the scenarios that make sense against a deployment:
// the cold and Redis ones need servers with a tiny LRU, which only the
// harness can start.
var remoteScenarios = []string{"cached-key", "cached-session", "jwt-first-sight", "invalid-flood", "mixed", "proxy-cached-key"}

// check validates the remote part of a configuration.
func (r *Remote) check(c *Config) error {
	if len(r.GRPC) == 0 || len(r.Ops) == 0 {
		return errors.New("remote: --grpc-target and --ops-target are both required")
	}
	for _, a := range append(slices.Clone(r.GRPC), r.Ops...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("remote target %q: want host:port", a)
		}
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(remoteScenarios, s) {
			return fmt.Errorf("scenario %q does not run against a remote deployment (remote scenarios: %v)", s, remoteScenarios)
		}
		if (s == "cached-session" || s == "jwt-first-sight" || s == "mixed") && r.MintURL == "" {
			return fmt.Errorf("scenario %q needs --mint-url (a dev issuer the replicas trust)", s)
		}
		if s == "proxy-cached-key" && c.ProxyURL == "" {
			return errors.New("scenario proxy-cached-key needs --proxy-url")
		}
	}
	return nil
}

// resolveAll turns host:port entries into one host:port per address, in a
// stable order, without duplicates.
func resolveAll(ctx context.Context, list []string) ([]string, error) {
	var out []string
	for _, hp := range list {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return nil, fmt.Errorf("%q: want host:port", hp)
		}
		addrs, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		slices.Sort(addrs)
		for _, a := range addrs {
			if ap := net.JoinHostPort(a, port); !slices.Contains(out, ap) {
				out = append(out, ap)
			}
		}
	}
	return out, nil
}

// remoteServer is a resolved Remote.
type remoteServer struct {
	grpc, ops []string
	// target is the gRPC target ghz dials: a resolver scheme of this run
	// that hands out every replica address, balanced round-robin.
	target string
}

// remoteSchemes numbers the resolver schemes registered in this process
// (one per run; gRPC keeps resolvers in a global registry).
var remoteSchemes atomic.Int64

func (h *harness) startRemote(ctx context.Context) (*Process, error) {
	r := h.cfg.Remote
	rs := &remoteServer{}
	var err error
	if rs.grpc, err = resolveAll(ctx, r.GRPC); err != nil {
		return nil, fmt.Errorf("remote gRPC targets: %w", err)
	}
	if rs.ops, err = resolveAll(ctx, r.Ops); err != nil {
		return nil, fmt.Errorf("remote ops targets: %w", err)
	}
	scheme := "odin-load-" + strconv.FormatInt(remoteSchemes.Add(1), 10)
	b := manual.NewBuilderWithScheme(scheme)
	state := resolver.State{}
	for _, a := range rs.grpc {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	b.InitialState(state)
	resolver.Register(b)
	rs.target = scheme + ":///odin"
	for _, ops := range rs.ops {
		if err := waitReady(ctx, ops, 20*time.Second); err != nil {
			return nil, fmt.Errorf("remote replica %s: %w", ops, err)
		}
	}
	h.rep.Notes = append(h.rep.Notes, fmt.Sprintf(
		"remote deployment: Check load spread round-robin over %v; odin's CPU is the change of process_cpu_seconds_total summed over %v (10 ms resolution per replica); the baseline is a child of the harness on this machine",
		rs.grpc, rs.ops))
	h.log.Info("remote deployment ready", "grpc", rs.grpc, "ops", rs.ops)
	return &Process{Name: "odin-remote", Addrs: map[string]string{"grpc": rs.target}, remote: rs}, nil
}

// scrapeAll reads the counters of every replica and sums them.
func scrapeAll(ctx context.Context, ops []string) (counters, error) {
	sum := counters{}
	for _, a := range ops {
		c, err := scrapeCounters(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("replica %s: %w", a, err)
		}
		for k, v := range c {
			sum[k] += v
		}
	}
	return sum, nil
}

// remoteCPU is the CPU time every replica has used, from its
// process_cpu_seconds_total.
func remoteCPU(ctx context.Context, ops []string) (time.Duration, error) {
	c, err := scrapeAll(ctx, ops)
	if err != nil {
		return 0, err
	}
	v, ok := c[processCPUSeconds]
	if !ok {
		return 0, errors.New("replica metrics lack process_cpu_seconds_total")
	}
	return time.Duration(v * float64(time.Second)), nil
}

// httpMinter mints session tokens through a dev issuer's POST /mint.
type httpMinter struct {
	url    string
	client *http.Client
}

func (m httpMinter) mint(ctx context.Context, prefix string, n, workers int) ([]string, error) {
	toks := make([]string, n)
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		firstErr error
		once     sync.Once
	)
	for range max(workers, 4) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				tok, err := m.one(ctx, prefix+strconv.Itoa(i))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				toks[i] = tok
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, fmt.Errorf("mint tokens at %s: %w", m.url, firstErr)
	}
	return toks, nil
}

func (m httpMinter) one(ctx context.Context, id string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"sub": "user_" + id, "sid": "sess_" + id, "org_id": "org_load", "org_role": "admin",
		"permissions": []string{"scans:read", "scans:write"}, "tier": loadTier, "ttl_seconds": 3600,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("answer without a token (%v)", err)
	}
	return out.Token, nil
}
