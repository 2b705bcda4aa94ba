// Package redisconn opens the one Redis connection a process shares: it
// reads the URL's topology (one server, Sentinel or Cluster), builds the
// client with short timeouts, and keeps it following failovers. The key
// cache tier and invalidation bus (keystore.Redis) and the rate limiter
// all use the connection it opens.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The topologies a Redis URL can name.
const (
	TopologySingle   = "single"
	TopologySentinel = "sentinel"
	TopologyCluster  = "cluster"
)

// Options say where Redis is. Zero values take the defaults.
type Options struct {
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
	// a replica may not have a revoke's write yet. The RESP version is 2
	// unless protocol=3 is given (DefaultProtocol).
	URL     string
	Timeout time.Duration // dial, read and write timeout, default 100ms
}

// Conn is an open Redis client and what its URL said of it.
type Conn struct {
	client   redis.UniversalClient
	topology string
	timeout  time.Duration
	// watch sees a Sentinel client move to a new master; nil otherwise.
	watch *masterWatch
}

// DefaultTimeout bounds each Redis call (read and write; dial: twice it)
// when Options.Timeout is not set: Redis is best-effort, so a slow one
// must not hold a check for long.
const DefaultTimeout = 100 * time.Millisecond

// Open creates the client. It does not wait for the server: Redis being
// down is a degraded mode, not a reason to refuse to start. Errors never
// contain the URL's passwords.
func Open(opts Options) (*Conn, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	client, topology, watch, err := newClient(opts.URL, opts.Timeout)
	if err != nil {
		return nil, err
	}
	return &Conn{client: client, topology: topology, timeout: opts.Timeout, watch: watch}, nil
}

// Client is the underlying client, for every Redis user of the process
// (the cache tier, the bus, the rate limiter) to share its connections.
func (c *Conn) Client() redis.UniversalClient { return c.client }

// Topology is the topology the URL named: TopologySingle, TopologySentinel
// or TopologyCluster.
func (c *Conn) Topology() string { return c.topology }

// Timeout is the dial, read and write timeout in force, default filled in.
func (c *Conn) Timeout() time.Duration { return c.timeout }

// MasterChanged is the UnixNano time at which a Sentinel client last
// started talking to a master other than the one it talked to before; 0
// before any such move and on other topologies. A write sent before then
// may have gone to a master a failover replaced, and be lost.
func (c *Conn) MasterChanged() int64 {
	if c.watch == nil {
		return 0
	}
	return c.watch.changed.Load()
}

// ReloadTopology asks a cluster client to re-read the slot map (for
// example after a subscription was lost: its slot may have a new master).
// Other topologies have no map to re-read.
func (c *Conn) ReloadTopology(ctx context.Context) {
	if cc, ok := c.client.(*redis.ClusterClient); ok {
		cc.ReloadState(ctx)
	}
}

// Ping reports whether Redis answers.
func (c *Conn) Ping(ctx context.Context) error { return c.client.Ping(ctx).Err() }

// Close closes the client.
func (c *Conn) Close() error { return c.client.Close() }

// errScheme is the error of a URL whose scheme names no topology.
var errScheme = errors.New("invalid Redis URL: want redis://, rediss://, redis+sentinel:// or redis+cluster://")

// newClient parses rawURL by its scheme (see Options.URL) and builds the
// client, with timeout for dial (twice), reads, writes and the pool, and
// one quick retry for a dropped pooled connection: no long backoffs eating
// the request's budget.
func newClient(rawURL string, timeout time.Duration) (redis.UniversalClient, string, *masterWatch, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, "", nil, errScheme
	}
	if strings.Trim(strings.ToLower(scheme), "abcdefghijklmnopqrstuvwxyz+") != "" {
		return nil, "", nil, errScheme
	}
	base, topology, _ := strings.Cut(strings.ToLower(scheme), "+")
	switch {
	case base == "unix" && topology == "":
	case base != "redis" && base != "rediss":
		return nil, "", nil, schemeError(scheme)
	}
	u := base + "://" + rest
	t := timeouts{dial: 2 * timeout, io: timeout}
	switch topology {
	case "":
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, "", nil, urlError(err, rawURL)
		}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = t.dial, t.io, t.io, t.io
		o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minRetryBackoff, maxRetryBackoff
		o.Protocol = protocol(o.Protocol)
		return redis.NewClient(o), TopologySingle, nil, nil
	case TopologySentinel:
		c, w, err := newSentinelClient(u, rawURL, t)
		return c, TopologySentinel, w, err
	case TopologyCluster:
		c, err := newClusterClient(u, rawURL, t)
		return c, TopologyCluster, nil, err
	}
	return nil, "", nil, schemeError(scheme)
}

func schemeError(scheme string) error {
	return fmt.Errorf("invalid Redis URL: scheme %q: want redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster", scheme)
}

// timeouts are a client's: dial, and every read, write and pool wait.
type timeouts struct{ dial, io time.Duration }

// DefaultProtocol is the RESP version spoken unless the URL's protocol=
// parameter says otherwise: RESP2. Nothing here needs RESP3 (its push
// notifications, client-side caching, maintenance notifications; pub/sub
// runs on a connection of its own either way), and with RESP3 go-redis
// looks for pending push notifications before reading every reply, a
// measurable share of each command's CPU (BENCHMARKS.md).
const DefaultProtocol = 2

// protocol is p, the URL's protocol= (0 when absent), or DefaultProtocol.
func protocol(p int) int {
	if p == 0 {
		return DefaultProtocol
	}
	return p
}

// One quick retry for a dropped pooled connection.
const (
	retries         = 1
	minRetryBackoff = time.Millisecond
	maxRetryBackoff = 10 * time.Millisecond
)

// newSentinelClient builds a Sentinel client from u (the URL with its
// scheme reduced) whose dialer watches for a move to a new master.
func newSentinelClient(u, rawURL string, t timeouts) (redis.UniversalClient, *masterWatch, error) {
	o, err := redis.ParseFailoverURL(u)
	if err != nil {
		return nil, nil, urlError(err, rawURL)
	}
	if o.MasterName == "" {
		return nil, nil, errors.New("invalid Redis URL: redis+sentinel:// needs master_name=<the name the sentinels monitor>")
	}
	if o.ReplicaOnly || o.RouteByLatency || o.RouteRandomly || o.UseDisconnectedReplicas {
		return nil, nil, errors.New("invalid Redis URL: replica_only, route_by_latency, route_randomly and use_disconnected_replicas are refused: reads must go to the master")
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = t.dial, t.io, t.io, t.io
	o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minRetryBackoff, maxRetryBackoff
	o.Protocol = protocol(o.Protocol)
	w := &masterWatch{dial: redis.NewDialer(&redis.Options{DialTimeout: t.dial, TLSConfig: o.TLSConfig}), sentinels: map[string]bool{}}
	for _, a := range o.SentinelAddrs {
		w.sentinels[a] = true
	}
	o.Dialer = w.dialSentinel
	return redis.NewFailoverClient(o), w, nil
}

// newClusterClient builds a cluster client from u (the URL with its scheme
// reduced) that re-reads the slot map after a failure (reloadOnError).
func newClusterClient(u, rawURL string, t timeouts) (redis.UniversalClient, error) {
	o, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, urlError(err, rawURL)
	}
	if o.ReadOnly || o.RouteByLatency || o.RouteRandomly {
		return nil, errors.New("invalid Redis URL: read_only, route_by_latency and route_randomly are refused: reads must go to the masters")
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = t.dial, t.io, t.io, t.io
	o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff = retries, minRetryBackoff, maxRetryBackoff
	o.Protocol = protocol(o.Protocol)
	c := redis.NewClusterClient(o)
	c.AddHook(reloadOnError{c})
	return c, nil
}

// masterWatch is the dialer of a Sentinel client: it notes when the
// client starts talking to a master other than the one it talked to, so
// that records written before then are no longer trusted (Conn.MasterChanged).
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

// urlError reports a go-redis parse error without the URL's secrets:
// url.Parse's errors quote the whole URL; go-redis' own name the offending
// option or address, which we keep unless a secret shows up in them.
func urlError(err error, rawURL string) error {
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
