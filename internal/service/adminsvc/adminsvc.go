// Package adminsvc assembles `odin admin`: the admin API on the key store,
// with the same session rules as odin authz, and /healthz, /readyz and
// /metrics on the same port. cmd/odin binds flags to Config; tests start
// it the same way.
package adminsvc

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/admin/console"
	"github.com/odin-scan/odin-authz/admin/keypolicy"
	"github.com/odin-scan/odin-authz/admin/webhooks"
	"github.com/odin-scan/odin-authz/internal/connlimit"
	"github.com/odin-scan/odin-authz/internal/ops"
	"github.com/odin-scan/odin-authz/internal/service"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
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
	// Tiers are the tier names a request may give a key; empty: any.
	Tiers []string
	// MaxConnections caps the open connections of the admin port (default
	// DefaultMaxConnections; negative: no cap); one more is closed at once.
	MaxConnections int
	// TrustedProxies are the proxies (addresses or CIDR ranges) whose
	// X-Forwarded-For names the client, for the failed-authentication
	// throttle; empty: the socket peer is the client.
	TrustedProxies []string
	// GitHubSecretScanning configures the endpoint GitHub's secret
	// scanning reports leaked keys to (off by default).
	GitHubSecretScanning admin.GitHubSecretScanning

	// JWTAllowNoSessionID admits session tokens without sid (odin authz's
	// setting of the same name); AllowImpersonatedKeys lets impersonated
	// sessions create and roll keys.
	JWTAllowNoSessionID, AllowImpersonatedKeys bool
	// Reverify is the step-up verification a session token needs to
	// create and roll keys (admin.Options.Reverify); nil: off.
	Reverify *jwtauth.Reverification

	// Tracing configures OpenTelemetry traces of the admin API; the zero
	// value is off.
	Tracing telemetry.Config
	// TLS, when set, serves the API and its /healthz, /readyz, /metrics
	// over TLS (mutual TLS when TLS.ClientCAFile is set).
	TLS *tlsreload.Config
	// ConsoleDisabled turns the operator console (/console/) off; it is on
	// by default. ConsoleSessionTTL is a console session's lifetime
	// (default console.DefaultSessionTTL).
	ConsoleDisabled   bool
	ConsoleSessionTTL time.Duration
	// ConsoleAuthzMetricsURL, when set, is an odin authz /metrics URL
	// whose decision counters the console's status page shows.
	ConsoleAuthzMetricsURL string

	// MaxKeyLifetime is the longest a key may live, by default and per
	// organisation (keystore.ManagerOptions.MaxKeyLifetime); zero: no limit.
	MaxKeyLifetime keystore.KeyLifetimes
	// UnusedKeys configures the revocation of keys unused for too long
	// (off by default). The service fills in the store, manager, logger and
	// registry.
	UnusedKeys keypolicy.Options
	// Webhooks configures the outgoing webhooks: endpoints, attempts,
	// timeout, the key.expiring notice. The service fills in the store,
	// logger and registry. With no endpoint, events are marked skipped.
	Webhooks webhooks.Options
}

// Service is a running admin API.
type Service struct {
	handler  http.Handler
	parts    *service.Parts // registry, stores, revoked sessions, verifier, tracing
	log      *slog.Logger
	maxConns int
	// webhooksDone is closed when the webhook worker has stopped; nil
	// without one.
	webhooksDone chan struct{}
	// console is the operator console; nil when it is off.
	console *console.Console
	// readiness is the readiness probes' tracker (set in New, before
	// anything is served), which the console's status page reads.
	readiness *ops.Readiness
}

// New builds the service and starts its background work under ctx.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Service, error) {
	s := &Service{log: logger, maxConns: cfg.MaxConnections}
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConnections
	}
	parts, err := service.New(ctx, service.Options{
		Name: "odin-admin", Store: cfg.Store, StoreName: cfg.StoreName, DatabaseURL: cfg.DatabaseURL,
		Redis: service.RedisOptions{
			URL: cfg.RedisURL, Prefix: cfg.RedisPrefix,
			MACSecret: cfg.RedisMACSecret, MACSecretPrevious: cfg.RedisMACSecretPrevious,
		},
		SessionRetention: cfg.SessionRetention, JWT: cfg.JWT, Tracing: cfg.Tracing, TLS: cfg.TLS,
	}, logger)
	if err != nil {
		return nil, err
	}
	s.parts = parts
	warnShortLifetimes(logger, cfg)
	mgr := s.newManager(ctx, cfg)
	api, err := s.buildAPI(cfg, mgr)
	if err != nil {
		parts.Abandon(ctx)
		return nil, err
	}
	if !cfg.ConsoleDisabled {
		if s.console, err = console.New(console.Options{API: api, SessionTTL: cfg.ConsoleSessionTTL, Logger: logger,
			Status: s.consoleStatus, AuthzMetricsURL: cfg.ConsoleAuthzMetricsURL}); err != nil {
			parts.Abandon(ctx)
			return nil, err
		}
	}
	if err := s.startKeyPolicy(ctx, cfg.UnusedKeys, mgr); err != nil {
		parts.Abandon(ctx)
		return nil, err
	}
	if err := s.startWebhooks(ctx, cfg.Webhooks); err != nil {
		parts.Abandon(ctx)
		return nil, err
	}
	readiness := s.startBackground(ctx)
	s.readiness = readiness
	mux := http.NewServeMux()
	opsHandler := ops.Handler(parts.Registry, readiness)
	for _, p := range []string{"GET /healthz", "GET /readyz", "GET /metrics"} {
		mux.Handle(p, opsHandler)
	}
	apiHandler := api.Handler()
	mux.Handle("/", apiHandler)
	if s.console != nil {
		mux.Handle(console.Path, s.console.Handler())
	}
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if admin.UncleanPath(r.URL.Path) { // the API's 404 body, not ServeMux's redirect
			apiHandler.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	s.handler = parts.Tracing.AdminHandler(root, "/healthz", "/readyz", "/metrics")
	return s, nil
}

// consoleStatus is the console's status page's view: this process's
// readiness checks (the JWKS's read now, as odin authz reports it) and
// the bus's replicas.
func (s *Service) consoleStatus(ctx context.Context) console.Status {
	var st console.Status
	if s.readiness != nil {
		rep := s.readiness.Report()
		st.Ready = rep.Ready
		for name, state := range rep.Checks {
			st.Checks = append(st.Checks, console.StatusCheck{Name: name, State: state})
		}
	}
	if probe, ok := s.parts.JWKSProbe(); ok {
		state := "ok"
		if probe.Fn(ctx) != nil {
			state = "no key set loaded"
		}
		st.Checks = append(st.Checks, console.StatusCheck{Name: probe.Name, State: state})
	}
	slices.SortFunc(st.Checks, func(a, b console.StatusCheck) int { return strings.Compare(a.Name, b.Name) })
	if s.parts.Redis != nil {
		st.RedisConfigured = true
		replicas, err := s.parts.Redis.Replicas(ctx, time.Now())
		if err != nil {
			st.ReplicasError = "The heartbeat set could not be read from Redis."
		}
		st.Replicas = replicas
	}
	return st
}

// warnShortLifetimes warns of maximum key lifetimes no longer than the
// key.expiring notice: every such key's event is sent at the first scan
// after its creation.
func warnShortLifetimes(logger *slog.Logger, cfg Config) {
	notice := cfg.Webhooks.ExpiringWithin
	warn := func(m keystore.MaxLifetime, org string) {
		if m > 0 && notice >= time.Duration(m) {
			logger.Warn("a maximum key lifetime is no longer than the key.expiring notice: each new key's key.expiring event is sent at the first scan after its creation",
				"max_key_lifetime", keystore.FormatAge(time.Duration(m)), "org_id", org, "key_expiring_notice", keystore.FormatAge(notice))
		}
	}
	warn(cfg.MaxKeyLifetime.Default, "")
	for org, m := range cfg.MaxKeyLifetime.Orgs {
		warn(m, org)
	}
}

// buildAPI builds the admin API on the parts, with the key manager.
func (s *Service) buildAPI(cfg Config, mgr *keystore.Manager) (*admin.Server, error) {
	p := s.parts
	return admin.New(admin.Options{
		Store: p.Store, Manager: mgr,
		Verifier: p.Verifier, Revoked: p.Revoked,
		AllowNoSessionID: cfg.JWTAllowNoSessionID, AllowImpersonatedKeys: cfg.AllowImpersonatedKeys, Reverify: cfg.Reverify,
		OperatorToken: cfg.OperatorToken, WebhookSecret: cfg.WebhookSecret,
		Scopes: cfg.Scopes, UserScopes: cfg.UserScopes, OrgAdminRoles: cfg.OrgAdminRoles, Tiers: cfg.Tiers,
		TrustedProxies: cfg.TrustedProxies, GitHubSecretScanning: cfg.GitHubSecretScanning,
		Logger: s.log, Registerer: p.Registry,
	})
}

// newManager is the key manager of the API and the key policy, whose
// changes reach this process's revoked sessions and cfg.Notify.
func (s *Service) newManager(ctx context.Context, cfg Config) *keystore.Manager {
	p := s.parts
	return keystore.NewManager(p.Store, p.Redis, keystore.ManagerOptions{Registerer: p.Registry, CacheTTL: cfg.CacheTTL, SessionRetention: cfg.SessionRetention, SessionSync: cfg.SessionSync, MaxKeyLifetime: cfg.MaxKeyLifetime, Notify: func(inv keystore.Invalidation) {
		keystore.Receivers{Sessions: p.Revoked}.Apply(ctx, inv) // this process's own view of logged-out sessions
		if cfg.Notify != nil {
			cfg.Notify(inv)
		}
	}, SingleProcess: cfg.Notify != nil, Logger: s.log})
}

// startKeyPolicy starts the unused-keys policy when it is on.
func (s *Service) startKeyPolicy(ctx context.Context, opts keypolicy.Options, mgr *keystore.Manager) error {
	if opts.UnusedFor <= 0 {
		return nil
	}
	opts.Manager, opts.Logger, opts.Registerer = mgr, s.log, s.parts.Registry
	j, err := keypolicy.New(opts)
	if err != nil {
		return err
	}
	go j.Run(ctx)
	return nil
}

// startBackground starts the readiness probes (ready when the store
// answers; Redis is reported) and keeps the revoked sessions current from
// the bus and the store.
func (s *Service) startBackground(ctx context.Context) *ops.Readiness {
	p := s.parts
	apply := keystore.Receivers{Sessions: p.Revoked}.Apply
	go p.Subscribe(ctx, func(inv keystore.Invalidation) { apply(ctx, inv) })
	readiness := ops.NewReadiness(p.Probes(), func(ok map[string]bool) bool { return ok[p.StoreName] }, 2*time.Second, s.log, nil)
	p.Registry.MustRegister(readiness.Collector())
	_ = p.Revoked.Sync(ctx)
	go p.Revoked.Run(ctx, keystore.DefaultSessionSync)
	readiness.Probe(ctx)
	go readiness.Run(ctx)
	return readiness
}

// startWebhooks starts the delivery of outgoing webhooks from the
// store's outbox (both stores keep one), off every request path.
func (s *Service) startWebhooks(ctx context.Context, opts webhooks.Options) error {
	ob, ok := s.parts.Store.(keystore.OutboxStore)
	if !ok {
		if len(opts.Endpoints) > 0 {
			return errors.New("outgoing webhooks: the store keeps no outbox")
		}
		return nil
	}
	opts.Store, opts.Logger, opts.Registerer = ob, s.log, s.parts.Registry
	w, err := webhooks.New(opts)
	if err != nil {
		return err
	}
	s.webhooksDone = make(chan struct{})
	go func() {
		defer close(s.webhooksDone)
		w.Run(ctx)
	}()
	return nil
}

// Handler is the whole HTTP surface (for tests with httptest).
func (s *Service) Handler() http.Handler { return s.handler }

// ConsoleSignInLink is the path of a one-time link that signs its first
// visitor into the console as the operator (odin dev's banner); false when
// the console is off.
func (s *Service) ConsoleSignInLink(ttl time.Duration) (string, bool) {
	if s.console == nil {
		return "", false
	}
	return s.console.SignInLink(admin.OperatorPrincipal(), ttl), true
}

// Registry is the metrics registry.
func (s *Service) Registry() *prometheus.Registry { return s.parts.Registry }

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
	l = connlimit.Listen(l, s.maxConns, "admin", s.parts.Conns) // TCP connections, under TLS
	if s.parts.TLS != nil {
		l = tls.NewListener(l, s.parts.TLS.ServerConfig("h2", "http/1.1"))
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
	if err := s.parts.Tracing.Shutdown(sctx); err != nil {
		s.log.Warn("tracing shutdown", "error", err.Error())
	}
	if s.webhooksDone != nil {
		<-s.webhooksDone // its last attempt recorded before the store closes
	}
	s.parts.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
