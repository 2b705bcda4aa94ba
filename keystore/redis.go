package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
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
	// topology is "single", "sentinel" or "cluster" (the URL's scheme).
	topology string
	// sharded: the bus uses sharded pub/sub (SPUBLISH, SSUBSCRIBE) and
	// hash-tagged names, on a cluster (see busName).
	sharded bool
	// watch sees a Sentinel client move to a new master; nil otherwise.
	watch *masterWatch
	// trust says which records are too old to answer (see recordTrust).
	trust recordTrust
	// mac authenticates every value written and read (see entryMAC).
	mac *entryMAC
	// pending are revokers' overwrites that failed, by key (retryOverwrite).
	pendingMu sync.Mutex
	pending   map[Hash]*entry
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
	// URL says where Redis is and, by its scheme, which topology:
	//
	//	redis://[user:pass@]host:port/db            one server (rediss:// for TLS; unix:// too)
	//	redis+sentinel://[suser:spass@]host:port/db?master_name=NAME&addr=host2:port&password=pass
	//	                                            Sentinel: the addresses are sentinels'; the
	//	                                            userinfo authenticates to the sentinels, the
	//	                                            username= and password= parameters to the servers
	//	redis+cluster://[user:pass@]host:port?addr=host2:port&addr=host3:port
	//	                                            Redis Cluster: seed nodes (any, masters or replicas)
	//
	// rediss+sentinel:// and rediss+cluster:// use TLS. After the scheme is
	// reduced to redis:// or rediss://, the URL is go-redis's ParseURL,
	// ParseFailoverURL or ParseClusterURL respectively, so their query
	// parameters apply, except the timeouts and retries, which Timeout
	// sets, and the options that read from replicas (read_only,
	// route_by_latency, route_randomly, replica_only), which are refused:
	// a replica may not have a revoke's write yet.
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

// errCacheMiss reports that Redis holds nothing for a hash.
var errCacheMiss = errors.New("not cached")

// OpenRedis creates the client. It does not wait for the server: Redis being
// down is a degraded mode, not a reason to refuse to start; a missing or
// short MAC secret is (ErrMACSecret). Errors never contain the URL's
// passwords nor the secrets.
func OpenRedis(opts RedisOptions, m *Metrics, logger *slog.Logger) (*Redis, error) {
	mac, err := newEntryMAC(opts.MACSecret, opts.MACSecretPrevious)
	if err != nil {
		return nil, err
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
	client, topology, watch, err := newRedisClient(opts.URL, opts.Timeout)
	if err != nil {
		return nil, err
	}
	return &Redis{
		mac:       mac,
		opTimeout: 3 * opts.Timeout,
		client:    client,
		topology:  topology,
		watch:     watch,
		sharded:   topology == TopologyCluster,
		prefix:    opts.Prefix,
		backoff:   opts.Backoff,
		m:         m,
		log:       logger,
		errLog:    logLimiter{every: 10 * time.Second},
	}, nil
}

// The topologies a Redis URL can name.
const (
	TopologySingle   = "single"
	TopologySentinel = "sentinel"
	TopologyCluster  = "cluster"
)

// newRedisClient parses rawURL by its scheme (see RedisOptions.URL) and
// builds the client, with timeout for dial (twice), reads, writes and the
// pool, and one quick retry for a dropped pooled connection: no long
// backoffs eating the request's budget.
func newRedisClient(rawURL string, timeout time.Duration) (redis.UniversalClient, string, *masterWatch, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, "", nil, errors.New("invalid Redis URL: want redis://, rediss://, redis+sentinel:// or redis+cluster://")
	}
	if strings.Trim(strings.ToLower(scheme), "abcdefghijklmnopqrstuvwxyz+") != "" {
		return nil, "", nil, errors.New("invalid Redis URL: want redis://, rediss://, redis+sentinel:// or redis+cluster://")
	}
	base, topology, _ := strings.Cut(strings.ToLower(scheme), "+")
	switch {
	case base == "unix" && topology == "":
	case base != "redis" && base != "rediss":
		return nil, "", nil, fmt.Errorf("invalid Redis URL: scheme %q: want redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster", scheme)
	}
	u := base + "://" + rest
	dial, retries, minBackoff, maxBackoff := 2*timeout, 1, time.Millisecond, 10*time.Millisecond
	switch topology {
	case "":
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, "", nil, redisURLError(err, rawURL)
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = dial, timeout, timeout, timeout
		o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minBackoff, maxBackoff
		return redis.NewClient(o), TopologySingle, nil, nil
	case TopologySentinel:
		o, err := redis.ParseFailoverURL(u)
		if err != nil {
			return nil, "", nil, redisURLError(err, rawURL)
		}
		if o.MasterName == "" {
			return nil, "", nil, errors.New("invalid Redis URL: redis+sentinel:// needs master_name=<the name the sentinels monitor>")
		}
		if o.ReplicaOnly || o.RouteByLatency || o.RouteRandomly || o.UseDisconnectedReplicas {
			return nil, "", nil, errors.New("invalid Redis URL: replica_only, route_by_latency, route_randomly and use_disconnected_replicas are refused: reads must go to the master")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = dial, timeout, timeout, timeout
		o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minBackoff, maxBackoff
		w := &masterWatch{dial: redis.NewDialer(&redis.Options{DialTimeout: dial, TLSConfig: o.TLSConfig}), sentinels: map[string]bool{}}
		for _, a := range o.SentinelAddrs {
			w.sentinels[a] = true
		}
		o.Dialer = w.dialSentinel
		return redis.NewFailoverClient(o), TopologySentinel, w, nil
	case TopologyCluster:
		o, err := redis.ParseClusterURL(u)
		if err != nil {
			return nil, "", nil, redisURLError(err, rawURL)
		}
		if o.ReadOnly || o.RouteByLatency || o.RouteRandomly {
			return nil, "", nil, errors.New("invalid Redis URL: read_only, route_by_latency and route_randomly are refused: reads must go to the masters")
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = dial, timeout, timeout, timeout
		o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minBackoff, maxBackoff
		c := redis.NewClusterClient(o)
		c.AddHook(reloadOnError{c})
		return c, TopologyCluster, nil, nil
	}
	return nil, "", nil, fmt.Errorf("invalid Redis URL: scheme %q: want redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster", scheme)
}

// recordTrust says which Redis key records a process may answer from.
// A revoke overwrites the key's record before it publishes, so that a
// replica that drops the key reads the revoked record next; but a failover
// can lose that write (the last writes a dead master had not replicated, a
// write sent to a master its client did not yet know was replaced, a write
// that failed while the bus still worked), leaving the record that allows
// the key. So a record is not trusted when it is older than
//   - the last invalidation of its key this process received, or
//   - the floor: on a cluster, the bus's last resubscription (a failover of
//     the bus's shard may have lost messages and writes alike); with
//     Sentinel, the client's move to a new master (masterWatch).
//
// The key is then read from PostgreSQL: once per process and invalidated
// key, and for every key after a floor rise until the records written
// before it expire (the cache TTL). Records older versions wrote have no
// write time and count as older than anything.
type recordTrust struct {
	floor atomic.Int64 // UnixNano
	mu    sync.RWMutex
	keys  map[Hash]int64 // UnixNano of the last invalidation, kept trustKeep
}

// trustKeep is how long a key's invalidation time is kept: past it, the
// floor rises to it (records older than that rarely still live).
const (
	trustKeep    = 10 * time.Minute
	trustMaxKeys = 100_000
)

// invalidated records an invalidation of h received now.
func (t *recordTrust) invalidated(h Hash, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = map[Hash]int64{}
	}
	if len(t.keys) >= trustMaxKeys { // prune, raising the floor to the newest dropped
		cut := now.Add(-trustKeep).UnixNano()
		if len(t.keys) >= trustMaxKeys*2 {
			cut = now.UnixNano()
		}
		for k, at := range t.keys {
			if at <= cut {
				delete(t.keys, k)
				t.raise(at)
			}
		}
	}
	t.keys[h] = now.UnixNano()
}

// raise lifts the floor to at, if higher.
func (t *recordTrust) raise(at int64) {
	for {
		cur := t.floor.Load()
		if at <= cur || t.floor.CompareAndSwap(cur, at) {
			return
		}
	}
}

// trusted reports whether a record of h written at written may answer.
func (t *recordTrust) trusted(h Hash, written int64, w *masterWatch) bool {
	if written < t.floor.Load() || (w != nil && written < w.changed.Load()) {
		return false
	}
	t.mu.RLock()
	at, ok := t.keys[h]
	t.mu.RUnlock()
	return !ok || written >= at
}

// masterWatch is the dialer of a Sentinel client: it notes when the
// client starts talking to a master other than the one it talked to, so
// that records written before then are no longer trusted (recordTrust).
// With Sentinel, a client learns of a new master on its own, up to the
// sentinels' failover-timeout after the promotion, and the old master takes
// writes until then: a revoke's overwrite sent there is lost. A process can
// only read the new master through a connection it dials first, so it
// always notices in time.
type masterWatch struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// changed is the UnixNano time of the last switch, 0 before any.
	changed atomic.Int64

	mu sync.Mutex
	// sentinels are the sentinels' addresses (every other dial is to the
	// master); master is the master dialed last.
	sentinels map[string]bool
	master    string
}

func (w *masterWatch) dialSentinel(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	if !w.sentinels[addr] {
		if w.master != "" && w.master != addr {
			w.changed.Store(time.Now().UnixNano())
		}
		w.master = addr
	}
	w.mu.Unlock()
	return w.dial(ctx, network, addr)
}

// reloadOnError makes a cluster client re-read the slot map (at most one
// reload at a time, 200ms apart) after a command fails for a reason other
// than a miss or an ordinary error reply. go-redis otherwise keeps sending a
// failed-over master's slots to the dead node until its periodic reload, a
// minute later: the keys of those slots, the heartbeats and the revokers'
// publishes would keep failing long after a replica took over.
type reloadOnError struct{ c *redis.ClusterClient }

func (h reloadOnError) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if topologyError(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadOnError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if topologyError(cmd.Err()) {
				h.c.ReloadState(ctx)
				break
			}
		}
		return err
	}
}

// topologyError: a connection failure or timeout, or an error reply that
// says the cluster is changing (not, say, NOSCRIPT, which a script's first
// run on a node gets).
func topologyError(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	var reply redis.Error
	if !errors.As(err, &reply) {
		return true
	}
	for _, p := range []string{"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "MASTERDOWN", "LOADING"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

// redisURLError reports a go-redis parse error without the URL's secrets:
// url.Parse's errors quote the whole URL; go-redis' own name the offending
// option or address, which we keep unless a secret shows up in them.
func redisURLError(err error, rawURL string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New("invalid Redis URL: not a URL")
	}
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil {
		secrets := u.Query()["password"]
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(msg, s) {
				return errors.New("invalid Redis URL")
			}
		}
	}
	return fmt.Errorf("invalid Redis URL: %s", strings.TrimPrefix(msg, "redis: "))
}

// Topology is the topology the URL named: TopologySingle, TopologySentinel
// or TopologyCluster.
func (r *Redis) Topology() string { return r.topology }

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
// negative entry), the time it stops answering, and when it was written
// (absent from records older versions wrote).
type cachedKey struct {
	Key     *Key  `json:"k,omitempty"`
	Until   int64 `json:"u"`
	Written int64 `json:"w,omitempty"`
}

// get returns the cached entry for h, errCacheMiss, or a Redis error.
func (r *Redis) get(ctx context.Context, h Hash) (*entry, error) {
	if !r.available() {
		return nil, errCacheMiss
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	name := r.keyName(h)
	raw, err := r.client.Get(ctx, name).Bytes()
	if errors.Is(err, redis.Nil) {
		r.ok()
		return nil, errCacheMiss
	}
	if err != nil {
		r.fail("get", err)
		return nil, err
	}
	r.ok()
	payload, ok := r.mac.open(name, raw)
	if !ok {
		// Not written by a process holding the secret, or copied from
		// another key's name: a miss, so PostgreSQL says.
		r.m.redisErrors.WithLabelValues("mac").Inc()
		return nil, errCacheMiss
	}
	var c cachedKey
	if err := json.Unmarshal(payload, &c); err != nil || (c.Key != nil && c.Key.ID == "") {
		r.m.redisErrors.WithLabelValues("decode").Inc()
		return nil, errCacheMiss
	}
	if !r.trust.trusted(h, c.Written, r.watch) {
		// Older than an invalidation of the key or than this process's
		// move to a new master: it may be a record a revoke overwrote in a
		// write that a failover lost. PostgreSQL says.
		r.m.redisErrors.WithLabelValues("untrusted").Inc()
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
//
// An overwrite (a revoker's) that fails or is skipped is remembered: the
// Publish or PublishAndWait of the key's invalidation that follows retries
// it, and reports its failure (see retryOverwrite).
func (r *Redis) set(ctx context.Context, h Hash, e *entry, onlyNew bool) {
	if !r.available() {
		if !onlyNew {
			r.overwriteFailed(h, e)
		}
		return
	}
	if err := r.write(ctx, h, e, onlyNew); err != nil {
		r.fail("set", err)
		if !onlyNew {
			r.overwriteFailed(h, e)
		}
		return
	}
	r.ok()
	if !onlyNew {
		r.pendingMu.Lock()
		delete(r.pending, h)
		r.pendingMu.Unlock()
	}
}

// write stores e for h, stamped with the time of writing.
func (r *Redis) write(ctx context.Context, h Hash, e *entry, onlyNew bool) error {
	ttl := time.Until(e.until)
	if ttl <= time.Millisecond {
		return nil
	}
	payload, err := json.Marshal(cachedKey{Key: e.key, Until: e.until.UnixNano(), Written: time.Now().UnixNano()})
	if err != nil {
		return err
	}
	name := r.keyName(h)
	raw := r.mac.seal(name, payload)
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	if onlyNew {
		err = r.client.SetArgs(ctx, name, raw, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
		if errors.Is(err, redis.Nil) { // NX refused: somebody wrote first, which is fine
			err = nil
		}
		return err
	}
	return r.client.Set(ctx, name, raw, ttl).Err()
}

// overwriteFailed remembers a revoker's overwrite that did not happen.
func (r *Redis) overwriteFailed(h Hash, e *entry) {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	if r.pending == nil {
		r.pending = map[Hash]*entry{}
	}
	for k, p := range r.pending { // drop the expired, so the map stays small
		if !time.Now().Before(p.until) {
			delete(r.pending, k)
		}
	}
	r.pending[h] = e
}

// retryOverwrite retries a failed overwrite of h's record, Redis' backoff
// notwithstanding, before its invalidation is published. The write a
// revoke makes before it publishes is what a replica that drops the key
// reads next; when it failed (the key's master died, or the client was
// still sending to a master a failover replaced), the record left may allow
// the key, and a replica that missed the message reads it after a
// failover. By the time of the publish the client has often found the new
// master. An error means the record could not be written: the change is
// not final everywhere until the cache TTL.
func (r *Redis) retryOverwrite(ctx context.Context, h Hash) error {
	r.pendingMu.Lock()
	e := r.pending[h]
	r.pendingMu.Unlock()
	if e == nil {
		return nil
	}
	if err := r.write(ctx, h, e, false); err != nil {
		r.m.redisErrors.WithLabelValues("set").Inc()
		return fmt.Errorf("write the key's record to Redis: %w", err)
	}
	r.pendingMu.Lock()
	if r.pending[h] == e {
		delete(r.pending, h)
	}
	r.pendingMu.Unlock()
	return nil
}

// GetRaw reads a value SetRaw wrote under the prefix; ok is false when it is
// absent, fails to authenticate (counted as op "mac": not written by a
// process holding the secret, or not under this name) or Redis is
// unavailable (best-effort, like every cache read).
func (r *Redis) GetRaw(ctx context.Context, name string) ([]byte, bool) {
	if !r.available() {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	full := r.prefix + name
	raw, err := r.client.Get(ctx, full).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.fail("get", err)
		}
		return nil, false
	}
	r.ok()
	val, ok := r.mac.open(full, raw)
	if !ok {
		r.m.redisErrors.WithLabelValues("mac").Inc()
		return nil, false
	}
	return val, true
}

// SetRaw writes a value under the prefix with a TTL, best-effort, sealed
// so that only GetRaw of the same name accepts it.
func (r *Redis) SetRaw(ctx context.Context, name string, val []byte, ttl time.Duration) {
	if !r.available() || ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	full := r.prefix + name
	if err := r.client.Set(ctx, full, r.mac.seal(full, val), ttl).Err(); err != nil {
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
	// LSN, when set, is the primary's WAL position after the change: a read
	// replica that has not replayed it must not answer for the key
	// (Watermark). Messages without one are still understood.
	LSN LSN
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
	if inv.LSN != 0 { // "16/B374D848": the slash tells it from an ack id
		msg += " " + inv.LSN.String()
	}
	return msg
}

func decodeInvalidation(s string) (Invalidation, error) {
	kind, arg, _ := strings.Cut(s, " ")
	arg, rest, _ := strings.Cut(arg, " ")
	inv, err := decodeKind(kind, arg)
	for _, f := range strings.Fields(rest) {
		if !strings.Contains(f, "/") {
			inv.AckID = f
		} else if lsn, perr := ParseLSN(f); perr == nil { // a bad one is dropped: receivers then resync
			inv.LSN = lsn
		}
	}
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

func (r *Redis) channel() string { return r.busName("invalidate") }

// Publish sends an invalidation to every subscribed replica, after retrying
// a failed overwrite of the key's record (retryOverwrite), whose failure it
// reports once the message is out.
func (r *Redis) Publish(ctx context.Context, inv Invalidation) error {
	werr, err := r.publishInvalidation(ctx, inv)
	if err != nil {
		return err
	}
	return werr
}

// publishInvalidation publishes inv (err: it was not) after retrying the
// key's overwrite (werr: that failed).
func (r *Redis) publishInvalidation(ctx context.Context, inv Invalidation) (werr, err error) {
	if inv.Kind == InvalidateKey {
		werr = r.retryOverwrite(ctx, inv.Hash)
	}
	if err := r.publish(ctx, r.channel(), inv.encode()); err != nil {
		r.m.redisErrors.WithLabelValues("publish").Inc()
		return werr, fmt.Errorf("publish invalidation: %w", err)
	}
	return werr, nil
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
