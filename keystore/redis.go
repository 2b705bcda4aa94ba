package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the shared tier between the in-process LRU and PostgreSQL, and
// the invalidation bus between replicas. It is best-effort: every failure is
// counted and logged, then the caller falls through to the next tier. After a
// failure it is skipped for a short backoff, so a dead Redis costs one failed
// round trip per backoff, not one per request.
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	backoff time.Duration
	// opTimeout bounds one cache read or write, retries included, so a slow
	// Redis never eats the PostgreSQL lookup's budget.
	opTimeout time.Duration
	// downUntil is the UnixNano until which Redis is skipped after an error.
	downUntil atomic.Int64
	m         *Metrics
	log       *slog.Logger
	errLog    logLimiter
}

// RedisOptions configure the Redis tier. Zero values take the defaults.
type RedisOptions struct {
	URL     string        // redis://[user:pass@]host:port/db
	Prefix  string        // prefix of every key and of the bus channel, default "odin:"
	Timeout time.Duration // dial, read and write timeout, default 100ms
	Backoff time.Duration // how long Redis is skipped after an error, default 1s
}

// errCacheMiss reports that Redis holds nothing for a hash.
var errCacheMiss = errors.New("not cached")

// OpenRedis creates the client. It does not wait for the server: Redis being
// down is a degraded mode, not a reason to refuse to start.
func OpenRedis(opts RedisOptions, m *Metrics, logger *slog.Logger) (*Redis, error) {
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, errors.New("parse redis url: invalid Redis URL")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 100 * time.Millisecond
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.Prefix == "" {
		opts.Prefix = "odin:"
	}
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = 2*opts.Timeout, opts.Timeout, opts.Timeout
	ro.PoolTimeout = opts.Timeout
	// One quick retry for a dropped pooled connection; no long backoffs
	// eating the request's budget.
	ro.MaxRetries, ro.MinRetryBackoff, ro.MaxRetryBackoff = 1, time.Millisecond, 10*time.Millisecond
	return &Redis{
		opTimeout: 3 * opts.Timeout,
		client:    redis.NewClient(ro),
		prefix:    opts.Prefix,
		backoff:   opts.Backoff,
		m:         m,
		log:       logger,
		errLog:    logLimiter{every: 10 * time.Second},
	}, nil
}

// Client is the underlying client, for other Redis users (the rate limiter)
// to share its connections.
func (r *Redis) Client() redis.UniversalClient { return r.client }

// Close closes the client.
func (r *Redis) Close() error { return r.client.Close() }

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

func (r *Redis) available() bool {
	until := r.downUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// fail records a Redis error: counted per operation, logged at most once per
// interval, and Redis skipped for the backoff.
func (r *Redis) fail(op string, err error) {
	r.downUntil.Store(time.Now().Add(r.backoff).UnixNano())
	r.m.redisErrors.WithLabelValues(op).Inc()
	if r.errLog.allow() {
		r.log.Warn("redis unavailable, falling through to the next tier", "op", op, "error", err.Error())
	}
}

func (r *Redis) ok() { r.downUntil.Store(0) }

func (r *Redis) keyName(h Hash) string { return r.prefix + "key:" + h.String() }

// cachedKey is the Redis form of an entry: the key record (absent for a
// negative entry) and the time it was read from PostgreSQL.
type cachedKey struct {
	Key   *Key  `json:"k,omitempty"`
	Until int64 `json:"u"`
}

// get returns the cached entry for h, errCacheMiss, or a Redis error.
func (r *Redis) get(ctx context.Context, h Hash) (*entry, error) {
	if !r.available() {
		return nil, errCacheMiss
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	raw, err := r.client.Get(ctx, r.keyName(h)).Bytes()
	if errors.Is(err, redis.Nil) {
		r.ok()
		return nil, errCacheMiss
	}
	if err != nil {
		r.fail("get", err)
		return nil, err
	}
	r.ok()
	var c cachedKey
	if err := json.Unmarshal(raw, &c); err != nil || (c.Key != nil && c.Key.ID == "") {
		r.m.redisErrors.WithLabelValues("decode").Inc()
		return nil, errCacheMiss
	}
	if c.Key != nil {
		c.Key.Hash = h
	}
	return &entry{key: c.Key, until: time.Unix(0, c.Until)}, nil
}

// set writes e for h with a TTL that ends when the entry does. With onlyNew
// it uses SET NX: a filler that read PostgreSQL before a concurrent revoke
// must not overwrite the revoked record the revoker wrote.
func (r *Redis) set(ctx context.Context, h Hash, e *entry, onlyNew bool) {
	if !r.available() {
		return
	}
	ttl := time.Until(e.until)
	if ttl <= time.Millisecond {
		return
	}
	raw, err := json.Marshal(cachedKey{Key: e.key, Until: e.until.UnixNano()})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	if onlyNew {
		err = r.client.SetArgs(ctx, r.keyName(h), raw, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
		if errors.Is(err, redis.Nil) { // NX refused: somebody wrote first, which is fine
			err = nil
		}
	} else {
		err = r.client.Set(ctx, r.keyName(h), raw, ttl).Err()
	}
	if err != nil {
		r.fail("set", err)
		return
	}
	r.ok()
}

// GetRaw reads a value under the prefix; ok is false when it is absent or
// Redis is unavailable (best-effort, like every cache read).
func (r *Redis) GetRaw(ctx context.Context, name string) ([]byte, bool) {
	if !r.available() {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	raw, err := r.client.Get(ctx, r.prefix+name).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.fail("get", err)
		}
		return nil, false
	}
	r.ok()
	return raw, true
}

// SetRaw writes a value under the prefix with a TTL, best-effort.
func (r *Redis) SetRaw(ctx context.Context, name string, val []byte, ttl time.Duration) {
	if !r.available() || ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	if err := r.client.Set(ctx, r.prefix+name, val, ttl).Err(); err != nil {
		r.fail("set", err)
		return
	}
	r.ok()
}

func revokedSessionKey(sid string) string { return "rsid:" + sid }

// Invalidation is one message on the bus.
type Invalidation struct {
	// Kind says what to drop.
	Kind InvalidationKind
	// Hash is the key's hash for InvalidateKey.
	Hash Hash
	// SessionID is the session for InvalidateSession.
	SessionID string
	// AckID, when set, asks every replica to acknowledge the message on the
	// acks channel once it has acted on it.
	AckID string
}

// InvalidationKind says what an Invalidation drops.
type InvalidationKind uint8

// The kinds of invalidation.
const (
	// InvalidateKey drops one key hash from every cache.
	InvalidateKey InvalidationKind = iota + 1
	// InvalidateAll drops everything: sent to a subscriber after it
	// reconnects, since it may have missed messages while it was away.
	InvalidateAll
	// InvalidateSession revokes every token of one session.
	InvalidateSession
)

func (inv Invalidation) encode() string {
	var msg string
	switch inv.Kind {
	case InvalidateKey:
		msg = "key " + inv.Hash.String()
	case InvalidateSession:
		msg = "session " + inv.SessionID
	default:
		msg = "all -"
	}
	if inv.AckID != "" {
		msg += " " + inv.AckID
	}
	return msg
}

func decodeInvalidation(s string) (Invalidation, error) {
	kind, arg, _ := strings.Cut(s, " ")
	arg, ackID, _ := strings.Cut(arg, " ")
	inv, err := decodeKind(kind, arg)
	inv.AckID = ackID
	return inv, err
}

func decodeKind(kind, arg string) (Invalidation, error) {
	switch kind {
	case "key":
		h, err := ParseHash(arg)
		if err != nil {
			return Invalidation{}, err
		}
		return Invalidation{Kind: InvalidateKey, Hash: h}, nil
	case "all":
		return Invalidation{Kind: InvalidateAll}, nil
	case "session":
		if !ValidSessionID(arg) {
			return Invalidation{}, errors.New("invalid session id")
		}
		return Invalidation{Kind: InvalidateSession, SessionID: arg}, nil
	}
	return Invalidation{}, fmt.Errorf("unknown invalidation %q", kind)
}

func (r *Redis) channel() string { return r.prefix + "invalidate" }

// Publish sends an invalidation to every subscribed replica.
func (r *Redis) Publish(ctx context.Context, inv Invalidation) error {
	if err := r.client.Publish(ctx, r.channel(), inv.encode()).Err(); err != nil {
		r.m.redisErrors.WithLabelValues("publish").Inc()
		return fmt.Errorf("publish invalidation: %w", err)
	}
	return nil
}

// Subscribe delivers every invalidation to fn until ctx ends, as a bus
// with no replica identity (no heartbeat, no acknowledgements): for
// processes such as odin admin that only listen.
func (r *Redis) Subscribe(ctx context.Context, fn func(Invalidation), ready func()) {
	(&Bus{r: r}).Run(ctx, fn, ready)
}

// logLimiter lets one log line through per interval, so an outage is
// reported without writing a line per request.
type logLimiter struct {
	every time.Duration
	next  atomic.Int64
}

func (l *logLimiter) allow() bool {
	now := time.Now().UnixNano()
	next := l.next.Load()
	return now >= next && l.next.CompareAndSwap(next, now+int64(l.every))
}
