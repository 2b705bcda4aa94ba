package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/admin/console"
	"github.com/odin-scan/odin-authz/admin/keypolicy"
	"github.com/odin-scan/odin-authz/admin/secretscan"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// adminConfig is what odin admin's flags set.
type adminConfig struct {
	svc     adminsvc.Config
	store   storeFlags
	log     logOptions
	addr    string
	migrate bool
	// reverify is --admin-reverify as given, read into svc.Reverify.
	reverify string
	tls      tlsServerFlags
	hooks    outgoingWebhookFlags
	console  bool
	policy   keyPolicyFlags
}

// keyPolicyFlags are the flags of the operator's key policy: strings read
// by keystore.ParseAge (90d, 36h), empty for off.
type keyPolicyFlags struct {
	lifetimes         keyLifetimeFlags
	revokeUnusedAfter string
	dryRun            bool
	interval          time.Duration
}

// keyLifetimeFlags are --max-key-lifetime and --key-policy-file.
type keyLifetimeFlags struct{ max, file string }

func (l *keyLifetimeFlags) bind(f *flags, note string) {
	f.String(&l.max, "max-key-lifetime", "ODIN_MAX_KEY_LIFETIME", "",
		"longest a key may live, e.g. 365d or 2160h: a key created without an expiry expires that long after its creation, a later expiry is refused, a roll's new key expires within it; empty: no limit"+note)
	f.String(&l.file, "key-policy-file", "ODIN_KEY_POLICY_FILE", "",
		`JSON file of organisations' own maximum key lifetimes, replacing --max-key-lifetime for their keys: {"organisations": {"org_...": {"max_key_lifetime": "30d"}}}`+note)
}

// lifetimes reads the flags (and the file) into a policy.
func (l *keyLifetimeFlags) lifetimes() (keystore.KeyLifetimes, error) {
	var p keystore.KeyLifetimes
	if l.max != "" {
		d, err := keystore.ParseAge(l.max)
		if err != nil {
			return p, fmt.Errorf("--max-key-lifetime: %w", err)
		}
		p.Default = keystore.MaxLifetime(d)
	}
	if l.file != "" {
		raw, err := os.ReadFile(l.file)
		if err != nil {
			return p, fmt.Errorf("--key-policy-file: %w", err)
		}
		if p.Orgs, err = keystore.ParseKeyPolicy(raw); err != nil {
			return p, fmt.Errorf("--key-policy-file %s: %w", l.file, err)
		}
	}
	return p, nil
}

func (p *keyPolicyFlags) bind(f *flags) {
	p.lifetimes.bind(f, "")
	f.String(&p.revokeUnusedAfter, "revoke-unused-after", "ODIN_REVOKE_UNUSED_AFTER", "",
		"revoke keys unused for this long, e.g. 90d: last used longer ago, or never used and created longer ago (audit actor "+keypolicy.Actor+", reason "+keystore.RevokeReasonExpiredByPolicy+"); empty: off")
	f.Bool(&p.dryRun, "revoke-unused-dry-run", "ODIN_REVOKE_UNUSED_DRY_RUN", false,
		"with --revoke-unused-after: log the keys a sweep would revoke and count them in odin_admin_unused_keys_would_revoke, revoking nothing")
	f.Duration(&p.interval, "revoke-unused-interval", "ODIN_REVOKE_UNUSED_INTERVAL", keypolicy.DefaultInterval,
		"time between two sweeps for unused keys (the first at start)")
}

// apply checks the flags and writes them into cfg.
func (p *keyPolicyFlags) apply(cfg *adminsvc.Config) error {
	var err error
	if cfg.MaxKeyLifetime, err = p.lifetimes.lifetimes(); err != nil {
		return err
	}
	if p.revokeUnusedAfter != "" {
		d, err := keystore.ParseAge(p.revokeUnusedAfter)
		if err != nil {
			return fmt.Errorf("--revoke-unused-after: %w", err)
		}
		cfg.UnusedKeys.UnusedFor = d
	} else if p.dryRun {
		return errors.New("--revoke-unused-dry-run needs --revoke-unused-after")
	}
	if p.interval <= 0 {
		return errors.New("--revoke-unused-interval must be positive")
	}
	cfg.UnusedKeys.DryRun, cfg.UnusedKeys.Interval = p.dryRun, p.interval
	return nil
}

// adminFlagSet defines odin admin's flags, writing to c.
func adminFlagSet(c *adminConfig) *flags {
	f := newFlags("admin", "Serve the admin API (keys, sessions, Clerk webhooks, audit log) with /healthz,\n/readyz and /metrics on the same port, and send the outgoing webhooks.")
	cfg := &c.svc
	c.store.bind(f)
	c.log.bind(f, "json")
	bindJWT(f, &cfg.JWT)
	bindSessionAdmission(f, &cfg.JWTAllowNoSessionID)
	f.Bool(&cfg.AllowImpersonatedKeys, "allow-impersonated-keys", "ODIN_ALLOW_IMPERSONATED_KEYS", false,
		"let an impersonated session (Clerk act claim) create and roll keys; default: 403, a key would outlive the impersonation")
	f.String(&c.reverify, "admin-reverify", "ODIN_ADMIN_REVERIFY", "",
		"step-up verification a session token needs to create, roll or enable a key, as level:max_age (second_factor:10m; levels first_factor, second_factor, multi_factor) or one of Clerk's presets strict_mfa, strict, moderate, lax; otherwise 403 with Clerk's reverification hint (docs/ADMIN.md); empty: off; the operator token is exempt")
	bindTracing(f, &cfg.Tracing)
	f.String(&c.addr, "admin-addr", "ODIN_ADMIN_ADDR", ":9004", "listen address")
	f.Secret(&cfg.OperatorToken, "admin-token", "ODIN_ADMIN_TOKEN", "operator token (at least 32 characters): full access as `Authorization: Bearer <token>`")
	f.Secret(&cfg.WebhookSecret, "webhook-secret", "ODIN_WEBHOOK_SECRET", "Clerk webhook signing secret (whsec_...); empty: the webhook endpoint answers 404")
	cfg.Scopes = []string{"scans:read", "scans:write"}
	f.List(&cfg.Scopes, "key-scopes", "ODIN_KEY_SCOPES", "scopes a key may carry (default "+strings.Join(admin.DefaultKeyScopes(), ",")+")")
	f.List(&cfg.UserScopes, "user-scopes", "ODIN_USER_SCOPES", "scopes of a caller whose token carries no permissions (default: all key scopes)")
	f.List(&cfg.Tiers, "key-tiers", "ODIN_KEY_TIERS", "tier names the operator may give a key (the tiers of odin authz's --rate-limit-tiers, e.g. free,pro,enterprise): another is 400; empty: any well-formed name, which odin authz limits as its default tier")
	f.List(&cfg.OrgAdminRoles, "org-admin-roles", "ODIN_ORG_ADMIN_ROLES", "organisation roles that manage the organisation's keys (default "+strings.Join(admin.DefaultOrgAdminRoles(), ",")+")")
	f.List(&cfg.TrustedProxies, "admin-trusted-proxies", "ODIN_ADMIN_TRUSTED_PROXIES",
		"addresses or CIDR ranges of the load balancers in front of the admin API: from them, the failed-authentication throttle counts the rightmost X-Forwarded-For entry outside these ranges; empty: the socket peer, X-Forwarded-For ignored")
	bindSecretScanning(f, &cfg.GitHubSecretScanning)
	f.Int(&cfg.MaxConnections, "admin-max-connections", "ODIN_ADMIN_MAX_CONNECTIONS", adminsvc.DefaultMaxConnections, "open admin API connections at most; one more is closed at once (negative: no cap)")
	f.Bool(&c.console, "console", "ODIN_CONSOLE", true,
		"serve the operator console at /console/ (keys in a browser, docs/CONSOLE.md); false: 404")
	f.Duration(&cfg.ConsoleSessionTTL, "console-session-ttl", "ODIN_CONSOLE_SESSION_TTL", console.DefaultSessionTTL,
		"lifetime of a console session from sign-in (not extended by use)")
	f.String(&cfg.ConsoleAuthzMetricsURL, "console-authz-metrics-url", "ODIN_CONSOLE_AUTHZ_METRICS_URL", "",
		"an odin authz /metrics URL (e.g. http://authz:9003/metrics) whose decision counters the console's status page shows with their rates; empty: the page says where they are")
	f.Bool(&c.migrate, "migrate", "ODIN_MIGRATE", false, "apply pending schema migrations before serving")
	c.tls.bind(f, "ODIN_ADMIN_", "the admin API and its /healthz, /readyz, /metrics")
	c.hooks.bind(f)
	c.policy.bind(f)
	return f
}

// bindSecretScanning defines the flags of POST /v1/secret-scanning/github.
func bindSecretScanning(f *flags, c *admin.GitHubSecretScanning) {
	f.Bool(&c.Enabled, "github-secret-scanning", "ODIN_GITHUB_SECRET_SCANNING", false,
		"serve POST /v1/secret-scanning/github: GitHub reports odin_sk_ keys found in public, they are revoked (docs/ADMIN.md); off: 404")
	f.String(&c.KeysURL, "github-secret-scanning-keys-url", "ODIN_GITHUB_SECRET_SCANNING_KEYS_URL", secretscan.DefaultKeysURL,
		"GitHub's document of the public keys that sign secret scanning reports")
	f.Secret(&c.Token, "github-secret-scanning-token", "ODIN_GITHUB_SECRET_SCANNING_TOKEN",
		"optional GitHub token (no scopes needed) sent when fetching the keys document, to lift GitHub's per-address rate limit")
	f.Duration(&c.FetchTimeout, "github-secret-scanning-fetch-timeout", "ODIN_GITHUB_SECRET_SCANNING_FETCH_TIMEOUT", secretscan.DefaultFetchTimeout,
		"deadline of one fetch of the keys document")
	f.Duration(&c.MinRefreshInterval, "github-secret-scanning-refresh-interval", "ODIN_GITHUB_SECRET_SCANNING_REFRESH_INTERVAL", secretscan.DefaultMinRefreshInterval,
		"least time between two fetches of the keys document: a report signed by an unknown key fetches it again at most this often")
}

func runAdmin(ctx context.Context, args []string, stderr io.Writer) error {
	var c adminConfig
	if _, err := parseFlags(&c, adminFlagSet, args, stderr); err != nil {
		return err
	}
	cfg, sf, lo, tf, addr, migrate := c.svc, c.store, c.log, c.tls, c.addr, c.migrate
	cfg.ConsoleDisabled = !c.console
	if c.reverify != "" {
		rv, err := jwtauth.ParseReverification(c.reverify)
		if err != nil {
			return fmt.Errorf("--admin-reverify: %w", err)
		}
		cfg.Reverify = &rv
	}
	logger, err := lo.logger(stderr)
	if err != nil {
		return err
	}
	cfg.DatabaseURL, cfg.RedisURL, cfg.RedisPrefix = sf.databaseURL, sf.redisURL, sf.redisPrefix
	if _, err := sf.redisOptions(); err != nil {
		return err
	}
	cfg.RedisMACSecret, cfg.RedisMACSecretPrevious = sf.redisMAC, sf.redisMACPrevious
	cfg.CacheTTL, cfg.SessionRetention, cfg.SessionSync = sf.cacheTTL, sf.sessionRetention, sf.sessionSync
	if cfg.TLS, err = tf.config(); err != nil {
		return err
	}
	if cfg.Webhooks, err = c.hooks.options(); err != nil {
		return err
	}
	if err := c.policy.apply(&cfg); err != nil {
		return err
	}
	cfg.Tracing.FillFromEnv(os.Getenv)
	if cfg.DatabaseURL == "" {
		return errMissingDatabaseURL
	}
	if migrate {
		if err := migrateDatabase(ctx, cfg.DatabaseURL, logger); err != nil {
			return err
		}
	}
	// Built before the port is bound: a busy port must not hide a
	// configuration error.
	ctx, cancel := context.WithCancel(ctx) // stops the service's background work if binding fails
	defer cancel()
	svc, err := adminsvc.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return svc.Serve(ctx, l)
}
