// Package adminsvc assembles `odin admin`: the admin API on the key store,
// with the same session rules as odin authz, and /healthz, /readyz and
// /metrics on the same port. cmd/odin binds flags to Config; tests start
// it the same way.
package adminsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/connlimit"
	"github.com/odin-scan/odin-authz/internal/ops"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// DefaultMaxConnections is Config.MaxConnections' default.
const DefaultMaxConnections = 256

// Config is everything `odin admin` is configured with.
type Config struct {
	// Store, when set, is used instead of opening DatabaseURL; the caller
	// closes it. StoreName names it in readiness (default "postgres").
	Store     keystore.Store
	StoreName string
	// Notify is the in-process bus of a single process without Redis
	// (odin dev): it reaches every cache there is, so changes made without
	// Redis are final when the API answers. Without it and without Redis,
	// a revoke is answered as unconfirmed (503): replicas learn of it when
	// their cache entries expire.
	Notify                             func(keystore.Invalidation)
	DatabaseURL, RedisURL, RedisPrefix string
	// RedisMACSecret authenticates every entry in Redis (required with
	// RedisURL, at least keystore.MinMACSecret bytes);
	// RedisMACSecretPrevious, when set, is still accepted on read.
	RedisMACSecret, RedisMACSecretPrevious string
	// CacheTTL, SessionRetention and SessionSync must match the replicas':
	// an unconfirmed revoke states its bound from them.
	CacheTTL, SessionRetention, SessionSync time.Duration
	JWT                                     jwtauth.Config // JWKSURL empty: operator token only
	OperatorToken, WebhookSecret            string
	Scopes, UserScopes, OrgAdminRoles       []string
	// MaxConnections caps the open connections of the admin port (default
	// DefaultMaxConnections; negative: no cap); one more is closed at once.
	MaxConnections int
	// TrustedProxies are the proxies (addresses or CIDR ranges) whose
	// X-Forwarded-For names the client, for the failed-authentication
	// throttle; empty: the socket peer is the client.
	TrustedProxies []string

	// JWTAllowNoSessionID admits session tokens without sid (odin authz's
	// setting of the same name); AllowImpersonatedKeys lets impersonated
	// sessions create and roll keys.
	JWTAllowNoSessionID, AllowImpersonatedKeys bool

	// Tracing configures OpenTelemetry traces of the admin API; the zero
	// value is off.
	Tracing telemetry.Config
	// TLS, when set, serves the API and its /healthz, /readyz, /metrics
	// over TLS (mutual TLS when TLS.ClientCAFile is set).
	TLS *tlsreload.Config
}

// Service is a running admin API.
type Service struct {
	handler    http.Handler
	store      keystore.Store
	closeStore func()
	redis      *keystore.Redis
	log        *slog.Logger
	registry   *prometheus.Registry
	tracing    *telemetry.Provider
	tls        *tlsreload.Reloader // nil: plain HTTP
	maxConns   int
	conns      *connlimit.Metrics
}

// New builds the service and starts its background work under ctx.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Service, error) {
	if cfg.DatabaseURL == "" && cfg.Store == nil {
		return nil, errors.New("a database URL is required (--database-url or ODIN_DATABASE_URL)")
	}
	if cfg.StoreName == "" {
		cfg.StoreName = "postgres"
	}
	s := &Service{log: logger, registry: prometheus.NewRegistry(), maxConns: cfg.MaxConnections}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConnections
	}
	s.conns = connlimit.NewMetrics(s.registry)
	var err error
	if cfg.TLS != nil { // before any store is opened: nothing to close on error
		if s.tls, err = tlsreload.New(*cfg.TLS, logger, s.registry); err != nil {
			return nil, err
		}
		go s.tls.Watch(ctx)
	}
	if err := s.openStores(ctx, cfg); err != nil {
		return nil, err
	}
	revoked := keystore.NewRevokedSessions(s.store, s.redis, cfg.SessionRetention, logger)
	apply := keystore.Receivers{Sessions: revoked}.Apply // this process's own view of logged-out sessions
	var verifier *jwtauth.Verifier
	if cfg.JWT.JWKSURL != "" {
		if verifier, err = jwtauth.New(ctx, cfg.JWT, logger, s.registry); err != nil {
			s.close()
			return nil, err
		}
	}
	api, err := admin.New(admin.Options{
		Store: s.store,
		Manager: keystore.NewManager(s.store, s.redis, keystore.ManagerOptions{Registerer: s.registry, CacheTTL: cfg.CacheTTL, SessionRetention: cfg.SessionRetention, SessionSync: cfg.SessionSync, Notify: func(inv keystore.Invalidation) {
			apply(ctx, inv)
			if cfg.Notify != nil {
				cfg.Notify(inv)
			}
		}, SingleProcess: cfg.Notify != nil, Logger: logger}),
		Verifier: verifier, Revoked: revoked,
		AllowNoSessionID: cfg.JWTAllowNoSessionID, AllowImpersonatedKeys: cfg.AllowImpersonatedKeys,
		OperatorToken: cfg.OperatorToken, WebhookSecret: cfg.WebhookSecret,
		Scopes: cfg.Scopes, UserScopes: cfg.UserScopes, OrgAdminRoles: cfg.OrgAdminRoles,
		TrustedProxies: cfg.TrustedProxies,
		Logger:         logger, Registerer: s.registry,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	probes := []ops.Probe{{Name: cfg.StoreName, Fn: s.store.Ping}}
	if s.redis != nil {
		probes = append(probes, ops.Probe{Name: "redis", Fn: s.redis.Ping})
		go s.redis.Subscribe(ctx, func(inv keystore.Invalidation) { apply(ctx, inv) }, nil)
	}
	readiness := ops.NewReadiness(probes, func(ok map[string]bool) bool { return ok[cfg.StoreName] }, 2*time.Second, logger, nil)
	s.registry.MustRegister(readiness.Collector())
	_ = revoked.Sync(ctx)
	go revoked.Run(ctx, keystore.DefaultSessionSync)
	readiness.Probe(ctx)
	go readiness.Run(ctx)

	mux := http.NewServeMux()
	opsHandler := ops.Handler(s.registry, readiness)
	for _, p := range []string{"GET /healthz", "GET /readyz", "GET /metrics"} {
		mux.Handle(p, opsHandler)
	}
	mux.Handle("/", api.Handler())
	if s.tracing, err = telemetry.New(ctx, cfg.Tracing, telemetry.Resource{Service: "odin-admin", Instance: keystore.NewReplicaID()}, logger); err != nil {
		s.close()
		return nil, fmt.Errorf("configure tracing: %w", err)
	}
	s.handler = s.tracing.AdminHandler(mux, "/healthz", "/readyz", "/metrics")
	return s, nil
}

// openStores opens PostgreSQL, unless the configuration gives a store (odin
// dev), and Redis when it is configured.
func (s *Service) openStores(ctx context.Context, cfg Config) error {
	s.store, s.closeStore = cfg.Store, func() {}
	if s.store == nil {
		pg, err := pgstore.Open(ctx, cfg.DatabaseURL, pgstore.Options{})
		if err != nil {
			return err
		}
		s.store, s.closeStore = pg, pg.Close
		pg.ReportSchema(ctx, s.log)
	}
	km := keystore.NewMetrics(s.registry) // exported with or without Redis
	if cfg.RedisURL == "" {
		return nil
	}
	var err error
	if s.redis, err = keystore.OpenRedis(keystore.RedisOptions{
		URL: cfg.RedisURL, Prefix: cfg.RedisPrefix,
		MACSecret: cfg.RedisMACSecret, MACSecretPrevious: cfg.RedisMACSecretPrevious,
	}, km, s.log); err != nil {
		s.close()
		return err
	}
	return nil
}

// Handler is the whole HTTP surface (for tests with httptest).
func (s *Service) Handler() http.Handler { return s.handler }

// Registry is the metrics registry.
func (s *Service) Registry() *prometheus.Registry { return s.registry }

// Serve answers on l until ctx ends, then lets in-flight requests finish.
func (s *Service) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	l = connlimit.Listen(l, s.maxConns, "admin", s.conns) // TCP connections, under TLS
	if s.tls != nil {
		l = tls.NewListener(l, s.tls.ServerConfig("h2", "http/1.1"))
	}
	go func() { errc <- srv.Serve(l) }()
	s.log.Info("odin admin serving", "addr", l.Addr().String())
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := s.tracing.Shutdown(sctx); err != nil {
		s.log.Warn("tracing shutdown", "error", err.Error())
	}
	s.close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Service) close() {
	if s.redis != nil {
		_ = s.redis.Close()
	}
	s.closeStore()
}
