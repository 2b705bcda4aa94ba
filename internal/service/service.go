// Package service holds the parts every Odin process is built from: the
// metrics registry, the connection-cap metrics, the TLS reloader, the key
// store, Redis, the revoked sessions, the JWT verifier and the tracing
// provider. Its subpackages assemble one process each: authzsvc runs
// `odin authz`, adminsvc runs `odin admin`.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/odin-scan/odin-authz/internal/connlimit"
	"github.com/odin-scan/odin-authz/internal/ops"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// Options are the settings the parts are built from.
type Options struct {
	// Name is the process's name in traces ("odin-authz", "odin-admin").
	Name string
	// Store, when set, is used instead of opening DatabaseURL (odin dev's
	// embedded store); the caller closes it. StoreName names it in
	// readiness reports (default "postgres").
	Store       keystore.Store
	StoreName   string
	DatabaseURL string
	// DatabaseReadURL, when set, is a PostgreSQL read replica for key
	// lookups, guarded by a keystore.Watermark; Fenced is its bus's fence.
	DatabaseReadURL string
	Fenced          func(time.Time) bool

	// Redis is where Redis is; its URL empty: no Redis.
	Redis RedisOptions
	// SessionRetention is how long a revoked session is remembered.
	SessionRetention time.Duration
	// JWT configures the session token verifier; none when JWT.JWKSURL is
	// empty.
	JWT     jwtauth.Config
	Tracing telemetry.Config
	// TLS, when set, builds a reloader of the serving certificate.
	TLS *tlsreload.Config
}

// Parts are the built parts; Close releases the stores.
type Parts struct {
	Registry *prometheus.Registry
	Conns    *connlimit.Metrics
	TLS      *tlsreload.Reloader // nil: plain transport
	Store    keystore.Store
	// StoreName names Store in readiness reports.
	StoreName string
	// Watermark and pingReplica serve the read replica; nil without one.
	Watermark   *keystore.Watermark
	pingReplica func(context.Context) error
	KeyMetrics  *keystore.Metrics
	Redis       *keystore.Redis // nil without Redis
	Revoked     *keystore.RevokedSessions
	Verifier    *jwtauth.Verifier // nil when JWTs are not configured
	// Replica names this process (the trace resource's service.instance.id).
	Replica string
	Tracing *telemetry.Provider

	closeStore func()
}

// New builds the parts; the TLS reloader watches its files under ctx. On
// error, whatever was opened is closed.
func New(ctx context.Context, opts Options, logger *slog.Logger) (*Parts, error) {
	if opts.DatabaseURL == "" && opts.Store == nil {
		return nil, errors.New("a database URL is required (--database-url or ODIN_DATABASE_URL)")
	}
	if opts.DatabaseReadURL != "" && opts.Store != nil {
		return nil, errors.New("a database read URL needs PostgreSQL, not an embedded store")
	}
	p := &Parts{Registry: prometheus.NewRegistry(), StoreName: opts.StoreName, closeStore: func() {}}
	if p.StoreName == "" {
		p.StoreName = "postgres"
	}
	p.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.Conns = connlimit.NewMetrics(p.Registry)
	if opts.TLS != nil { // before any store is opened: nothing to close on error
		tr, err := tlsreload.New(*opts.TLS, logger, p.Registry)
		if err != nil {
			return nil, err
		}
		p.TLS = tr
		go tr.Watch(ctx)
	}
	if err := p.openStore(ctx, opts, logger); err != nil {
		return nil, err
	}
	p.KeyMetrics = keystore.NewMetrics(p.Registry)
	var err error
	if p.Redis, err = openRedis(opts.Redis, p.KeyMetrics, logger); err != nil {
		p.Close()
		return nil, err
	}
	p.Replica = keystore.NewReplicaID()
	p.Revoked = keystore.NewRevokedSessions(p.Store, p.Redis, opts.SessionRetention, logger)
	if opts.JWT.JWKSURL != "" {
		if p.Verifier, err = jwtauth.New(ctx, opts.JWT, logger, p.Registry); err != nil {
			p.Close()
			return nil, fmt.Errorf("configure JWT verification: %w", err)
		}
	}
	if p.Tracing, err = telemetry.New(ctx, opts.Tracing, telemetry.Resource{Service: opts.Name, Instance: p.Replica}, logger); err != nil {
		p.Close()
		return nil, fmt.Errorf("configure tracing: %w", err)
	}
	return p, nil
}

// openStore opens PostgreSQL (with its read replica, if any) unless a
// store was provided, and reports its schema version.
func (p *Parts) openStore(ctx context.Context, opts Options, logger *slog.Logger) error {
	if opts.Store != nil {
		p.Store = opts.Store
		return nil
	}
	pgOpts := pgstore.Options{}
	if opts.DatabaseReadURL != "" {
		p.Watermark = keystore.NewWatermark(keystore.WatermarkOptions{Fenced: opts.Fenced, Registerer: p.Registry, Logger: logger})
		pgOpts.ReadURL, pgOpts.Watermark = opts.DatabaseReadURL, p.Watermark
	}
	pg, err := pgstore.Open(ctx, opts.DatabaseURL, pgOpts)
	if err != nil {
		return err
	}
	p.Store, p.closeStore = pg, pg.Close
	pg.ReportSchema(ctx, logger)
	if pg.HasReplica() {
		p.pingReplica = pg.PingReplica
	}
	return nil
}

// Probes are the readiness probes of the stores: the key store, Redis
// (when configured) and the read replica (when configured).
func (p *Parts) Probes() []ops.Probe {
	probes := []ops.Probe{{Name: p.StoreName, Fn: p.Store.Ping}}
	if p.Redis != nil {
		probes = append(probes, ops.Probe{Name: "redis", Fn: p.Redis.Ping})
	}
	if p.pingReplica != nil { // reported; lookups fall back to the primary without it
		probes = append(probes, ops.Probe{Name: "postgres-replica", Fn: p.pingReplica})
	}
	return probes
}

// JWKSProbe reports whether the verifier holds a key set; ok is false
// without a verifier.
func (p *Parts) JWKSProbe() (probe ops.Probe, ok bool) {
	if p.Verifier == nil {
		return ops.Probe{}, false
	}
	return ops.Probe{Name: "jwks", Fn: func(context.Context) error {
		if !p.Verifier.Ready() {
			return errors.New("no key set loaded")
		}
		return nil
	}}, true
}

// Close closes Redis and the store the parts opened (not a provided one).
func (p *Parts) Close() {
	if p.Redis != nil {
		_ = p.Redis.Close()
	}
	p.closeStore()
}

// Abandon undoes New for a process that failed to build past it: it stops
// the tracing provider and closes the stores.
func (p *Parts) Abandon(ctx context.Context) {
	_ = p.Tracing.Shutdown(context.WithoutCancel(ctx))
	p.Close()
}
