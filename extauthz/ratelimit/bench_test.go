package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// benchTier is so large that a benchmark never runs out of budget.
var benchTier = map[string]Tier{"bench": {Rate: maxRate, Burst: maxBurst}}

// BenchmarkAllowLocal measures the common path: this replica holds a lease
// with tokens left, so Allow is a table lookup and an atomic decrement.
func BenchmarkAllowLocal(b *testing.B) {
	c, prefix := sharedRedis(b)
	l := newLimiter(b, c, Options{Tiers: benchTier, DefaultTier: "bench", Prefix: prefix, LeaseFraction: 1, LeaseTTL: time.Hour})
	ctx := context.Background()
	now := time.Now()
	if r := l.Allow(ctx, "key-1", "bench", now); !r.Allowed { // takes the lease
		b.Fatalf("warm-up: %+v", r)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !l.Allow(ctx, "key-1", "bench", now).Allowed {
			b.Fatal("refused")
		}
	}
}

// BenchmarkAllowLocalParallel is BenchmarkAllowLocal from every core on 64
// keys, to show there is no lock all requests share.
func BenchmarkAllowLocalParallel(b *testing.B) {
	c, prefix := sharedRedis(b)
	l := newLimiter(b, c, Options{Tiers: benchTier, DefaultTier: "bench", Prefix: prefix, LeaseFraction: 1, LeaseTTL: time.Hour})
	ctx := context.Background()
	now := time.Now()
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "key-" + time.Duration(i).String()
		l.Allow(ctx, keys[i], "bench", now)
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 31 // goroutines on different keys
		for pb.Next() {
			l.Allow(ctx, keys[i%len(keys)], "bench", now)
			i++
		}
	})
}

// BenchmarkAllowRedisEveryRequest leases one token at a time: one Redis
// round trip per request, for comparison.
func BenchmarkAllowRedisEveryRequest(b *testing.B) {
	c, prefix := sharedRedis(b)
	l := newLimiter(b, c, Options{Tiers: benchTier, DefaultTier: "bench", Prefix: prefix, LeaseFraction: 1e-9})
	if _, _, batch := l.Limits("bench"); batch != 1 {
		b.Fatalf("batch %d, want 1", batch)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if !l.Allow(ctx, "key-1", "bench", time.Now()).Allowed {
			b.Fatal("refused")
		}
	}
}

// BenchmarkAllowNoRedis is the per-replica GCRA used without Redis.
func BenchmarkAllowNoRedis(b *testing.B) {
	l := newLimiter(b, nil, Options{Tiers: benchTier, DefaultTier: "bench"})
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, "key-1", "bench", now)
	}
}
