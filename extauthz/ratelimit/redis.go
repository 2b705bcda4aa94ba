package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// leaseScript is the shared GCRA. The state of a limit key is its
// theoretical arrival time (TAT): when the bucket would be full again, in
// microseconds of Redis' clock — whole numbers, so that they survive the
// string round trip exactly (Lua numbers are doubles; 2^53 µs is far away).
// A bucket holds burst × interval of time; a token costs one interval.
//
// It grants between ARGV[4] and ARGV[3] tokens at once. Unlike
// github.com/go-redis/redis_rate's AllowAtMost, it never charges a fraction
// of a token it did not grant, and it keeps our key prefix (redis_rate
// prepends "rate:").
//
// Reply: {granted, tokens left after the grant, µs until ARGV[4] tokens
// are available (when refused), µs until the bucket is full again}.
var leaseScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local atleast = tonumber(ARGV[4])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call("GET", KEYS[1])) or now
if tat < now then tat = now end
local capacity = burst * interval
local avail = math.floor((now + capacity - tat) / interval)
if avail < atleast then
  return {0, math.max(avail, 0), tat + atleast * interval - capacity - now, tat - now}
end
local grant = math.min(want, avail)
local new_tat = tat + grant * interval
redis.call("SET", KEYS[1], string.format("%.0f", new_tat), "PX", math.ceil((new_tat - now) / 1000) + 1)
return {grant, avail - grant, 0, new_tat - now}
`)

// lease is what a replica holds for one limit key: tokens to spend until
// expires, or a refusal from Redis until denyUntil. It is replaced, never
// changed, except for the token count.
type lease struct {
	limits    *limits
	tokens    atomic.Int64 // left to spend; negative once spent
	expires   int64        // UnixNano; the lease is void from then on
	denyUntil int64        // UnixNano; 0 for a grant
	shared    int64        // tokens left in the shared bucket after this lease
	resetAt   int64        // UnixNano when the shared bucket is full again
}

// lease asks the shared GCRA for a batch of tokens for key.
func (l *Limiter) lease(ctx context.Context, key string, lim *limits, t int64) (*lease, error) {
	ctx, cancel := context.WithTimeout(ctx, l.opts.Timeout)
	defer cancel()
	reply, err := leaseScript.Run(ctx, l.client, []string{l.opts.Prefix + "{" + key + "}"},
		lim.intervalUS, lim.burst, lim.batch, lim.minBatch).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("lease rate limit tokens: %w", err)
	}
	if len(reply) != 4 {
		return nil, fmt.Errorf("lease rate limit tokens: reply of %d values, want 4", len(reply))
	}
	granted, shared, retryUS, resetUS := reply[0], reply[1], reply[2], reply[3]
	le := &lease{limits: lim, shared: shared, resetAt: t + resetUS*1000}
	if granted > 0 {
		le.tokens.Store(granted)
		le.expires = t + int64(l.opts.LeaseTTL)
		l.m.redisCalls[callGranted].Inc()
		return le, nil
	}
	le.denyUntil = t + max(retryUS*1000, int64(time.Millisecond))
	le.expires = le.denyUntil
	l.m.redisCalls[callRefused].Inc()
	return le, nil
}
