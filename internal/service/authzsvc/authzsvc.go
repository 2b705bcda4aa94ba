// Package authzsvc assembles `odin authz`: the key store and its cache
// tiers, the decision core, the gRPC Check server with health and
// reflection, and the operations HTTP port. cmd/odin only binds flags to
// Config and listeners to Serve; tests start whole replicas the same way.
package authzsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/extauthz/policy"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/connlimit"
	"github.com/odin-scan/odin-authz/internal/ops"
	"github.com/odin-scan/odin-authz/internal/service"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// Config is everything `odin authz` is configured with.
type Config struct {
	// Store, when set, is used instead of opening DatabaseURL (odin dev's
	// embedded store); the caller closes it. StoreName names it in
	// readiness reports (default "postgres").
	Store       keystore.Store
	StoreName   string
	DatabaseURL string
	RedisURL    string // empty: no Redis (LRU → PostgreSQL)
	RedisPrefix string
	// RedisMACSecret authenticates every entry in Redis (required with
	// RedisURL, at least keystore.MinMACSecret bytes);
	// RedisMACSecretPrevious, when set, is still accepted on read.
	RedisMACSecret, RedisMACSecretPrevious string

	// DatabaseReadURL, when set, is a PostgreSQL read replica that answers
	// key lookups when it has replayed every change this replica heard of
	// (keystore.Watermark); everything else uses DatabaseURL.
	DatabaseReadURL string

	Cache        keystore.CacheOptions
	RedisTimeout time.Duration
	// NoKeyFilter turns the key filter off: forged keys are then looked up
	// in Redis and PostgreSQL (bounded by Cache.UnknownKeyRate).
	NoKeyFilter bool

	// JWT is the session token verifier's configuration; JWTs are refused
	// (401) when JWT.JWKSURL is empty.
	JWT jwtauth.Config
	// SessionTTL caps how long a verified token is cached (default 15m).
	SessionTTL time.Duration
	// SessionRetention is how long a revoked session is remembered, and so
	// the longest token lifetime accepted (default 24h).
	SessionRetention time.Duration
	// SessionSync is how often revoked sessions are re-read from PostgreSQL,
	// the bound for a lost bus message (default 30s).
	SessionSync time.Duration
	// JWTAllowNoSessionID admits session tokens without sid, which can never
	// be logged out (for issuers that have no sessions); default: refused.
	JWTAllowNoSessionID bool
	// JWTDefaultScopes are the scopes of a session token that carries no
	// permissions.
	JWTDefaultScopes []string
	// PolicyFile is the route policy (YAML); empty: the built-in default
	// (read for GET/HEAD/OPTIONS, write otherwise).
	PolicyFile string
	// RateLimit configures the tier limits (prefix defaults to the Redis
	// prefix + "ratelimit:"); DisableRateLimit turns them off.
	RateLimit        ratelimit.Options
	DisableRateLimit bool
	// RateLimitBy is "credential" (default) or "org".
	RateLimitBy string

	StripCredential bool
	// HTTPPathPrefix is removed, once, from the front of forward-auth paths
	// (Envoy http_service path_prefix); only with ForwardedHeaders "none".
	HTTPPathPrefix string
	// ForwardedHeaders names what the forward-auth proxy sends: "none"
	// (default: the request line), "original" (X-Original-*) or
	// "forwarded" (X-Forwarded-*); see extauthz.ForwardAuthOptions.
	ForwardedHeaders string
	// TrustedProxies are the proxies whose X-Forwarded-For is believed for
	// the client address an API key's network allowlist is checked
	// against: the forward-auth port's peers (NGINX, Caddy, and the load
	// balancers before them), and the load balancers Envoy's
	// source.address may name on the gRPC port (see
	// extauthz.ClientBehindProxies and extauthz.EnvoyClient); none: the
	// TCP peer, or Envoy's source.address, is the client.
	TrustedProxies []netip.Prefix
	MaxStreams     uint32
	// StreamWorkers is how many goroutines serve gRPC streams, each one
	// stream after another: a worker keeps the stack it grew, where a
	// goroutine per stream grows a fresh one every time (about a tenth of
	// a cached check's CPU). A stream that finds every worker busy gets a
	// goroutine of its own, as without workers. 0: DefaultStreamWorkers;
	// negative: none, a goroutine per stream.
	StreamWorkers int
	// Connections bounds what a client can hold open on the gRPC and
	// forward-auth ports; zero fields take their defaults.
	Connections   Connections
	DrainTimeout  time.Duration
	UsageInterval time.Duration
	// Profiling serves Go's profiler on the ops port (/debug/pprof/).
	Profiling bool
	// Tracing configures OpenTelemetry traces of Check and forward-auth;
	// the zero value is off.
	Tracing telemetry.Config
	// TLS, when set, serves gRPC and forward-auth over TLS (mutual TLS when
	// TLS.ClientCAFile is set); the ops port stays plain HTTP, for probes.
	TLS *tlsreload.Config
}

// Connections are the connection limits of the gRPC and forward-auth
// ports. A connection past a cap is closed at once (see internal/connlimit).
type Connections struct {
	// GRPCHandshakeTimeout is how long a new gRPC connection may take to
	// finish its TLS handshake and send the HTTP/2 preface; default 5s
	// (grpc-go's own is 120s).
	GRPCHandshakeTimeout time.Duration
	// KeepaliveMinTime is the shortest interval between a client's HTTP/2
	// pings, with or without streams; a client pinging more often is sent
	// GOAWAY (too_many_pings). Default 5s: Envoy sends no pings unless its
	// cluster sets connection_keepalive, and then every interval plus a
	// jitter, never less.
	KeepaliveMinTime time.Duration
	// KeepaliveTime and KeepaliveTimeout: the server pings a connection
	// idle for KeepaliveTime (default 30s) and closes it when no answer
	// comes within KeepaliveTimeout (default 10s), so dead peers free their
	// slots.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxGRPC and MaxHTTP cap the open connections of each port (default
	// 2048 each; negative: no cap).
	MaxGRPC, MaxHTTP int
}

// Defaults of Connections, and of Config's MaxStreams and DrainTimeout.
const (
	DefaultGRPCHandshakeTimeout = 5 * time.Second
	DefaultKeepaliveMinTime     = 5 * time.Second
	DefaultKeepaliveTime        = 30 * time.Second
	DefaultKeepaliveTimeout     = 10 * time.Second
	DefaultMaxConnections       = 2048 // per port
	DefaultMaxStreams           = 1024
	DefaultDrainTimeout         = 15 * time.Second
)

// DefaultStreamWorkers is Config.StreamWorkers' default: enough workers
// that the streams in flight on a busy replica rarely find all of them
// busy.
const DefaultStreamWorkers = 32

// StreamWorkers is the grpc.NumStreamWorkers of a StreamWorkers setting
// (0: none).
func StreamWorkers(n int) uint32 {
	switch {
	case n == 0:
		return DefaultStreamWorkers
	case n < 0:
		return 0
	}
	return uint32(n)
}

func (c *Connections) defaults() {
	for _, d := range []struct {
		p   *time.Duration
		def time.Duration
	}{{&c.GRPCHandshakeTimeout, DefaultGRPCHandshakeTimeout}, {&c.KeepaliveMinTime, DefaultKeepaliveMinTime}, {&c.KeepaliveTime, DefaultKeepaliveTime}, {&c.KeepaliveTimeout, DefaultKeepaliveTimeout}} {
		if *d.p <= 0 {
			*d.p = d.def
		}
	}
	if c.MaxGRPC == 0 {
		c.MaxGRPC = DefaultMaxConnections
	}
	if c.MaxHTTP == 0 {
		c.MaxHTTP = DefaultMaxConnections
	}
}

// Service is one `odin authz` replica.
type Service struct {
	cfg       Config
	log       *slog.Logger
	parts     *service.Parts // registry, stores, revoked sessions, verifier, tracing
	cache     *keystore.Cache[*extauthz.Principal]
	usage     *keystore.UsageRecorder
	bus       *keystore.Bus // nil without Redis
	authz     *extauthz.Authorizer
	sessions  *extauthz.Sessions // nil without a JWKS
	grpc      *grpc.Server
	health    *health.Server
	draining  chan struct{} // closed when the drain begins
	readiness *ops.Readiness
}

// New builds a replica and starts its background work (bus subscription,
// health probes, usage flushing) under ctx. It waits briefly for the bus
// subscription, so a replica that reports ready also hears revocations.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Service, error) {
	if err := extauthz.CheckForwarding(cfg.ForwardedHeaders, cfg.HTTPPathPrefix); err != nil {
		return nil, fmt.Errorf("forwarded headers (--forwarded-headers, ODIN_FORWARDED_HEADERS) and path prefix (--http-path-prefix): %w", err)
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	cfg.Connections.defaults()
	s := &Service{cfg: cfg, log: logger}
	parts, err := service.New(ctx, service.Options{
		Name: "odin-authz", Store: cfg.Store, StoreName: cfg.StoreName, DatabaseURL: cfg.DatabaseURL,
		DatabaseReadURL: cfg.DatabaseReadURL, Fenced: s.fenced,
		Redis: service.RedisOptions{
			URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, Timeout: cfg.RedisTimeout,
			MACSecret: cfg.RedisMACSecret, MACSecretPrevious: cfg.RedisMACSecretPrevious,
		},
		SessionRetention: cfg.SessionRetention, JWT: cfg.JWT, Tracing: cfg.Tracing, TLS: cfg.TLS,
	}, logger)
	if err != nil {
		return nil, err
	}
	s.parts = parts
	if err := s.buildDecision(ctx); err != nil {
		parts.Abandon(ctx)
		return nil, err
	}
	s.buildGRPC()
	s.buildReadiness()
	s.startBackground(ctx)
	return s, nil
}

// buildDecision builds the key cache on the stores, the bus that keeps it
// fresh, the session cache, the route policy, the rate limiter and the
// decision core over them.
func (s *Service) buildDecision(ctx context.Context) error {
	s.bus = s.parts.NewBus()
	s.cfg.Cache.Filter = !s.cfg.NoKeyFilter
	if s.bus != nil {
		s.cfg.Cache.Fenced = s.bus.Fenced
		s.registerFence()
		s.parts.Revoked.Fence(s.bus.Fenced) // a fenced replica re-reads the revoked sessions before it accepts one
	}
	var err error
	if s.cache, err = keystore.NewCache(s.parts.Store, s.parts.Redis, s.cfg.Cache, extauthz.PrincipalForKey, s.parts.KeyMetrics, s.log); err != nil {
		return fmt.Errorf("build cache: %w", err)
	}
	s.usage = keystore.NewUsageRecorder(s.parts.Store, s.cfg.UsageInterval, 0, s.log)
	sessions, err := s.buildSessions()
	if err != nil {
		return err
	}
	s.sessions = sessions
	pol, err := policy.NewHolder(s.cfg.PolicyFile, s.log, s.parts.Registry)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	go pol.Watch(ctx)
	limiter, err := s.buildLimiter()
	if err != nil {
		return fmt.Errorf("configure rate limits: %w", err)
	}
	s.authz = extauthz.NewAuthorizer(extauthz.Options{
		Policy: pol, Limiter: limiter, LimitBy: s.cfg.RateLimitBy, Keys: s.cache, Sessions: sessions, Usage: s.usage, Logger: s.log, Metrics: extauthz.NewMetrics(s.parts.Registry),
	})
	return nil
}

// registerFence exports whether the bus fences this replica.
func (s *Service) registerFence() {
	s.parts.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "odin_keystore_bus_fenced",
		Help: "1 while this replica is fenced (out of contact with the invalidation bus: it answers no key from its LRU), 0 otherwise.",
	}, func() float64 {
		if s.bus.Fenced(time.Now()) {
			return 1
		}
		return 0
	}))
}

// buildLimiter builds the tier rate limiter, shared across replicas through
// Redis when there is one.
func (s *Service) buildLimiter() (*ratelimit.Limiter, error) {
	if s.cfg.DisableRateLimit {
		return nil, nil
	}
	switch s.cfg.RateLimitBy {
	case "", "credential", "org":
	default:
		return nil, fmt.Errorf("rate limit key %q: want credential or org", s.cfg.RateLimitBy)
	}
	opts := s.cfg.RateLimit
	var client redis.UniversalClient
	if s.parts.Redis != nil {
		client = s.parts.Redis.Conn().Client()
		if opts.Prefix == "" {
			prefix := s.cfg.RedisPrefix
			if prefix == "" {
				prefix = "odin:"
			}
			opts.Prefix = prefix + "ratelimit:"
		}
	}
	return ratelimit.New(client, opts, s.log, s.parts.Registry)
}

// buildSessions builds the session cache on the JWT verifier (whose first
// JWKS fetch is bounded by the fetch timeout: a dead IdP does not block
// start-up), when a JWKS URL is configured.
func (s *Service) buildSessions() (*extauthz.Sessions, error) {
	if s.parts.Verifier == nil {
		s.log.Warn("no JWKS configured (--jwks-url, ODIN_JWKS_URL): every session token (JWT) is refused with 401; API keys work")
		return nil, nil
	}
	leeway := s.cfg.JWT.Leeway
	if leeway <= 0 {
		leeway = jwtauth.DefaultLeeway
	}
	return extauthz.NewSessions(s.parts.Verifier, s.parts.Revoked, s.parts.Redis, extauthz.SessionOptions{
		TTL: s.cfg.SessionTTL, Size: s.cfg.Cache.Size, Leeway: leeway, DefaultScopes: s.cfg.JWTDefaultScopes,
		AllowNoSessionID: s.cfg.JWTAllowNoSessionID,
	}, s.parts.Registry)
}

func (s *Service) buildGRPC() {
	var transport grpc.ServerOption = grpc.EmptyServerOption{}
	if s.parts.TLS != nil { // credentials.NewTLS keeps "h2" in ALPN, as gRPC over TLS requires
		transport = grpc.Creds(credentials.NewTLS(s.parts.TLS.ServerConfig("h2")))
	}
	s.grpc = grpc.NewServer(append([]grpc.ServerOption{
		transport,
		grpc.MaxConcurrentStreams(s.cfg.MaxStreams),
		grpc.NumStreamWorkers(StreamWorkers(s.cfg.StreamWorkers)),
		// A connection that never finishes its handshake would hold a slot
		// of the connection cap for grpc-go's default 120s.
		grpc.ConnectionTimeout(s.cfg.Connections.GRPCHandshakeTimeout),
		// Envoy keeps long-lived HTTP/2 connections: ping idle ones so dead
		// peers are noticed, and let Envoy ping us (idle connections too)
		// as often as KeepaliveMinTime.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: s.cfg.Connections.KeepaliveTime, Timeout: s.cfg.Connections.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: s.cfg.Connections.KeepaliveMinTime, PermitWithoutStream: true}),
	}, s.parts.Tracing.GRPCServerOptions()...)...) // none when tracing is off
	authv3.RegisterAuthorizationServer(s.grpc, extauthz.NewCheckServer(s.authz, extauthz.CheckOptions{
		StripCredential: s.cfg.StripCredential, TrustedProxies: s.cfg.TrustedProxies, Logger: s.log,
	}))
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	s.draining = make(chan struct{})
	healthpb.RegisterHealthServer(s.grpc, &drainingHealth{Server: s.health, draining: s.draining})
	reflection.Register(s.grpc)
}

// buildReadiness: ready when PostgreSQL answers or the LRU holds entries
// (cached keys can still be served); Redis is reported but optional.
func (s *Service) buildReadiness() {
	probes := s.parts.Probes()
	if jwks, ok := s.parts.JWKSProbe(); ok { // reported; API keys do not depend on it
		probes = append(probes, jwks)
	}
	rule := func(ok map[string]bool) bool { return ok[s.parts.StoreName] || s.cache.Len() > 0 }
	s.readiness = ops.NewReadiness(probes, rule, 2*time.Second, s.log, func(ready bool) {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			st = healthpb.HealthCheckResponse_SERVING
		}
		s.health.SetServingStatus("", st)
		s.health.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
	})
	s.parts.Registry.MustRegister(s.readiness.Collector())
}

// filterWait is how long start-up waits for the first key filter; past it
// the replica serves, looking unknown keys up in the store (bounded by the
// unknown-key rate) until the filter is built.
const filterWait = 5 * time.Second

func (s *Service) startBackground(ctx context.Context) {
	go s.cache.Run(ctx)
	if s.bus != nil {
		subscribed := make(chan struct{})
		onMessage := func(inv keystore.Invalidation) { s.receivers().Apply(ctx, inv) }
		go s.bus.Run(ctx, onMessage, func() { close(subscribed) })
		select {
		case <-subscribed:
		case <-time.After(2 * time.Second):
			s.log.Warn("invalidation bus not subscribed yet (Redis down?); revocations reach this replica within the cache TTL until it is",
				"cache_ttl", s.cache.Options().TTL)
		case <-ctx.Done():
		}
	}
	if s.cache.Options().Filter {
		s.waitFilter(ctx)
	}
	sync := s.cfg.SessionSync
	if sync <= 0 {
		sync = keystore.DefaultSessionSync
	}
	_ = s.parts.Revoked.Sync(ctx) // a failure is retried by Run; JWTs get 503 meanwhile
	go s.parts.Revoked.Run(ctx, sync)
	s.readiness.Probe(ctx)
	go s.readiness.Run(ctx)
}

// waitFilter waits up to filterWait for the first key filter build to end
// (a store that is down fails it at once).
func (s *Service) waitFilter(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(filterWait)
	for !s.cache.FilterTried() {
		select {
		case <-t.C:
		case <-deadline:
			s.log.Warn("key filter not built yet; unknown keys are looked up in the store until it is", "waited", filterWait)
			return
		case <-ctx.Done():
			return
		}
	}
}

// fenced is the bus's fence for the watermark, which is built before the
// bus: false without a bus.
func (s *Service) fenced(now time.Time) bool { return s.bus != nil && s.bus.Fenced(now) }

// Authorizer exposes the decision core (for the HTTP forward-auth front end
// and benchmarks).
func (s *Service) Authorizer() *extauthz.Authorizer { return s.authz }

// Invalidate applies an invalidation to this replica's caches, for a
// process without Redis that changes keys itself (odin dev): its bus is a
// function call.
func (s *Service) Invalidate(ctx context.Context, inv keystore.Invalidation) {
	s.receivers().Apply(ctx, inv)
}

// receivers are what an invalidation changes in this replica: the read
// replica's watermark first (a lookup missing the cache must see the new
// position), then the key cache and the revoked sessions.
func (s *Service) receivers() keystore.Receivers {
	return keystore.Receivers{Watermark: s.parts.Watermark, Keys: s.cache, Sessions: s.parts.Revoked}
}

// Registry is the replica's metrics registry.
func (s *Service) Registry() *prometheus.Registry { return s.parts.Registry }

// Readiness exposes the readiness tracker.
func (s *Service) Readiness() *ops.Readiness { return s.readiness }

// Listeners are the ports a replica serves; HTTP and Ops may be nil.
type Listeners struct {
	GRPC net.Listener // Check, health, reflection
	HTTP net.Listener // forward-auth: the same decision over plain HTTP
	Ops  net.Listener // /healthz, /readyz, /metrics
}

// ForwardAuth is the replica's HTTP forward-auth handler.
func (s *Service) ForwardAuth() http.Handler {
	return s.parts.Tracing.ForwardAuthHandler(extauthz.NewForwardAuth(s.authz, extauthz.ForwardAuthOptions{
		StripCredential: s.cfg.StripCredential, PathPrefix: s.cfg.HTTPPathPrefix,
		ForwardedHeaders: s.cfg.ForwardedHeaders, TrustedProxies: s.cfg.TrustedProxies, Logger: s.log,
	}))
}

// Serve answers on the listeners until ctx ends, then drains: it reports
// NOT_SERVING, lets in-flight checks finish (up to the drain timeout),
// flushes key usage and closes the stores.
func (s *Service) Serve(ctx context.Context, lis Listeners) error {
	usageCtx, stopUsage := context.WithCancel(context.WithoutCancel(ctx))
	usageDone := make(chan struct{})
	go func() { s.usage.Run(usageCtx); close(usageDone) }()

	errc := make(chan error, 3)
	go func() {
		errc <- s.grpc.Serve(connlimit.Listen(lis.GRPC, s.cfg.Connections.MaxGRPC, "grpc", s.parts.Conns))
	}()
	if lis.HTTP != nil { // the cap counts TCP connections, under TLS
		lis.HTTP = connlimit.Listen(lis.HTTP, s.cfg.Connections.MaxHTTP, "http", s.parts.Conns)
	}
	if s.parts.TLS != nil && lis.HTTP != nil { // forward-auth only: the ops port stays plain for probes
		lis.HTTP = tls.NewListener(lis.HTTP, s.parts.TLS.ServerConfig("h2", "http/1.1"))
	}
	var httpServers []*http.Server
	serveHTTP := func(l net.Listener, h http.Handler) {
		if l == nil {
			return
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    96 << 10, // a 64 KiB header is answered (401), not cut off
		}
		httpServers = append(httpServers, srv)
		go func() { errc <- srv.Serve(l) }()
	}
	serveHTTP(lis.HTTP, s.ForwardAuth())
	if lis.HTTP != nil && len(s.cfg.TrustedProxies) == 0 {
		s.log.Warn("forward-auth serves with no trusted proxies (--trusted-proxies, ODIN_TRUSTED_PROXIES): an API key restricted to certain networks is checked against the TCP peer, which behind a proxy is the proxy's address")
	}
	opsHandler := ops.Handler(s.parts.Registry, s.readiness)
	if s.cfg.Profiling {
		opsHandler = ops.WithProfiling(opsHandler)
	}
	serveHTTP(lis.Ops, opsHandler)
	s.log.Info("odin authz serving", "grpc", lis.GRPC.Addr().String(), "http", addrOf(lis.HTTP), "ops", addrOf(lis.Ops))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		s.log.Error("server stopped", "error", serveErr)
	}

	s.log.Info("draining")
	s.readiness.Drain()
	close(s.draining) // health Watch streams end, or GracefulStop would wait for them
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn("drain timeout: closing remaining streams", "timeout", s.cfg.DrainTimeout)
		s.grpc.Stop()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	for _, srv := range httpServers { // in-flight forward-auth requests finish
		_ = srv.Shutdown(sctx)
	}
	cancel()
	if s.sessions != nil { // the verified sessions still queued for Redis, for the other replicas
		s.sessions.FlushRedisWrites()
	}
	stopUsage()
	<-usageDone
	if err := s.parts.Tracing.Shutdown(context.WithoutCancel(ctx)); err != nil { // the spans of the drained requests
		s.log.Warn("tracing shutdown", "error", err.Error())
	}
	s.parts.Close()
	s.log.Info("odin authz stopped")
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, grpc.ErrServerStopped) {
		serveErr = nil
	}
	return serveErr
}

func addrOf(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}

// drainingHealth is the gRPC health service, with Watch streams that end
// once the replica drains, right after they have sent NOT_SERVING: a Watch
// never ends on its own, and GracefulStop waits for every open stream, so
// one client-side health watcher would hold the drain for --drain-timeout.
type drainingHealth struct {
	*health.Server
	draining <-chan struct{}
}

// watchGrace is how long a Watch stream lives after the drain began, for
// the NOT_SERVING update to be sent.
const watchGrace = 100 * time.Millisecond

func (h *drainingHealth) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-h.draining:
			select {
			case <-time.After(watchGrace):
			case <-ctx.Done():
			}
			cancel()
		case <-ctx.Done():
		}
	}()
	return h.Server.Watch(in, &watchStream{Health_WatchServer: stream, ctx: ctx})
}

// watchStream is a Watch stream whose context ends with the drain.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }
