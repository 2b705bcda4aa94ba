package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/netallow"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/redisconn"
)

// storeFlags are the connection flags shared by every command that talks to
// the stores.
type storeFlags struct {
	databaseURL, redisURL, redisPrefix string
	// redisMAC and redisMACPrevious authenticate the entries in Redis.
	redisMAC, redisMACPrevious string
	cacheTTL, sessionRetention time.Duration
	sessionSync                time.Duration
}

// redisOptions are the Redis options the flags give, checked: with a Redis
// URL, a MAC secret of at least keystore.MinMACSecret bytes is required.
func (s *storeFlags) redisOptions() (keystore.RedisOptions, error) {
	o := keystore.RedisOptions{URL: s.redisURL, Prefix: s.redisPrefix, MACSecret: s.redisMAC, MACSecretPrevious: s.redisMACPrevious}
	if s.redisURL == "" {
		return o, nil
	}
	if len(s.redisMAC) < keystore.MinMACSecret {
		return o, fmt.Errorf("--redis-mac-secret (ODIN_REDIS_MAC_SECRET) is required with --redis-url and must be at least %d bytes (e.g. openssl rand -base64 48), the same on every process sharing the Redis", keystore.MinMACSecret)
	}
	if s.redisMACPrevious != "" && len(s.redisMACPrevious) < keystore.MinMACSecret {
		return o, fmt.Errorf("--redis-mac-secret-previous (ODIN_REDIS_MAC_SECRET_PREVIOUS) must be at least %d bytes when set", keystore.MinMACSecret)
	}
	return o, nil
}

func (s *storeFlags) bind(f *flags) {
	f.Secret(&s.databaseURL, "database-url", "ODIN_DATABASE_URL", "PostgreSQL URL, e.g. postgres://user@127.0.0.1:5432/odin?sslmode=disable (required)")
	f.Secret(&s.redisURL, "redis-url", "ODIN_REDIS_URL", "Redis URL: redis://host:6379/0 (one server), redis+sentinel://sentinel:26379?master_name=NAME&addr=sentinel2:26379, redis+cluster://node:6379?addr=node2:6379 (rediss… for TLS); empty: no Redis (LRU, then PostgreSQL)")
	f.String(&s.redisPrefix, "redis-prefix", "ODIN_REDIS_PREFIX", "odin:", "prefix of every Redis key and of the invalidation channel")
	f.Secret(&s.redisMAC, "redis-mac-secret", "ODIN_REDIS_MAC_SECRET",
		"secret (at least 32 bytes, e.g. openssl rand -base64 48) authenticating every entry in Redis; required with --redis-url, the same on every odin authz, odin admin and odin keys/sessions sharing that Redis")
	f.Secret(&s.redisMACPrevious, "redis-mac-secret-previous", "ODIN_REDIS_MAC_SECRET_PREVIOUS",
		"the secret being rotated out: entries it authenticates are still accepted; empty: none")
	f.Duration(&s.cacheTTL, "cache-ttl", "ODIN_CACHE_TTL", keystore.DefaultCacheTTL,
		"longest time any cache tier answers for a key after reading PostgreSQL: the revocation bound if a bus message is lost")
	f.Duration(&s.sessionRetention, "session-retention", "ODIN_SESSION_RETENTION", keystore.DefaultSessionRetention,
		"how long a revoked session is remembered; tokens living longer than this are refused")
	f.Duration(&s.sessionSync, "session-sync", "ODIN_SESSION_SYNC", keystore.DefaultSessionSync,
		"how often revoked sessions are re-read from PostgreSQL: the bound if a bus message is lost (revokers state it in an unconfirmed answer)")
}

// bindJWT binds the session token (Clerk JWT) flags.
func bindJWT(f *flags, c *jwtauth.Config) {
	f.String(&c.JWKSURL, "jwks-url", "ODIN_JWKS_URL", "", "JWKS of the session token issuer, e.g. https://<clerk-frontend-api>/.well-known/jwks.json; empty: JWTs are refused")
	f.String(&c.Issuer, "jwt-issuer", "ODIN_JWT_ISSUER", "", "required iss of session tokens, e.g. https://<clerk-frontend-api> (required with --jwks-url)")
	f.List(&c.AuthorizedParties, "jwt-authorized-parties", "ODIN_JWT_AUTHORIZED_PARTIES", "allowed azp values (the dashboard's origins, e.g. https://app.odinscan.io); empty: azp not checked")
	f.List(&c.Audience, "jwt-audience", "ODIN_JWT_AUDIENCE", "accepted aud values; empty: aud not checked")
	c.Algorithms = []string{jwtauth.DefaultAlgorithm}
	f.List(&c.Algorithms, "jwt-algorithms", "ODIN_JWT_ALGORITHMS", "allowed signature algorithms (default RS256; RS*, PS*, ES*; never HS* or none)")
	f.Duration(&c.Leeway, "jwt-leeway", "ODIN_JWT_LEEWAY", jwtauth.DefaultLeeway, "clock skew allowed on exp, nbf and iat")
	f.Duration(&c.RefreshInterval, "jwks-refresh", "ODIN_JWKS_REFRESH", jwtauth.DefaultRefreshInterval, "background JWKS refresh period")
	f.Duration(&c.MinRefreshInterval, "jwks-min-refresh", "ODIN_JWKS_MIN_REFRESH", jwtauth.DefaultMinRefreshInterval, "at most one JWKS fetch per this interval when tokens name unknown kids")
	f.Duration(&c.FetchTimeout, "jwks-fetch-timeout", "ODIN_JWKS_FETCH_TIMEOUT", jwtauth.DefaultFetchTimeout, "deadline of one JWKS fetch (also the most start-up waits for it)")
	f.String(&c.Claims.TierClaim, "jwt-tier-claim", "ODIN_JWT_TIER_CLAIM", jwtauth.DefaultTierClaim, "claim holding the subscription tier (also looked up in metadata / public_metadata)")
	f.String(&c.Claims.PermissionsClaim, "jwt-permissions-claim", "ODIN_JWT_PERMISSIONS_CLAIM", "", "claim holding scopes (array or space-separated); empty: Clerk organisation permissions only")
	f.String(&c.Claims.DefaultTier, "jwt-default-tier", "ODIN_JWT_DEFAULT_TIER", jwtauth.DefaultTier, "tier of a token without a tier claim")
}

// bindSessionAdmission binds the session admission setting shared by odin
// authz and odin admin (credential.Admission).
func bindSessionAdmission(f *flags, allowNoSID *bool) {
	f.Bool(allowNoSID, "jwt-allow-no-sid", "ODIN_JWT_ALLOW_NO_SID", false,
		"accept session tokens without sid (issuers with no sessions); such tokens cannot be logged out and work until their exp")
}

// bindTracing binds the OpenTelemetry flags; main then fills what they
// leave empty from the OTEL_* variables (telemetry.Config.FillFromEnv).
func bindTracing(f *flags, c *telemetry.Config) {
	f.String(&c.Endpoint, "otlp-endpoint", "ODIN_OTLP_ENDPOINT", "", "OTLP collector to send traces to, e.g. http://otel-collector:4317 (grpc) or http://otel-collector:4318 (http/protobuf); empty: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else tracing off")
	f.String(&c.Protocol, "otlp-protocol", "ODIN_OTLP_PROTOCOL", "", "OTLP protocol: grpc or http/protobuf; empty: OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, else grpc")
	f.String(&c.SampleRatio, "trace-sample-ratio", "ODIN_TRACE_SAMPLE_RATIO", "", "fraction (0 to 1) of new traces recorded; a trace Envoy sampled is always followed; empty: OTEL_TRACES_SAMPLER_ARG, else 1")
}

// defaultTiers lists ratelimit.DefaultTiers as --rate-limit-tiers takes
// them, slowest first.
func defaultTiers() string {
	tiers := ratelimit.DefaultTiers()
	names := slices.SortedFunc(maps.Keys(tiers), func(a, b string) int { return cmp.Compare(tiers[a].Rate, tiers[b].Rate) })
	for i, name := range names {
		names[i] = name + "=" + tiers[name].String()
	}
	return strings.Join(names, ", ")
}

// trustedProxiesUsage is the usage of --trusted-proxies, on odin authz and
// odin dev.
const trustedProxiesUsage = "proxies whose X-Forwarded-For tells the client address that API keys restricted to certain networks are checked against (CIDRs or addresses, e.g. 10.0.0.0/8,2001:db8::/32,192.0.2.10): the forward-auth port's peers (NGINX, Caddy) and load balancers before them, and load balancers before Envoy (gRPC Check: when source.address is one of them); X-Forwarded-For is walked from the right through these. Empty: the forward-auth peer, or Envoy's source.address, is the client"

// parseTrustedProxies checks --trusted-proxies.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	ps, err := netallow.ParseList(list)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies (ODIN_TRUSTED_PROXIES): %w", err)
	}
	return ps, nil
}

// authzConfig is what odin authz's flags set.
type authzConfig struct {
	svc                         authzsvc.Config
	store                       storeFlags
	log                         logOptions
	grpcAddr, httpAddr, opsAddr string
	cacheSize, maxStreams       int
	migrate, keyFilter          bool
	tiers                       string
	trustedProxies              []string
	tls                         tlsServerFlags // gRPC and forward-auth; the ops port stays plain HTTP for probes
}

// authzFlagSet defines odin authz's flags, writing to c.
func authzFlagSet(c *authzConfig) *flags {
	f := newFlags("authz", "Serve envoy.service.auth.v3.Authorization/Check over gRPC (with gRPC health and\nreflection), the same decision over HTTP for forward-auth proxies, and\n/healthz, /readyz and /metrics on the ops port.")
	cfg := &c.svc
	c.store.bind(f)
	f.Secret(&cfg.DatabaseReadURL, "database-read-url", "ODIN_DATABASE_READ_URL",
		"PostgreSQL read replica (a hot standby of --database-url) for key lookups, used while it has replayed every change heard of on the bus; empty: the primary only")
	c.log.bind(f, "json")
	bindJWT(f, &cfg.JWT)
	bindSessionAdmission(f, &cfg.JWTAllowNoSessionID)
	bindTracing(f, &cfg.Tracing)
	f.Duration(&cfg.SessionTTL, "session-ttl", "ODIN_SESSION_TTL", extauthz.DefaultSessionTTL, "how long a verified session token is cached (never past its exp)")
	cfg.JWTDefaultScopes = extauthz.DefaultSessionScopes()
	f.List(&cfg.JWTDefaultScopes, "jwt-default-scopes", "ODIN_JWT_DEFAULT_SCOPES", "scopes of a session token that carries no permissions (default "+strings.Join(extauthz.DefaultSessionScopes(), ",")+": full access under the default policy)")
	f.String(&cfg.PolicyFile, "policy-file", "ODIN_POLICY_FILE", "", "route policy (YAML): scopes per method and path; reloaded on change and SIGHUP; empty: read for GET/HEAD/OPTIONS, write otherwise")
	f.String(&c.tiers, "rate-limit-tiers", "ODIN_RATE_LIMIT_TIERS", "", "tier limits as name=rate/unit:burst, e.g. free=10/s:20,pro=6000/m:200 (added over the defaults "+defaultTiers()+")")
	f.String(&cfg.RateLimit.DefaultTier, "rate-limit-default-tier", "ODIN_RATE_LIMIT_DEFAULT_TIER", ratelimit.DefaultTier, "tier of a caller whose tier is unknown")
	f.String(&cfg.RateLimitBy, "rate-limit-by", "ODIN_RATE_LIMIT_BY", "credential", "what a limit counts: credential (the API key, or the session's user) or org (the organisation when there is one)")
	f.Bool(&cfg.RateLimit.FailClosed, "rate-limit-fail-closed", "ODIN_RATE_LIMIT_FAIL_CLOSED", false, "with Redis down, refuse (503) instead of limiting each replica on its own")
	f.Bool(&cfg.DisableRateLimit, "rate-limit-disabled", "ODIN_RATE_LIMIT_DISABLED", false, "turn tier rate limits off")
	f.String(&c.grpcAddr, "grpc-addr", "ODIN_GRPC_ADDR", ":9001", "gRPC listen address (Check, health, reflection)")
	f.String(&c.httpAddr, "http-addr", "ODIN_HTTP_ADDR", ":9002", "HTTP forward-auth listen address (Envoy http_service, NGINX auth_request, Caddy forward_auth, Traefik ForwardAuth); empty disables")
	f.String(&cfg.HTTPPathPrefix, "http-path-prefix", "ODIN_HTTP_PATH_PREFIX", "", "Envoy http_service path_prefix: every forward-auth path must start with it and it is removed once (needs --forwarded-headers none)")
	f.String(&cfg.ForwardedHeaders, "forwarded-headers", "ODIN_FORWARDED_HEADERS", "none",
		"what the forward-auth proxy sets, and so where the original method and URI are read: none (Envoy http_service: the request line), original (NGINX auth_request: X-Original-Method and X-Original-URI), forwarded (Caddy forward_auth, Traefik ForwardAuth: X-Forwarded-Method and X-Forwarded-Uri); a subrequest without what its mode expects is refused with 500")
	f.List(&c.trustedProxies, "trusted-proxies", "ODIN_TRUSTED_PROXIES", trustedProxiesUsage)
	f.String(&c.opsAddr, "ops-addr", "ODIN_OPS_ADDR", ":9003", "operations HTTP listen address (/healthz, /readyz, /metrics); empty disables")
	f.Int(&c.cacheSize, "cache-size", "ODIN_CACHE_SIZE", keystore.DefaultCacheSize, "known keys cached in-process, as compact records of about 200 B outside the Go heap (unknown keys have their own tier, --negative-cache-size)")
	f.Int(&cfg.Cache.HotSize, "hot-cache-size", "ODIN_HOT_CACHE_SIZE", keystore.DefaultHotCacheSize, "cached keys whose rendered answer is kept (about 1.3 KB each); a check of another cached key renders it from its compact record (about 200 B each, --cache-size of them)")
	f.Int(&cfg.Cache.NegativeSize, "negative-cache-size", "ODIN_NEGATIVE_CACHE_SIZE", keystore.DefaultNegativeCacheSize, "unknown keys remembered for --negative-ttl, apart from the known keys' LRU")
	f.Float64(&cfg.Cache.UnknownKeyRate, "unknown-key-rate", "ODIN_UNKNOWN_KEY_RATE", keystore.DefaultUnknownKeyRate, "PostgreSQL lookups per second per replica that may find no key; past it misses get a stale entry or 503 (negative: no bound)")
	f.Bool(&c.keyFilter, "key-filter", "ODIN_KEY_FILTER", true, "refuse forged keys with no lookup of their own, from a filter of every key hash (about 9 bits per key)")
	f.Duration(&cfg.Cache.FilterRefresh, "key-filter-refresh", "ODIN_KEY_FILTER_REFRESH", keystore.DefaultFilterRefresh, "how often the key filter is rebuilt from PostgreSQL, folding in the keys learnt since")
	f.Duration(&cfg.Cache.NegativeTTL, "negative-ttl", "ODIN_NEGATIVE_TTL", keystore.DefaultNegativeTTL, "how long an unknown key is remembered as unknown")
	f.Duration(&cfg.Cache.StaleIfError, "stale-if-error", "ODIN_STALE_IF_ERROR", keystore.DefaultStaleIfError, "how long past its TTL a cached key still answers while PostgreSQL is unreachable (negative: never)")
	f.Duration(&cfg.Cache.StoreTimeout, "store-timeout", "ODIN_STORE_TIMEOUT", keystore.DefaultStoreTimeout, "deadline of one PostgreSQL lookup; keep it under Envoy's ext_authz timeout")
	f.Duration(&cfg.RedisTimeout, "redis-timeout", "ODIN_REDIS_TIMEOUT", redisconn.DefaultTimeout, "Redis read/write timeout (dial: twice this)")
	f.Bool(&cfg.StripCredential, "strip-credential", "ODIN_STRIP_CREDENTIAL", true, "remove the authorization / api-key header from the upstream request")
	f.Bool(&c.migrate, "migrate", "ODIN_MIGRATE", false, "apply pending schema migrations before serving (as 'odin migrate' does)")
	f.Int(&c.maxStreams, "max-streams", "ODIN_GRPC_MAX_STREAMS", authzsvc.DefaultMaxStreams, "maximum concurrent gRPC streams per connection")
	f.Int(&cfg.StreamWorkers, "grpc-stream-workers", "ODIN_GRPC_STREAM_WORKERS", authzsvc.DefaultStreamWorkers, "goroutines that serve gRPC streams one after another, keeping the stacks they grew (a stream that finds them all busy gets a goroutine of its own); negative: a new goroutine per stream")
	f.Duration(&cfg.Connections.GRPCHandshakeTimeout, "grpc-handshake-timeout", "ODIN_GRPC_HANDSHAKE_TIMEOUT", authzsvc.DefaultGRPCHandshakeTimeout, "how long a new gRPC connection may take to finish TLS and send the HTTP/2 preface before it is closed")
	f.Duration(&cfg.Connections.KeepaliveMinTime, "grpc-keepalive-min-time", "ODIN_GRPC_KEEPALIVE_MIN_TIME", authzsvc.DefaultKeepaliveMinTime, "shortest interval allowed between a client's HTTP/2 pings (Envoy connection_keepalive interval); more often: GOAWAY too_many_pings")
	f.Duration(&cfg.Connections.KeepaliveTime, "grpc-keepalive-time", "ODIN_GRPC_KEEPALIVE_TIME", authzsvc.DefaultKeepaliveTime, "ping a gRPC connection idle this long, to find dead peers")
	f.Duration(&cfg.Connections.KeepaliveTimeout, "grpc-keepalive-timeout", "ODIN_GRPC_KEEPALIVE_TIMEOUT", authzsvc.DefaultKeepaliveTimeout, "close a gRPC connection whose ping is not answered within this")
	f.Int(&cfg.Connections.MaxGRPC, "grpc-max-connections", "ODIN_GRPC_MAX_CONNECTIONS", authzsvc.DefaultMaxConnections, "open gRPC connections at most; one more is closed at once (negative: no cap)")
	f.Int(&cfg.Connections.MaxHTTP, "http-max-connections", "ODIN_HTTP_MAX_CONNECTIONS", authzsvc.DefaultMaxConnections, "open forward-auth connections at most; one more is closed at once (negative: no cap)")
	f.Duration(&cfg.DrainTimeout, "drain-timeout", "ODIN_DRAIN_TIMEOUT", authzsvc.DefaultDrainTimeout, "on SIGTERM, how long in-flight checks may take before streams are closed")
	f.Bool(&cfg.Profiling, "pprof", "ODIN_PPROF", false, "serve Go's profiler on the ops port (/debug/pprof/); keep the ops port private")
	f.Duration(&cfg.UsageInterval, "usage-interval", "ODIN_USAGE_INTERVAL", keystore.DefaultUsageInterval, "how often key last-used times are written to PostgreSQL")
	c.tls.bind(f, "ODIN_", "gRPC and forward-auth (not the ops port)")
	return f
}

func runAuthz(ctx context.Context, args []string, stderr io.Writer) error {
	var c authzConfig
	if _, err := parseFlags(&c, authzFlagSet, args, stderr); err != nil {
		return err
	}
	logger, err := c.log.logger(stderr)
	if err != nil {
		return err
	}
	if c.maxStreams <= 0 {
		return fmt.Errorf("--max-streams must be positive")
	}
	cfg, sf := c.svc, c.store
	cfg.DatabaseURL, cfg.RedisURL, cfg.RedisPrefix = sf.databaseURL, sf.redisURL, sf.redisPrefix
	if _, err := sf.redisOptions(); err != nil {
		return err
	}
	cfg.RedisMACSecret, cfg.RedisMACSecretPrevious = sf.redisMAC, sf.redisMACPrevious
	cfg.Cache.TTL, cfg.Cache.Size, cfg.MaxStreams = sf.cacheTTL, c.cacheSize, uint32(c.maxStreams)
	cfg.SessionRetention, cfg.SessionSync = sf.sessionRetention, sf.sessionSync
	cfg.NoKeyFilter = !c.keyFilter
	if cfg.TLS, err = c.tls.config(); err != nil {
		return err
	}
	cfg.Tracing.FillFromEnv(os.Getenv)
	if cfg.TrustedProxies, err = parseTrustedProxies(c.trustedProxies); err != nil {
		return err
	}
	if c.tiers != "" {
		if cfg.RateLimit.Tiers, err = ratelimit.ParseTiers(c.tiers); err != nil {
			return fmt.Errorf("--rate-limit-tiers: %w", err)
		}
	}

	// The configuration is checked, and the service built, before any port
	// is bound: a busy port must not hide a configuration error.
	if c.migrate {
		if cfg.DatabaseURL == "" {
			return errMissingDatabaseURL
		}
		if err := migrateDatabase(ctx, cfg.DatabaseURL, logger); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx) // stops the service's background work if binding fails
	defer cancel()
	svc, err := authzsvc.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	var lis authzsvc.Listeners
	if lis.GRPC, err = net.Listen("tcp", c.grpcAddr); err != nil {
		return fmt.Errorf("listen gRPC: %w", err)
	}
	if c.httpAddr != "" {
		if lis.HTTP, err = net.Listen("tcp", c.httpAddr); err != nil {
			lis.GRPC.Close()
			return fmt.Errorf("listen HTTP: %w", err)
		}
	}
	if c.opsAddr != "" {
		if lis.Ops, err = net.Listen("tcp", c.opsAddr); err != nil {
			lis.GRPC.Close()
			if lis.HTTP != nil {
				lis.HTTP.Close()
			}
			return fmt.Errorf("listen ops: %w", err)
		}
	}
	return svc.Serve(ctx, lis)
}
