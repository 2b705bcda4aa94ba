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

// lease asks the shared GCRA for a batch of tokens for key. Leases of
// different keys wanted while one is in flight share the next round trip
// (groupcommit): each is the same script on its own key as when sent
// alone, after the same checks, so the bounds of docs/RATELIMIT.md hold
// as they are.
func (l *Limiter) lease(ctx context.Context, key string, lim *limits, t int64) (*lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &leaseCall{key: key, lim: lim, t: t}
	if !l.batcher.Do(ctx, c) {
		// The caller gave up; what Redis grants meanwhile is not spent
		// (fewer requests allowed, never more).
		return nil, ctx.Err()
	}
	return c.le, c.err
}

// leaseCall is one lease wanted, and its answer.
type leaseCall struct {
	key string
	lim *limits
	t   int64
	le  *lease
	err error
}

// maxLeaseBatch bounds one pipeline of leases.
const maxLeaseBatch = 128

// leaseBatch runs the lease script for every call: one call alone, as
// Script.Run does (EVALSHA, then EVAL if Redis does not have the script);
// several in one pipeline of EVALSHAs, those answered NOSCRIPT then one by
// one. The round trip has its own deadline (Options.Timeout), not one
// caller's: a caller that gives up does not fail the others.
func (l *Limiter) leaseBatch(batch []*leaseCall) {
	if len(batch) == 1 {
		l.leaseOne(batch[0])
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.Timeout)
	defer cancel()
	pipe := l.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = leaseScript.EvalSha(ctx, pipe, l.leaseKeys(c), l.leaseArgs(c)...)
	}
	_, _ = pipe.Exec(ctx) // each command's error is its own
	for i, c := range batch {
		cmd := cmds[i]
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmd = leaseScript.Run(ctx, l.client, l.leaseKeys(c), l.leaseArgs(c)...)
		}
		c.le, c.err = l.parseLease(c, cmd)
	}
}

// leaseOne runs the lease script for one call, as Script.Run does.
func (l *Limiter) leaseOne(c *leaseCall) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.Timeout)
	defer cancel()
	c.le, c.err = l.parseLease(c, leaseScript.Run(ctx, l.client, l.leaseKeys(c), l.leaseArgs(c)...))
}

func (l *Limiter) leaseKeys(c *leaseCall) []string {
	return []string{l.opts.Prefix + "{" + c.key + "}"}
}

func (l *Limiter) leaseArgs(c *leaseCall) []any {
	return []any{c.lim.intervalUS, c.lim.burst, c.lim.batch, c.lim.minBatch}
}

// parseLease reads the script's reply into a lease.
func (l *Limiter) parseLease(c *leaseCall, cmd *redis.Cmd) (*lease, error) {
	reply, err := cmd.Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("lease rate limit tokens: %w", err)
	}
	if len(reply) != 4 {
		return nil, fmt.Errorf("lease rate limit tokens: reply of %d values, want 4", len(reply))
	}
	lim, t := c.lim, c.t
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
