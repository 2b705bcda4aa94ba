// Package ratelimit enforces the subscription-tier rate limits: each limit
// key (an API key id, a JWT subject or an org id — the caller chooses) gets
// its tier's rate and burst, shared by every replica of odin authz through
// Redis. The shared state is a GCRA per key in Redis, updated by a Lua
// script on Redis' own clock; a replica leases small batches of tokens and
// spends them in process, so most requests never reach Redis. When Redis
// is unavailable the limiter fails open to a per-replica GCRA (or, with
// Options.FailClosed, refuses). The design, its accuracy and overshoot
// bounds are in docs/RATELIMIT.md.
package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/groupcommit"
	"github.com/odin-scan/odin-authz/internal/lograte"
)

// DefaultTier is Options.DefaultTier's default.
const DefaultTier = "free"

// Options configure a Limiter. Zero values take the defaults.
type Options struct {
	// Tiers are added over DefaultTiers (same name: replaced).
	Tiers map[string]Tier
	// DefaultTier applies to an empty or unknown tier name, default "free".
	// It must name a tier.
	DefaultTier string
	// Prefix starts every Redis key, default "odin:ratelimit:". The key of
	// limit key K is Prefix + "{K}": one key per script, hash-tagged for
	// Redis Cluster.
	Prefix string
	// FailClosed refuses requests that need Redis while it is unreachable
	// (Result.Unavailable) instead of limiting them per replica.
	FailClosed bool
	// Timeout bounds one Redis call, default 100ms. It is applied as a
	// context deadline, which go-redis honours only with
	// ContextTimeoutEnabled; give the client short Read/WriteTimeouts too.
	Timeout time.Duration
	// Backoff is how long Redis is left alone after a failure, default 1s.
	Backoff time.Duration
	// LeaseFraction is the share of a tier's burst leased at a time, in
	// (0, 1], default 0.05. A batch is at least one token and at most a
	// tenth of the tier's rate × LeaseTTL.
	LeaseFraction float64
	// LeaseTTL is how long leased tokens may be spent, default 1s.
	LeaseTTL time.Duration
	// MaxKeys is about how many limit keys a replica tracks, default
	// 100,000. Keys holding no live state are dropped first; it should
	// exceed the number of keys active within a LeaseTTL, or an evicted
	// key's unspent batch may be leased twice.
	MaxKeys int
}

// Result is one decision with what the front ends need for the
// ratelimit-limit, ratelimit-remaining, ratelimit-reset and retry-after
// headers.
type Result struct {
	// Allowed says the request may proceed.
	Allowed bool
	// Limit is the tier's burst: the requests a caller may make at once.
	Limit int
	// Remaining is an estimate of the requests this caller may still make
	// at once: this replica's unspent lease plus what the shared bucket
	// held at the last lease. 0 on a refusal.
	Remaining int
	// Reset is how long until the budget is whole again if the caller
	// stops.
	Reset time.Duration
	// RetryAfter is, on a refusal, how long until this replica may allow
	// the caller again; 0 when allowed.
	RetryAfter time.Duration
	// Unavailable is set on a refusal because Redis is unreachable and
	// Options.FailClosed is set, or because ctx ended while Redis was being
	// asked: answer 503, not 429.
	Unavailable bool
	// StoreWait is how long Allow waited for Redis (a lease renewal, or
	// another request's renewal of the same bucket); zero when the lease
	// in hand answered.
	StoreWait time.Duration
}

// Limiter decides whether a limit key may make one more request. It is safe
// for concurrent use.
type Limiter struct {
	client   redis.UniversalClient // nil: per-replica limits only
	opts     Options
	tiers    map[string]*limits
	fallback *limits // for unknown tiers
	keys     *keyTable
	m        *metrics
	log      *slog.Logger
	batcher  *groupcommit.Batcher[*leaseCall]

	// downUntil is the UnixNano until which Redis is left alone; 0 when
	// it is believed up.
	downUntil atomic.Int64
	errLog    lograte.Limiter
	// reported is set once an outage was logged, so its end is logged too.
	reported atomic.Bool

	// own holds the prepared limits of limit keys' own rates and bursts
	// (AllowOwn), one per distinct limit, so that a check prepares
	// nothing. A check reads it without a lock: a new limit replaces the
	// whole map (under ownMu), which starts over empty once it holds
	// maxOwnLimits.
	ownMu sync.Mutex
	own   atomic.Pointer[map[Tier]*limits]
}

// New builds a Limiter. client may be nil: then every replica enforces each
// tier on its own (for odin dev and single-replica setups). reg may be nil
// (a private registry), logger may be nil (discarded).
func New(client redis.UniversalClient, opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Limiter, error) {
	if opts.DefaultTier == "" {
		opts.DefaultTier = DefaultTier
	}
	if opts.Prefix == "" {
		opts.Prefix = "odin:ratelimit:"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 100 * time.Millisecond
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.LeaseFraction == 0 {
		opts.LeaseFraction = 0.05
	}
	if !(opts.LeaseFraction > 0 && opts.LeaseFraction <= 1) {
		return nil, fmt.Errorf("rate limit lease fraction %v: want more than 0 and at most 1", opts.LeaseFraction)
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = time.Second
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 100_000
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tiers := DefaultTiers()
	for name, t := range opts.Tiers {
		tiers[name] = t
	}
	l := &Limiter{
		client: client,
		opts:   opts,
		tiers:  make(map[string]*limits, len(tiers)),
		keys:   newKeyTable(opts.MaxKeys),
		log:    logger,
		errLog: lograte.Limiter{Every: 10 * time.Second},
	}
	for name, t := range tiers {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("rate limit tier %q: %w", name, err)
		}
		l.tiers[name] = newLimits(name, t, opts.LeaseFraction, opts.LeaseTTL)
	}
	l.batcher = groupcommit.New(maxLeaseBatch, l.leaseBatch)
	l.fallback = l.tiers[opts.DefaultTier]
	if l.fallback == nil {
		return nil, fmt.Errorf("rate limit default tier %q: no such tier", opts.DefaultTier)
	}
	l.m = newMetrics(reg, l.keys)
	return l, nil
}

// Limits returns the tier a name resolves to (the default tier for an empty
// or unknown name), with its rate as enforced (the token interval is
// rounded to a microsecond), and the size of its lease batch: what a front
// end needs for a policy header, and an operator for a startup log line.
func (l *Limiter) Limits(tier string) (name string, t Tier, batch int) {
	lim := l.limitsFor(tier)
	return lim.name, Tier{Rate: 1e6 / float64(lim.intervalUS), Burst: lim.burst}, lim.batch
}

// maxOwnLimits bounds Limiter.own: far more distinct limits than keys
// are likely to be given.
const maxOwnLimits = 10_000

// ownLimits returns the prepared limits of t, preparing them the first
// time; an invalid t (the key store validates limits, so it cannot
// happen) gets the default tier's.
func (l *Limiter) ownLimits(t Tier) *limits {
	if own := l.own.Load(); own != nil {
		if lim := (*own)[t]; lim != nil {
			return lim
		}
	}
	if t.Validate() != nil {
		return l.fallback
	}
	l.ownMu.Lock()
	defer l.ownMu.Unlock()
	var cur map[Tier]*limits
	if own := l.own.Load(); own != nil {
		cur = *own
	}
	if lim := cur[t]; lim != nil {
		return lim
	}
	next := make(map[Tier]*limits, len(cur)+1)
	if len(cur) < maxOwnLimits {
		maps.Copy(next, cur)
	}
	lim := newLimits(OwnLimit, t, l.opts.LeaseFraction, l.opts.LeaseTTL)
	next[t] = lim
	l.own.Store(&next)
	return lim
}

// OwnLimit is the name Limits gives a limit key's own limit (AllowOwn).
const OwnLimit = "own"

func (l *Limiter) limitsFor(tier string) *limits {
	if lim, ok := l.tiers[tier]; ok {
		return lim
	}
	return l.fallback
}

// Allow decides one request of key under tier at now. It never fails: a
// Redis outage is handled as Options says. An empty key is one shared
// budget, which is the caller's mistake to avoid.
//
// While this replica holds a lease for key, Allow takes no lock and
// allocates nothing.
func (l *Limiter) Allow(ctx context.Context, key, tier string, now time.Time) Result {
	lim := l.limitsFor(tier)
	t := now.UnixNano()
	b := l.keys.get(key, t)
	if r, ok := l.fromLease(b, lim, t); ok {
		b.count(r, pathLease)
		return r
	}
	if l.client == nil {
		r := b.takeLocal(lim, t)
		b.count(r, pathLocal)
		return r
	}
	return l.shared(ctx, b, key, lim, t)
}

// AllowOwn decides one request of key under its own limit own rather
// than a tier's: an API key an operator gave its own rate and burst. It
// is Allow in every other way (the lease, the Redis outage, the Result:
// its Limit is own.Burst). The key should name the limit as well as the
// caller (the API key's id with own.String()), so that a changed limit
// starts from a bucket of its own instead of inheriting the state of the
// old one: that is what extauthz does.
//
// Its body repeats Allow's on purpose: with both calling one helper, the
// call (not inlined) cost every tier's check about 10 ns
// (BenchmarkAllowLocal, -cpu 1: 53-56 ns as it is, 65-70 with the helper).
func (l *Limiter) AllowOwn(ctx context.Context, key string, own Tier, now time.Time) Result {
	lim := l.ownLimits(own)
	t := now.UnixNano()
	b := l.keys.get(key, t)
	if r, ok := l.fromLease(b, lim, t); ok {
		b.count(r, pathLease)
		return r
	}
	if l.client == nil {
		r := b.takeLocal(lim, t)
		b.count(r, pathLocal)
		return r
	}
	return l.shared(ctx, b, key, lim, t)
}

// shared answers a request the lease in hand cannot, with Redis: degraded
// while it is down, else from a new lease.
func (l *Limiter) shared(ctx context.Context, b *bucket, key string, lim *limits, t int64) Result {
	if !l.redisUp(t) {
		return l.degraded(b, lim, t)
	}
	began := time.Now()
	r := l.renew(ctx, b, key, lim, t)
	r.StoreWait = time.Since(began)
	return r
}

// fromLease answers from b's current lease, if it has one for this tier
// that is still valid: a token, or a refusal Redis gave until a time.
func (l *Limiter) fromLease(b *bucket, lim *limits, t int64) (Result, bool) {
	le := b.lease.Load()
	if le == nil || le.limits != lim || t >= le.expires {
		return Result{}, false
	}
	if left := le.tokens.Add(-1); left >= 0 {
		return Result{
			Allowed:   true,
			Limit:     lim.burst,
			Remaining: int(min(left+le.shared, int64(lim.burst))),
			Reset:     positive(le.resetAt - t),
		}, true
	}
	if t < le.denyUntil {
		return Result{
			Limit:      lim.burst,
			Reset:      positive(le.resetAt - t),
			RetryAfter: positive(le.denyUntil - t),
		}, true
	}
	return Result{}, false
}

// renew takes a new lease for b from Redis and answers from it. Requests
// for the same key on this replica wait for one lease request rather than
// each asking Redis.
func (l *Limiter) renew(ctx context.Context, b *bucket, key string, lim *limits, t int64) Result {
	b.mu.Lock()
	for b.evicted { // dropped from the table meanwhile: use the live bucket
		b.mu.Unlock()
		b = l.keys.get(key, t)
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	if r, ok := l.fromLease(b, lim, t); ok { // another request renewed it
		b.count(r, pathLease)
		return r
	}
	le, err := l.lease(ctx, key, lim, t)
	switch {
	case err != nil && ctx.Err() != nil:
		// The caller gave up; that says nothing about Redis.
		r := Result{Limit: lim.burst, Unavailable: true}
		b.count(r, pathRedis)
		return r
	case err != nil:
		l.redisFailed(t, err)
		return l.degraded(b, lim, t)
	}
	l.redisOK()
	b.lease.Store(le)
	r, ok := l.fromLease(b, lim, t)
	if !ok { // cannot happen: a lease holds a token or a refusal until later
		r = Result{Limit: lim.burst, RetryAfter: time.Millisecond}
	}
	b.count(r, pathRedis)
	return r
}

// degraded answers while Redis is unreachable.
func (l *Limiter) degraded(b *bucket, lim *limits, t int64) Result {
	if l.opts.FailClosed {
		r := Result{
			Limit:       lim.burst,
			RetryAfter:  max(positive(l.downUntil.Load()-t), time.Millisecond),
			Unavailable: true,
		}
		b.count(r, pathFallback)
		return r
	}
	r := b.takeLocal(lim, t)
	b.count(r, pathFallback)
	return r
}

// redisUp reports whether Redis may be asked: yes unless a failure was
// seen less than Backoff ago. When the backoff is over, exactly one caller
// gets yes (the probe); the others wait for another backoff or its success.
func (l *Limiter) redisUp(t int64) bool {
	until := l.downUntil.Load()
	if until == 0 {
		return true
	}
	if t < until {
		return false
	}
	return l.downUntil.CompareAndSwap(until, t+int64(l.opts.Backoff))
}

func (l *Limiter) redisFailed(t int64, err error) {
	l.downUntil.Store(t + int64(l.opts.Backoff))
	l.m.redisCalls[callError].Inc()
	if l.errLog.Allow() {
		l.reported.Store(true)
		mode := "failing open: limiting per replica"
		if l.opts.FailClosed {
			mode = "failing closed: refusing requests that need a lease"
		}
		l.log.Warn("rate limiter: redis unavailable, "+mode, "error", err.Error(), "backoff", l.opts.Backoff)
	}
}

func (l *Limiter) redisOK() {
	if l.downUntil.Load() != 0 {
		l.downUntil.Store(0)
	}
	if l.reported.Load() && l.reported.CompareAndSwap(true, false) {
		l.log.Info("rate limiter: redis reachable again, shared limits restored")
	}
}

func positive(ns int64) time.Duration {
	return time.Duration(max(ns, 0))
}
