package keystore

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/groupcommit"
	"github.com/odin-scan/odin-authz/internal/lograte"
	"github.com/odin-scan/odin-authz/keystore/redisconn"
)

// Redis is the shared tier between the in-process LRU and PostgreSQL, and
// the invalidation bus between replicas, on the process's Redis connection
// (redisconn). It is best-effort: every failure is counted and logged, then
// the caller falls through to the next tier. After a failure it is skipped
// for a short backoff, so a dead Redis costs one failed round trip per
// backoff, not one per request.
//
// Its rooms: the key records (redis_keys.go), the records' trust across
// failovers (redis_trust.go), the sealed values other users keep
// (redis_values.go), the bus (bus.go) and its messages (invalidation.go).
type Redis struct {
	conn    *redisconn.Conn
	client  redis.UniversalClient // conn's
	prefix  string
	backoff time.Duration
	// sharded: the bus uses sharded pub/sub (SPUBLISH, SSUBSCRIBE) and
	// hash-tagged names, on a cluster (see busName).
	sharded bool
	// trust says which records are too old to answer (see recordTrust).
	trust recordTrust
	// mac authenticates every value written and read (see entryMAC).
	mac *entryMAC
	// pending are revokers' overwrites that failed, by key (retryOverwrite).
	pendingMu sync.Mutex
	pending   map[Hash]*record
	// opTimeout bounds one cache read or write, retries included, so a slow
	// Redis never eats the PostgreSQL lookup's budget.
	opTimeout time.Duration
	// reads groups the first-sight reads of concurrent checks (getRaws).
	reads *groupcommit.Batcher[*rawRead]
	// downUntil is the UnixNano until which Redis is skipped after an error.
	downUntil atomic.Int64
	m         *Metrics
	log       *slog.Logger
	errLog    lograte.Limiter
}

// RedisOptions configure the Redis tier. Zero values take the defaults.
type RedisOptions struct {
	// URL says where Redis is and, by its scheme, which topology: see
	// redisconn.Options.URL.
	URL     string
	Prefix  string        // prefix of every key and of the bus channel, default "odin:"
	Timeout time.Duration // dial, read and write timeout, default 100ms
	Backoff time.Duration // how long Redis is skipped after an error, default 1s
	// MACSecret authenticates every entry this process writes to Redis and
	// reads back (see entryMAC); at least MinMACSecret bytes, required.
	// Every process sharing the Redis and the prefix needs the same one.
	// MACSecretPrevious, when set, is also accepted on read: the secret
	// being rotated out.
	MACSecret, MACSecretPrevious string
}

// OpenRedis opens the connection (redisconn.Open) and builds the tier on
// it. It does not wait for the server: Redis being down is a degraded mode,
// not a reason to refuse to start; a missing or short MAC secret is
// (ErrMACSecret). Errors never contain the URL's passwords nor the secrets.
func OpenRedis(opts RedisOptions, m *Metrics, logger *slog.Logger) (*Redis, error) {
	mac, err := newEntryMAC(opts.MACSecret, opts.MACSecretPrevious)
	if err != nil {
		return nil, err
	}
	orDefault(&opts.Backoff, time.Second)
	if opts.Prefix == "" {
		opts.Prefix = "odin:"
	}
	conn, err := redisconn.Open(redisconn.Options{URL: opts.URL, Timeout: opts.Timeout})
	if err != nil {
		return nil, err
	}
	r := &Redis{
		mac:       mac,
		opTimeout: 3 * conn.Timeout(),
		conn:      conn,
		client:    conn.Client(),
		sharded:   conn.Topology() == redisconn.TopologyCluster,
		prefix:    opts.Prefix,
		backoff:   opts.Backoff,
		m:         m,
		log:       logger,
		errLog:    lograte.Limiter{Every: 10 * time.Second},
	}
	r.reads = groupcommit.New(maxReadBatch, r.readBatch)
	return r, nil
}

// Conn is the connection the tier uses, for the process's other Redis
// users (the rate limiter) to share, and for its topology.
func (r *Redis) Conn() *redisconn.Conn { return r.conn }

// Close closes the connection.
func (r *Redis) Close() error { return r.conn.Close() }

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.conn.Ping(ctx) }

func (r *Redis) available() bool {
	until := r.downUntil.Load()
	return until == 0 || time.Now().UnixNano() >= until
}

// fail records a Redis error: counted per operation, logged at most once per
// interval, and Redis skipped for the backoff.
func (r *Redis) fail(op string, err error) {
	r.downUntil.Store(time.Now().Add(r.backoff).UnixNano())
	r.m.redisErrors.WithLabelValues(op).Inc()
	if r.errLog.Allow() {
		r.log.Warn("redis unavailable, falling through to the next tier", "op", op, "error", err.Error())
	}
}

func (r *Redis) ok() { r.downUntil.Store(0) }
