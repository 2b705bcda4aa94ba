package ratelimit

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// privateRedis starts a redis-server of the test's own, to stop, with a
// client configured as the service configures its own: short timeouts,
// one retry.
func privateRedis(t *testing.T) (*testenv.PrivateRedis, redis.UniversalClient) {
	t.Helper()
	pr := testenv.StartRedis(t)
	ro, err := redis.ParseURL(pr.URL())
	if err != nil {
		t.Fatal(err)
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout = 200*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	ro.MaxRetries, ro.MinRetryBackoff, ro.MaxRetryBackoff = 1, time.Millisecond, 10*time.Millisecond
	c := redis.NewClient(ro)
	t.Cleanup(func() { c.Close() })
	return pr, c
}

// outageTier has a burst of 4 leased 2 at a time (with a LeaseTTL of an
// hour), and no refill to speak of.
var outageTier = map[string]Tier{"t": {Rate: 0.1, Burst: 4}}

// waitForRedis retries a fresh key until Redis grants it, after a restart.
func waitForRedis(t *testing.T, l *Limiter, key string) Result {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		granted := value(l.m.redisCalls[callGranted])
		r := l.Allow(context.Background(), key, "t", time.Now())
		if value(l.m.redisCalls[callGranted]) > granted {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis did not come back within 3s: last %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leaseThenStop spends a token of the key "leased" while Redis is up (the
// replica leases a share of its budget), stops Redis, and checks that the
// replica still spends the tokens it leased.
func leaseThenStop(t *testing.T, l *Limiter, pr *testenv.PrivateRedis) {
	t.Helper()
	ctx := context.Background()
	if r := l.Allow(ctx, "leased", "t", time.Now()); !r.Allowed {
		t.Fatalf("before the outage: %+v", r)
	}
	pr.Stop()
	if r := l.Allow(ctx, "leased", "t", time.Now()); !r.Allowed {
		t.Errorf("leased token during the outage: %+v, want allowed", r)
	}
}

func TestRedisDownFailOpen(t *testing.T) {
	pr, c := privateRedis(t)
	logs := &testenv.LogBuffer{}
	const backoff = 100 * time.Millisecond
	l, err := New(c, Options{Tiers: outageTier, DefaultTier: "t", Backoff: backoff, LeaseFraction: 0.5, LeaseTTL: time.Hour},
		slog.New(slog.NewTextHandler(logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leaseThenStop(t, l, pr)
	// A key without a lease is limited per replica: its burst, then refused.
	var results []bool
	start := time.Now()
	// At least 600 ms (several backoffs) and six decisions, however slow
	// the machine.
	for len(results) < 6 || time.Since(start) < 600*time.Millisecond {
		r := l.Allow(ctx, "fresh", "t", time.Now())
		if r.Unavailable {
			t.Fatalf("fail open returned Unavailable: %+v", r)
		}
		results = append(results, r.Allowed)
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if !results[0] || !results[3] || results[4] {
		t.Errorf("fail open: first five decisions %v, want the per-replica burst of 4, then refused", results[:5])
	}
	if got := int(l.keys.decisions(resultAllowed, pathFallback)); got != 4 {
		t.Errorf("fallback allowed counter = %d, want 4", got)
	}
	// One failed probe per backoff, not one per request.
	errs := value(l.m.redisCalls[callError])
	if maxErrs := int(elapsed/backoff) + 2; errs < 1 || errs > maxErrs {
		t.Errorf("%d Redis errors for %d requests over %v, want 1 to %d (one per backoff)", errs, len(results), elapsed, maxErrs)
	}
	if n := strings.Count(logs.String(), "redis unavailable"); n != 1 {
		t.Errorf("%d outage log lines over %d failures, want 1:\n%s", n, errs, logs)
	}

	pr.Start()
	r := waitForRedis(t, l, "after")
	if !r.Allowed || r.Remaining != 3 {
		t.Errorf("after recovery: %+v, want allowed by Redis with 3 remaining", r)
	}
	if n := strings.Count(logs.String(), "redis reachable again"); n != 1 {
		t.Errorf("%d recovery log lines, want 1:\n%s", n, logs)
	}
}

func TestRedisDownFailClosed(t *testing.T) {
	pr, c := privateRedis(t)
	const backoff = time.Second
	l := newLimiter(t, c, Options{Tiers: outageTier, DefaultTier: "t", Backoff: backoff, LeaseFraction: 0.5, LeaseTTL: time.Hour, FailClosed: true})
	ctx := context.Background()
	leaseThenStop(t, l, pr)
	for i := range 10 {
		r := l.Allow(ctx, "fresh", "t", time.Now())
		if r.Allowed || !r.Unavailable || r.RetryAfter <= 0 || r.RetryAfter > backoff || r.Limit != 4 {
			t.Fatalf("request %d during the outage: %+v, want refused, Unavailable, 0 < RetryAfter ≤ %v", i, r, backoff)
		}
	}
	if errs := value(l.m.redisCalls[callError]); errs != 1 {
		t.Errorf("%d Redis errors within one backoff, want 1", errs)
	}
	if got := int(l.keys.decisions(resultUnavailable, pathFallback)); got != 10 {
		t.Errorf("unavailable counter = %d, want 10", got)
	}

	pr.Start()
	if r := waitForRedis(t, l, "fresh"); !r.Allowed || r.Unavailable {
		t.Errorf("after recovery: %+v, want allowed", r)
	}
}
