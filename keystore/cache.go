package keystore

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/odin-scan/odin-authz/internal/lograte"
)

// CacheOptions configure the cache tiers. Zero values take the defaults.
type CacheOptions struct {
	// Size is the number of known keys the in-process tier holds, as
	// compact records (about 200 bytes each, outside the Go heap). When it
	// is full, a key not read for longest is evicted (CLOCK, per shard).
	// Default 100000.
	Size int
	// HotSize is the number of cached keys whose prepared answer (for odin
	// authz, the rendered principal: about 1.3 KB) is kept as well, most
	// recently used first: a check of one of them reads it and allocates
	// nothing. Another cached key's is rendered from its compact record on
	// its check (no store query, but the rendering work), then kept.
	// Default 4096; at most Size.
	HotSize int
	// NegativeSize is the number of unknown keys remembered, in a tier of
	// their own: no flood of unknown keys evicts a known one. Default 100000.
	NegativeSize int
	// UnknownKeyRate bounds, per second and per replica, the PostgreSQL
	// lookups that find no key (the burst is the same number). While that
	// budget is spent, a miss that would go to PostgreSQL is answered as in
	// an outage: a stale cached entry if there is one, else ErrUnavailable
	// (503), never "unknown" (401): it may be a real key. Default 100;
	// negative: no bound.
	UnknownKeyRate float64
	// Filter enables the key filter: a membership filter of every key hash
	// that refuses forged keys with no lookup of their own (see keyFilter).
	// Run builds it.
	Filter bool
	// FilterRefresh is how often the key filter is rebuilt from the store,
	// folding in the keys learnt since. Default 10m.
	FilterRefresh time.Duration
	// TTL bounds how long any tier may answer for a key after it was read
	// from PostgreSQL. It is the safety net of revocation: if every bus
	// message is lost, a revoked key is still refused everywhere within TTL.
	// Default 30s.
	TTL time.Duration
	// NegativeTTL is how long "no such key" is cached. Short, so that a flood
	// of bogus keys never reaches PostgreSQL twice in a row. Creating a key
	// clears it at once through Redis and the bus. Default 5s.
	NegativeTTL time.Duration
	// StaleIfError is how long past its TTL an LRU entry may still answer
	// while PostgreSQL is unreachable, so cached keys keep working through an
	// outage. Zero takes the default, 5m; negative disables.
	StaleIfError time.Duration
	// StoreTimeout bounds one PostgreSQL lookup. Default 500ms: below the
	// ext_authz timeout, so an outage reaches the client as a 503.
	StoreTimeout time.Duration
	// Fenced, when set, reports that this replica may have missed bus
	// messages (Bus.Fenced): then no LRU entry answers and no stale entry is
	// served.
	Fenced func(time.Time) bool
}

// Defaults of CacheOptions (TTL's is DefaultCacheTTL).
const (
	DefaultCacheSize         = 100_000
	DefaultHotCacheSize      = 4096
	DefaultNegativeCacheSize = 100_000
	DefaultUnknownKeyRate    = 100
	DefaultFilterRefresh     = 10 * time.Minute
	DefaultNegativeTTL       = 5 * time.Second
	DefaultStaleIfError      = 5 * time.Minute
	DefaultStoreTimeout      = 500 * time.Millisecond
)

func (o *CacheOptions) defaults() {
	orDefault(&o.Size, DefaultCacheSize)
	orDefault(&o.HotSize, DefaultHotCacheSize)
	o.HotSize = min(o.HotSize, o.Size) // hot keys are cached keys
	orDefault(&o.NegativeSize, DefaultNegativeCacheSize)
	if o.UnknownKeyRate == 0 {
		o.UnknownKeyRate = DefaultUnknownKeyRate
	}
	orDefault(&o.FilterRefresh, DefaultFilterRefresh)
	orDefault(&o.TTL, DefaultCacheTTL)
	orDefault(&o.NegativeTTL, DefaultNegativeTTL)
	if o.StaleIfError == 0 {
		o.StaleIfError = DefaultStaleIfError
	}
	orDefault(&o.StoreTimeout, DefaultStoreTimeout)
}

// Entry is a cached key as a check reads it: its id, expiry and
// revocation, and what the cache's prepare made of it (P). An entry is
// immutable and shared by every check that reads it.
type Entry[P any] struct {
	id               string
	expires, revoked int64 // Unix nanoseconds, 0: never (see nanos)
	until, stale     int64 // the cache's: fresh until, usable in an outage until
	ver              uint64
	disabled         bool
	prepared         P
}

// ID is the key's public id.
func (e *Entry[P]) ID() string { return e.id }

// Usable reports why the key may not be used at now: ErrRevoked,
// ErrExpired, ErrDisabled, or nil (as Key.Usable).
func (e *Entry[P]) Usable(now time.Time) error {
	n := now.UnixNano()
	if e.revoked != 0 && n >= e.revoked {
		return ErrRevoked
	}
	if e.expires != 0 && n >= e.expires {
		return ErrExpired
	}
	if e.disabled {
		return ErrDisabled
	}
	return nil
}

// Prepared is what the cache's prepare made of the key.
func (e *Entry[P]) Prepared() P { return e.prepared }

// negEntry is the unknown-key tier's: no key has the hash, until until.
type negEntry struct{ until, stale int64 }

// Cache answers "which key has this hash?" from the tiers of known keys,
// the key filter, the tier of unknown keys, then Redis, then PostgreSQL,
// collapsing concurrent misses into one store query.
//
// Known keys have two tiers. Every one has a compact record (compactKeys:
// Size of them, outside the Go heap). The most recently used (HotSize)
// also have their Entry, with what prepare made of the key (a P, for
// example a pre-rendered response), so a check of a hot key only reads it.
// A cached key that is not hot gets its entry rendered from its record on
// its check, which makes it hot. A record's version tells an entry rendered
// from it from one of an older record of the same key.
type Cache[P any] struct {
	opts    CacheOptions
	prepare func(*Key) P
	store   Store
	redis   *Redis                      // nil without Redis
	keys    *compactKeys                // known keys
	hot     *lru.Cache[Hash, *Entry[P]] // known keys' entries, the most recently used
	neg     *lru.Cache[Hash, negEntry]  // unknown keys
	ver     atomic.Uint64               // the last record version given
	// filter refuses forged keys (nil: disabled); unknown bounds the store
	// lookups that find nothing (nil: no bound).
	filter      *keyFilter
	filterTried atomic.Bool
	unknown     *rate.Limiter
	sf          singleflight.Group
	m           *Metrics
	log         *slog.Logger
	errLog      lograte.Limiter
	throttleLog lograte.Limiter

	// fillMu and gen close the race between a fill and an invalidation: a
	// load that began before an invalidation must not put what it read into
	// the tiers after the invalidation removed it. Held only on misses,
	// renders and invalidations, never on a hit of a hot key.
	fillMu sync.Mutex
	gen    atomic.Uint64

	// storeDownUntil (UnixNano) makes misses fail fast for a moment after a
	// store error, so a hung PostgreSQL costs one timeout per backoff rather
	// than one per request.
	storeDownUntil atomic.Int64
	// storeLastOK (UnixNano) is when a store lookup last succeeded.
	storeLastOK atomic.Int64
}

// storeOK records a successful store lookup: the backoff ends.
func (c *Cache[P]) storeOK(now time.Time) {
	c.storeDownUntil.Store(0)
	c.storeLastOK.Store(now.UnixNano())
}

// storeBackoff is how long misses skip PostgreSQL after it failed.
const storeBackoff = 500 * time.Millisecond

// staleRetry is how long a stale entry served during an outage answers from
// the LRU before PostgreSQL is tried again.
const staleRetry = time.Second

// NoPrepare is the prepare of a cache whose entries carry nothing beside
// the key's id and state.
func NoPrepare(*Key) struct{} { return struct{}{} }

// errNoPrepare: NewCache was given no prepare.
var errNoPrepare = errors.New("build cache: no prepare (NoPrepare when entries carry nothing beside the key)")

// NewCache builds the tiers. redis may be nil. prepare is called once per
// known key loaded, and again when a key's entry is rendered from its
// compact record: it must depend only on what the record keeps (see
// compactKeys.view: id, user and org ids, scopes, tier, own rate limit,
// network allowlist, expiry, revocation, and whether it is disabled). Its result rides along in the entry (Entry.Prepared);
// NoPrepare when there is nothing to prepare.
func NewCache[P any](store Store, redis *Redis, opts CacheOptions, prepare func(*Key) P, m *Metrics, logger *slog.Logger) (*Cache[P], error) {
	if prepare == nil {
		return nil, errNoPrepare
	}
	opts.defaults()
	keys, err := newCompactKeys(opts.Size)
	if err != nil {
		return nil, err
	}
	hot, err := lru.New[Hash, *Entry[P]](opts.HotSize)
	if err != nil {
		return nil, err
	}
	keys.evicted = func(h Hash) { hot.Remove(h) }
	neg, err := lru.New[Hash, negEntry](opts.NegativeSize)
	if err != nil {
		return nil, err
	}
	c := &Cache[P]{opts: opts, prepare: prepare, store: store, redis: redis, keys: keys, hot: hot, neg: neg, m: m, log: logger,
		errLog: lograte.Limiter{Every: 10 * time.Second}, throttleLog: lograte.Limiter{Every: 10 * time.Second}}
	if opts.UnknownKeyRate > 0 {
		c.unknown = rate.NewLimiter(rate.Limit(opts.UnknownKeyRate), max(1, int(opts.UnknownKeyRate)))
	}
	if opts.Filter {
		c.filter = newKeyFilter()
	}
	return c, nil
}

// The key filter's rebuilds: at least filterMinGap apart, and each read of
// the store bounded.
const (
	filterMinGap       = 2 * time.Second
	filterBuildTimeout = 5 * time.Minute
)

// Run builds the key filter at once, then every FilterRefresh (and sooner
// when many keys were learnt since the last build), until ctx ends. It
// returns at once when the filter is disabled.
func (c *Cache[P]) Run(ctx context.Context) {
	f := c.filter
	if f == nil {
		return
	}
	refresh := time.NewTicker(c.opts.FilterRefresh)
	defer refresh.Stop()
	var last time.Time
	f.want() // the first build
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.request:
		case <-refresh.C:
		}
		if wait := time.Until(last.Add(filterMinGap)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		select { // this build covers a request made meanwhile
		case <-f.request:
		default:
		}
		last = time.Now()
		st, err := f.build(ctx, c.store, filterBuildTimeout)
		c.filterTried.Store(true)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.m.filterBuilds.WithLabelValues("error").Inc()
			if c.errLog.Allow() {
				c.log.Warn("key filter not built: unknown keys are looked up in the store (bounded by the unknown-key rate) until it is", "error", err.Error())
			}
			f.want() // again, filterMinGap later
			continue
		}
		c.m.filterBuilds.WithLabelValues("ok").Inc()
		c.m.filterKeys.Set(float64(st.keys))
		c.m.filterBytes.Set(float64(st.bytes))
		c.log.Debug("key filter built", "keys", st.keys, "bytes", st.bytes, "took", st.built.Sub(last).String())
	}
}

// FilterReady reports whether the key filter is built. False when
// disabled.
func (c *Cache[P]) FilterReady() bool {
	return c.filter != nil && c.filter.state.Load() != nil
}

// FilterTried reports whether a build of the key filter has ended, built
// or failed.
func (c *Cache[P]) FilterTried() bool { return c.filterTried.Load() }

// Options returns the options in force, defaults filled in.
func (c *Cache[P]) Options() CacheOptions { return c.opts }

// Len is the number of known keys cached (the unknown-key tier not
// counted).
func (c *Cache[P]) Len() int { return c.keys.len() }

// Lookup returns the entry for a key hash: ErrNotFound for an unknown key,
// ErrUnavailable when the store cannot be reached and nothing usable is
// cached. A found key may be revoked or expired: check Usable. now is the
// caller's clock reading, so the hot path reads the clock once.
func (c *Cache[P]) Lookup(ctx context.Context, h Hash, now time.Time) (*Entry[P], error) {
	e, _, err := c.LookupWait(ctx, h, now)
	return e, err
}

// LookupWait is Lookup that also says how long it waited past the
// in-process tiers: for the key filter's catch-up read, Redis, PostgreSQL,
// or a concurrent lookup of the same hash (zero when the LRU or the
// unknown-key tier answered; the clock is read on misses only).
func (c *Cache[P]) LookupWait(ctx context.Context, h Hash, now time.Time) (*Entry[P], time.Duration, error) {
	if e := c.cached(h, now.UnixNano()); e != nil && !c.fenced(now) {
		c.m.hitLRU.Inc()
		return e, 0, nil
	}
	if e, ok := c.neg.Get(h); ok && now.UnixNano() < e.until && !c.fenced(now) {
		c.m.hitNegative.Inc()
		return nil, 0, ErrNotFound
	}
	began := time.Now()
	e, err := c.lookupMiss(ctx, h, now)
	return e, time.Since(began), err
}

// lookupMiss is Lookup past the in-process tiers.
func (c *Cache[P]) lookupMiss(ctx context.Context, h Hash, now time.Time) (*Entry[P], error) {
	if c.refused(ctx, h, now) {
		c.m.hitFilter.Inc()
		return nil, ErrNotFound
	}
	// The flight is per hash and generation: a caller that missed after an
	// invalidation must not share a load that began before it, which may
	// have read the key as it was before the change, and the change may
	// have been acknowledged (a revoke answered 2xx) since.
	gen := c.gen.Load()
	var flight [len(h) + 8]byte
	copy(flight[:], h[:])
	binary.LittleEndian.PutUint64(flight[len(h):], gen)
	v, err, _ := c.sf.Do(string(flight[:]), func() (any, error) {
		// A flight that ended between this caller's miss and its Do has
		// filled the tiers: use that rather than query again.
		if now := time.Now(); !c.fenced(now) {
			if e := c.cached(h, now.UnixNano()); e != nil {
				return e, nil
			}
			if e, ok := c.neg.Peek(h); ok && now.UnixNano() < e.until {
				return nil, ErrNotFound
			}
		}
		return c.load(ctx, h, gen)
	})
	if err != nil {
		return nil, err
	}
	return v.(*Entry[P]), nil
}

// cached returns h's entry if it is fresh at n (Unix nanoseconds): the hot
// tier's, else one rendered from the key's compact record (then hot).
func (c *Cache[P]) cached(h Hash, n int64) *Entry[P] {
	if e, ok := c.hot.Get(h); ok && n < e.until {
		return e
	}
	k, m, ok := c.keys.view(h)
	if !ok || n >= m.until {
		return nil
	}
	e := &Entry[P]{id: k.ID, expires: m.expires, revoked: m.revoked, until: m.until, stale: m.stale, ver: m.ver,
		disabled: m.disabled, prepared: c.prepare(k)}
	c.m.renders.Inc()
	c.fillMu.Lock()
	// Kept only if the record is still the one rendered: a fill since has
	// put its own entry in the hot tier, and an invalidation removed both.
	if v, ok := c.keys.version(h); ok && v == m.ver {
		c.hot.Add(h, e)
	}
	c.fillMu.Unlock()
	return e
}

// refused reports whether the key filter says no key has h, confirmed by
// a catch-up read that began after now (see keyFilter): that wait is paid
// by the keys the filter refuses only, and once per key and negative TTL (a
// refusal is remembered in the unknown-key tier, which a creation message
// clears). A cached key exists and is never refused.
func (c *Cache[P]) refused(ctx context.Context, h Hash, now time.Time) bool {
	f := c.filter
	if f == nil {
		return false
	}
	gen := c.gen.Load()
	v := f.check(h)
	if v == filterRefused {
		if _, ok := c.keys.version(h); ok || c.hot.Contains(h) {
			v = filterVouched
		} else if !f.confirm(ctx, c.store, now, c.opts.StoreTimeout) {
			v = filterUntrusted
		} else { // what the read found counts
			v = f.check(h)
		}
	}
	c.m.filterChecks[v].Inc()
	if v != filterRefused {
		return false
	}
	until := now.Add(c.opts.NegativeTTL).UnixNano()
	_, _ = c.fill(h, nil, until, c.staleFor(until), gen)
	return true
}

// fenced reports whether the cached tiers may not answer: the replica is out of bus
// contact and may have missed a revoke that no revoker waited for, so it
// reads every key again (Redis, which revokers overwrite first, or
// PostgreSQL) until contact is back.
func (c *Cache[P]) fenced(now time.Time) bool {
	return c.opts.Fenced != nil && c.opts.Fenced(now)
}

// load fills the tiers from Redis or PostgreSQL, unless an invalidation
// came after gen. It runs once for all the concurrent callers of one hash
// and generation, so it must not depend on the first caller's
// cancellation: it has its own deadline instead.
func (c *Cache[P]) load(ctx context.Context, h Hash, gen uint64) (*Entry[P], error) {
	ctx = context.WithoutCancel(ctx)
	if c.redis != nil {
		if rec, err := c.redis.get(ctx, h); err == nil && time.Now().Before(rec.until) {
			c.m.hitRedis.Inc()
			until := rec.until.UnixNano()
			return c.fill(h, rec.key, until, c.staleFor(until), gen)
		}
	}
	began := time.Now().UnixNano()
	k, err := c.lookupStore(ctx, h, began)
	now := time.Now()
	var until time.Time
	switch {
	case err == nil:
		c.storeOK(now)
		c.m.storeQueries.WithLabelValues("found").Inc()
		if f := c.filter; f != nil {
			if st := f.state.Load(); st == nil || !st.has(h) {
				f.heard(h)
			}
		}
		until = now.Add(c.opts.TTL)
	case errors.Is(err, ErrNotFound):
		c.storeOK(now)
		c.m.storeQueries.WithLabelValues("not_found").Inc()
		if c.unknown != nil {
			c.unknown.Reserve() // into debt when concurrent lookups overdrew it
		}
		k, until = nil, now.Add(c.opts.NegativeTTL)
	default:
		c.storeFailed(err, began, now)
		return c.serveStale(h, now, gen)
	}
	c.m.hitStore.Inc()
	// A load that overlapped an invalidation may have read a row older than
	// the change (a lagging read replica, or the primary before the commit):
	// it answers its callers but is shared with no other replica.
	if c.redis != nil && c.gen.Load() == gen {
		c.redis.set(ctx, h, &record{key: k, until: until}, true)
	}
	return c.fill(h, k, until.UnixNano(), c.staleFor(until.UnixNano()), gen)
}

// lookupStore reads h from the store, unless the store is in its backoff
// or the unknown-key budget is spent: then ErrUnavailable, with no attempt.
func (c *Cache[P]) lookupStore(ctx context.Context, h Hash, began int64) (*Key, error) {
	if down := c.storeDownUntil.Load(); down != 0 && began < down {
		return nil, ErrUnavailable
	}
	if c.unknown != nil && c.unknown.Tokens() < 1 {
		// The budget of lookups that find nothing is spent: a flood
		// of unknown keys the filter let through (or with no filter
		// trusted). Answered as in an outage, never as unknown.
		c.m.storeThrottled.Inc()
		if c.throttleLog.Allow() {
			c.log.Warn("unknown-key lookup budget spent: misses are answered from stale entries or refused with 503 until it refills",
				"rate", c.opts.UnknownKeyRate)
		}
		return nil, ErrUnavailable
	}
	sctx, cancel := context.WithTimeout(ctx, c.opts.StoreTimeout)
	defer cancel()
	return c.store.KeyByHash(sctx, h)
}

// storeFailed records a lookup that failed with err. A real attempt that
// failed (not the backoff, nor the budget) starts the backoff unless a
// lookup that began later has already succeeded: a slow PostgreSQL that
// recovered must not be declared down again by the timeouts of lookups
// sent while it was slow.
func (c *Cache[P]) storeFailed(err error, began int64, now time.Time) {
	if err == ErrUnavailable {
		return
	}
	if c.storeLastOK.Load() < began {
		c.storeDownUntil.Store(now.Add(storeBackoff).UnixNano())
	}
	c.m.storeQueries.WithLabelValues("error").Inc()
	if c.errLog.Allow() {
		c.log.Warn("key store unavailable: serving cached keys only", "error", err.Error())
	}
}

// serveStale answers a lookup the store could not: from the record for h
// past its TTL but within StaleIfError, for staleRetry at most, unless the
// replica is fenced; else ErrUnavailable.
func (c *Cache[P]) serveStale(h Hash, now time.Time, gen uint64) (*Entry[P], error) {
	if c.fenced(now) {
		return nil, ErrUnavailable
	}
	n := now.UnixNano()
	retry := func(stale int64) int64 { return min(n+int64(staleRetry), stale) }
	if k, m, ok := c.keys.view(h); ok {
		if n >= m.stale {
			return nil, ErrUnavailable
		}
		c.m.hitStale.Inc()
		return c.fill(h, k, retry(m.stale), m.stale, gen)
	}
	if e, ok := c.neg.Peek(h); ok && n < e.stale {
		c.m.hitStale.Inc()
		return c.fill(h, nil, retry(e.stale), e.stale, gen)
	}
	return nil, ErrUnavailable
}

// staleFor is until's end of StaleIfError (0: none).
func (c *Cache[P]) staleFor(until int64) int64 {
	if c.opts.StaleIfError <= 0 {
		return 0
	}
	return until + int64(c.opts.StaleIfError)
}

// fill puts what a load found for h in the tiers, fresh until until and
// usable in an outage until stale (Unix nanoseconds): k's compact record
// and its entry (hot), or for a nil k the unknown-key tier's entry. It
// does so unless an invalidation happened since the load began; either way
// the result answers the requests that waited for it, since it was true
// when read: k's entry, or ErrNotFound.
func (c *Cache[P]) fill(h Hash, k *Key, until, stale int64, gen uint64) (*Entry[P], error) {
	if k == nil {
		c.fillMu.Lock()
		if c.gen.Load() == gen {
			c.neg.Add(h, negEntry{until: until, stale: stale})
			c.keys.remove(h)
			c.hot.Remove(h)
		}
		c.fillMu.Unlock()
		return nil, ErrNotFound
	}
	e := &Entry[P]{id: k.ID, expires: nanos(k.ExpiresAt), revoked: nanos(k.RevokedAt), until: until, stale: stale,
		ver: c.ver.Add(1), disabled: !k.DisabledAt.IsZero(), prepared: c.prepare(k)}
	c.fillMu.Lock()
	if c.gen.Load() == gen {
		c.keys.put(h, k, keyMeta{ver: e.ver, until: until, stale: stale})
		c.hot.Add(h, e)
		c.neg.Remove(h)
	}
	c.fillMu.Unlock()
	return e, nil
}

// Invalidate drops what an invalidation names. It is the bus's handler.
func (c *Cache[P]) Invalidate(inv Invalidation) {
	c.fillMu.Lock()
	defer c.fillMu.Unlock()
	c.gen.Add(1)
	switch inv.Kind {
	case InvalidateKey:
		c.keys.remove(inv.Hash)
		c.hot.Remove(inv.Hash)
		c.neg.Remove(inv.Hash)
		if c.filter != nil { // a key created or rolled: it exists
			c.filter.heard(inv.Hash)
		}
	case InvalidateAll:
		c.keys.purge()
		c.hot.Purge()
		c.neg.Purge()
	}
}
