package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

const keysUsage = `Usage: odin keys <create|list|get|update|disable|enable|roll|revoke> [flags]

  create --name N [--scopes a,b] [--tier T] --owner ID [--expires-in DUR]
         [--rate-limit RATE/UNIT:BURST] [--allowed-cidrs CIDR,...] [--json]
         prints the new key alone on stdout (it is shown once, never again)
  list   [--owner ID|me|org] [--revoked all|yes|no] [--unused-for DUR] [--limit N]
         [--cursor C] [--json]
  get    <id> [--json]
         the key by hint (never the key itself) and its checks per hour, last 7 days
  update <id> [--name N] [--scopes a,b] [--tier T] [--expires-in DUR|--no-expiry]
         [--rate-limit RATE/UNIT:BURST|--tier-rate-limit]
         [--allowed-cidrs CIDR,...|--any-network] [--json]
         changes what is given; in force on every replica when it returns
  disable <id> [--json]
         the key is refused (401, "API key is disabled") until enabled again
  enable <id> [--json]
  roll   <id> [--grace DUR] [--json]
         prints the new key alone; the old one keeps working for --grace (default 0)
  revoke <id> [--json]
         revokes at once: PostgreSQL, then Redis, then every replica via the bus

update, disable, enable, revoke and roll (and 'odin sessions revoke') exit 3
when the change is made but not confirmed on every replica (the bus is
unreachable): the message says by when every replica applies it, and running
the same command again propagates it.

They act on the database (--database-url, ODIN_DATABASE_URL), or, when
--admin-url (ODIN_ADMIN_URL) is set, through the admin API with --admin-token
(ODIN_ADMIN_TOKEN), and then need no database URL.

Run 'odin keys <subcommand> -h' for every flag.
`

var (
	errMissingDatabaseURL = errors.New("a database URL is required (--database-url or ODIN_DATABASE_URL)")
	// errMissingBackend is errMissingDatabaseURL for the commands that can
	// also go through the admin API.
	errMissingBackend = errors.New("a database URL is required (--database-url or ODIN_DATABASE_URL), or the admin API's (--admin-url or ODIN_ADMIN_URL)")
)

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSubcommand(ctx, "keys", keysUsage, map[string]subcommand{
		"create": keysCreate, "list": keysList, "get": keysGet, "update": keysUpdate, "disable": keysDisable, "enable": keysEnable,
		"roll": keysRoll, "revoke": keysRevoke,
	}, args, stdout, stderr)
}

// subcommand is one command of a group (odin keys create, odin webhooks retry…).
type subcommand func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// runSubcommand runs the subcommand of group that args name, printing the
// group's usage for help, none or an unknown one.
func runSubcommand(ctx context.Context, group, usage string, subs map[string]subcommand, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%s: no subcommand given", group)
	}
	if run, ok := subs[args[0]]; ok {
		return run(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	switch args[0] {
	case "-h", "--help", "help":
		return nil
	}
	return fmt.Errorf("%s: unknown subcommand %q", group, args[0])
}

// keyAdmin is where the keys and sessions commands act: the database
// (keysEnv) or the admin API (adminClient). Both answer the same records,
// so the commands print the same thing either way.
type keyAdmin interface {
	CreateKey(ctx context.Context, req createKeyRequest) (createdKeyRecord, error)
	ListKeys(ctx context.Context, q listKeysQuery) (keyPage, error)
	// Key returns a key with its checks per hour over the last 7 days.
	Key(ctx context.Context, id string) (keyRecord, error)
	RevokeKey(ctx context.Context, id string) (api.Key, error)
	RollKey(ctx context.Context, id string, grace time.Duration) (rolledKeyRecord, error)
	UpdateKey(ctx context.Context, id string, req updateKeyRequest) (api.Key, error)
	DisableKey(ctx context.Context, id string) (api.Key, error)
	EnableKey(ctx context.Context, id string) (api.Key, error)
	RevokeSession(ctx context.Context, sid, reason string) (keystore.RevokedSession, error)
	Close()
}

// The keys commands take and print the admin API's own bodies (admin/api),
// whichever way they reach the keys, so --json prints the same either way.
type (
	// createKeyRequest is a new key, as POST /v1/keys takes it.
	createKeyRequest = api.CreateKeyRequest
	// keyRecord is a key with its checks per hour over the last 7 days.
	keyRecord = api.KeyDetail
	// createdKeyRecord adds the key itself, shown this once.
	createdKeyRecord = api.CreatedKey
	// rolledKeyRecord is the new key of a roll and the old one it replaces.
	rolledKeyRecord = api.RolledKey
	keyPage         = api.KeyPage
)

// listKeysQuery selects a page of keys.
type listKeysQuery struct {
	owner         string // "me" or "org": a session token's own keys (admin API only)
	userID, orgID string
	revoked       *bool
	unusedFor     time.Duration // zero: any
	limit         int
	cursor        string
}

// backendFlags are the flags of every keys and sessions subcommand: the
// database, or the admin API when --admin-url is set.
type backendFlags struct {
	store storeFlags
	admin adminFlags
	// lifetimes are --max-key-lifetime and --key-policy-file, of the
	// commands that make keys (create, roll) on the database.
	lifetimes keyLifetimeFlags
}

func (b *backendFlags) bind(f *flags) {
	b.store.bind(f)
	b.admin.bind(f)
}

// bindMaxKeyLifetime defines --max-key-lifetime, for the commands that
// make keys.
func (b *backendFlags) bindMaxKeyLifetime(f *flags) {
	b.lifetimes.bind(f, ". On the database only: over --admin-url, odin admin's own setting applies")
}

func (b *backendFlags) open(ctx context.Context, stderr io.Writer) (keyAdmin, error) {
	if b.admin.url != "" {
		return newAdminClient(b.admin, stderr)
	}
	lifetimes, err := b.lifetimes.lifetimes()
	if err != nil {
		return nil, err
	}
	return openKeysEnv(ctx, b.store, lifetimes, stderr)
}

// keysEnv is keyAdmin on the database directly.
type keysEnv struct {
	store   *pgstore.Store
	redis   *keystore.Redis
	manager *keystore.Manager
	sf      storeFlags
	warn    io.Writer // where a change that could not be propagated is reported
}

var _ keyAdmin = (*keysEnv)(nil)

// Close implements keyAdmin.
func (e *keysEnv) Close() {
	if e.redis != nil {
		_ = e.redis.Close()
	}
	e.store.Close()
}

func openKeysEnv(ctx context.Context, sf storeFlags, maxLifetime keystore.KeyLifetimes, stderr io.Writer) (*keysEnv, error) {
	if sf.databaseURL == "" {
		return nil, errMissingBackend
	}
	ropts, err := sf.redisOptions()
	if err != nil {
		return nil, err
	}
	store, err := pgstore.Open(ctx, sf.databaseURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	e := &keysEnv{store: store, sf: sf, warn: stderr}
	if sf.redisURL != "" {
		logger, _ := (&logOptions{level: "warn", format: "text"}).logger(stderr)
		e.redis, err = keystore.OpenRedis(ropts, keystore.NewMetrics(nil), logger)
		if err != nil {
			store.Close()
			return nil, err
		}
	}
	e.manager = keystore.NewManager(store, e.redis, keystore.ManagerOptions{CacheTTL: sf.cacheTTL, SessionRetention: sf.sessionRetention, SessionSync: sf.sessionSync, MaxKeyLifetime: maxLifetime})
	return e, nil
}

// notPropagated reports a committed change the bus did not carry, and
// hides it from the caller: the change stands.
func (e *keysEnv) notPropagated(err error) error {
	if errors.Is(err, keystore.ErrNotPropagated) {
		fmt.Fprintf(e.warn, "odin: warning: %v; replicas drop their cached copy within --cache-ttl (%s)\n", err, e.sf.cacheTTL)
		return nil
	}
	return err
}

func notFound(err error, id string) error {
	if errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("no key with id %q", id)
	}
	return err
}

// CreateKey implements keyAdmin.
func (e *keysEnv) CreateKey(ctx context.Context, req createKeyRequest) (createdKeyRecord, error) {
	n := keystore.NewKey{Name: req.Name, Scopes: req.Scopes, Tier: req.Tier, UserID: req.UserID, OrgID: req.OrgID, RateLimit: req.RateLimit}
	if req.ExpiresAt != nil {
		n.ExpiresAt = *req.ExpiresAt
	}
	cidrs, err := keystore.ParseCIDRs(req.AllowedCIDRs)
	if err != nil {
		return createdKeyRecord{}, err
	}
	n.AllowedCIDRs = cidrs
	plaintext, k, err := e.manager.Create(ctx, cliActor, n)
	if err = e.notPropagated(err); err != nil {
		return createdKeyRecord{}, err
	}
	return createdKeyRecord{Plaintext: plaintext, Key: api.NewKey(k, time.Now())}, nil
}

// ListKeys implements keyAdmin.
func (e *keysEnv) ListKeys(ctx context.Context, q listKeysQuery) (keyPage, error) {
	if q.owner != "" {
		return keyPage{}, fmt.Errorf("--owner %s names the caller of the admin API: it needs --admin-url", q.owner)
	}
	now := time.Now()
	opts := keystore.ListKeysOptions{UserID: q.userID, OrgID: q.orgID, Revoked: q.revoked, Limit: q.limit, Cursor: q.cursor}
	if q.unusedFor > 0 {
		opts.UnusedSince = now.Add(-q.unusedFor)
	}
	keys, next, err := e.store.ListKeys(ctx, opts)
	if err != nil {
		return keyPage{}, err
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	totals, err := e.store.KeyUsageTotals(ctx, ids, now)
	if err != nil {
		return keyPage{}, err
	}
	page := keyPage{Keys: make([]api.Key, 0, len(keys)), NextCursor: next}
	for _, k := range keys {
		page.Keys = append(page.Keys, api.NewKey(k, now).WithUsage(totals))
	}
	return page, nil
}

// usageWindow is how far back `keys get` shows usage, as the admin API does.
const usageWindow = 7 * 24 * time.Hour

// Key implements keyAdmin.
func (e *keysEnv) Key(ctx context.Context, id string) (keyRecord, error) {
	k, err := e.store.Key(ctx, id)
	if err != nil {
		return keyRecord{}, notFound(err, id)
	}
	now := time.Now()
	usage, err := e.store.KeyUsage(ctx, k.ID, now.Add(-usageWindow).Truncate(time.Hour))
	if err != nil {
		return keyRecord{}, fmt.Errorf("read usage of %s: %w", id, err)
	}
	totals, err := e.store.KeyUsageTotals(ctx, []string{k.ID}, now)
	if err != nil {
		return keyRecord{}, fmt.Errorf("read usage of %s: %w", id, err)
	}
	return keyRecord{Key: api.NewKey(k, now).WithUsage(totals), Usage: usage}, nil
}

// RevokeKey implements keyAdmin. A revocation not confirmed on every
// replica is returned with an *unconfirmedError.
func (e *keysEnv) RevokeKey(ctx context.Context, id string) (api.Key, error) {
	k, err := e.manager.RevokeWithReason(ctx, cliActor, id, keystore.RevokeReasonOperator, nil)
	if k == nil {
		return api.Key{}, notFound(err, id)
	}
	return api.NewKey(k, time.Now()), unconfirmed(err, "odin keys revoke "+id)
}

// RollKey implements keyAdmin. A roll whose shortening of the old key's
// life is not confirmed on every replica is returned with an
// *unconfirmedError: the new key exists.
func (e *keysEnv) RollKey(ctx context.Context, id string, grace time.Duration) (rolledKeyRecord, error) {
	plaintext, old, rolled, err := e.manager.Roll(ctx, cliActor, id, grace)
	var already *keystore.AlreadyRolledError
	if errors.As(err, &already) {
		return rolledKeyRecord{}, err // names the successor, as the admin API does
	}
	if errors.Is(err, keystore.ErrConflict) {
		return rolledKeyRecord{}, fmt.Errorf("only an active key can be rolled: %w", err)
	}
	if rolled == nil {
		return rolledKeyRecord{}, notFound(err, id)
	}
	now := time.Now()
	return rolledKeyRecord{CreatedKey: createdKeyRecord{Plaintext: plaintext, Key: api.NewKey(rolled, now)}, Previous: api.NewKey(old, now)},
		unconfirmed(err, "odin keys revoke "+old.ID+" (revokes the previous key at once)")
}

// RevokeSession implements keyAdmin. A revocation not confirmed on every
// replica is returned with an *unconfirmedError.
func (e *keysEnv) RevokeSession(ctx context.Context, sid, reason string) (keystore.RevokedSession, error) {
	r, err := e.manager.RevokeSession(ctx, cliActor, sid, reason)
	if r.SessionID == "" {
		return r, err
	}
	return r, unconfirmed(err, "odin sessions revoke "+sid)
}

// ownerIDs maps --owner to user and organisation: ids that start with org_
// are organisations (Clerk's convention), anything else a user.
func ownerIDs(owner, org string) (userID, orgID string) {
	if strings.HasPrefix(owner, "org_") {
		return "", owner
	}
	return owner, org
}

// keysCreateConfig is what odin keys create's flags set.
type keysCreateConfig struct {
	backend                backendFlags
	name, tier, owner, org string
	scopes                 []string
	expiresIn              time.Duration
	rateLimit              string
	allowedCIDRs           []string
	json                   bool
}

// keysCreateFlagSet defines odin keys create's flags, writing to c.
func keysCreateFlagSet(c *keysCreateConfig) *flags {
	f := newFlags("keys create", "Issue an API key. The key is printed alone on stdout, once; only its hash is stored.")
	c.backend.bind(f)
	c.backend.bindMaxKeyLifetime(f)
	f.String(&c.name, "name", "", "", "descriptive name, e.g. \"GitHub Actions - Production\" (required)")
	f.List(&c.scopes, "scopes", "", "scopes, e.g. scans:read,scans:write")
	f.String(&c.tier, "tier", "", "", "subscription tier (default "+keystore.DefaultTier+"; over the admin API with a session token, your own)")
	f.String(&c.owner, "owner", "", "", "owning user id (user_...) or organisation id (org_...) (required, except over the admin API with a session token: you)")
	f.String(&c.org, "org", "", "", "organisation the key belongs to, when --owner is a user")
	f.Duration(&c.expiresIn, "expires-in", "", 0, "lifetime, e.g. 720h; 0: never expires (under a maximum key lifetime: the maximum)")
	f.String(&c.rateLimit, "rate-limit", "", "", rateLimitUsage+" (operator only)")
	f.List(&c.allowedCIDRs, "allowed-cidrs", "", allowedCIDRsUsage+"; absent: any network")
	f.Bool(&c.json, "json", "", false, "print the record with the key as JSON")
	return f
}

func keysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keysCreateConfig
	f, err := parseFlags(&c, keysCreateFlagSet, args, stderr)
	if err != nil {
		return err
	}
	bf, name, tier, owner, org, scopes, expiresIn, asJSON := c.backend, c.name, c.tier, c.owner, c.org, c.scopes, c.expiresIn, c.json
	if err := f.noArgs(); err != nil {
		return err
	}
	if expiresIn < 0 {
		return errors.New("keys create: --expires-in must not be negative")
	}
	req := createKeyRequest{Name: name, Scopes: scopes, Tier: tier}
	req.UserID, req.OrgID = ownerIDs(owner, org)
	if expiresIn > 0 {
		req.ExpiresAt = ptr(time.Now().Add(expiresIn).UTC())
	}
	if c.rateLimit != "" {
		if req.RateLimit, err = parseRateLimit(c.rateLimit); err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
	}
	if f.isSet("allowed-cidrs") {
		if req.AllowedCIDRs, err = parseAllowedCIDRs(c.allowedCIDRs); err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
	}
	ka, err := bf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	created, err := ka.CreateKey(ctx, req)
	if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	return printResult(stdout, asJSON, created, "%s\n", created.Plaintext)
}

// keysListConfig is what odin keys list's flags set.
type keysListConfig struct {
	backend        backendFlags
	owner, revoked string
	unusedFor      string
	limit          int
	cursor         string
	json           bool
}

// keysListFlagSet defines odin keys list's flags, writing to c.
func keysListFlagSet(c *keysListConfig) *flags {
	f := newFlags("keys list", "List keys, newest first, by hint (never the key).")
	c.backend.bind(f)
	f.String(&c.owner, "owner", "", "", "only keys of this user (user_...) or organisation (org_...); over the admin API with a session token: me (default) or org")
	f.String(&c.revoked, "revoked", "", "all", "all, yes (revoked only) or no (active only)")
	f.String(&c.unusedFor, "unused-for", "", "", "only keys unused for at least this long, e.g. 90d or 36h: last used longer ago, or never used and created longer ago (last use is recorded up to odin authz's --usage-interval late)")
	f.Int(&c.limit, "limit", "", 50, "page size, 1 to 1000")
	f.String(&c.cursor, "cursor", "", "", "next-page cursor printed by the previous page")
	f.Bool(&c.json, "json", "", false, "print JSON")
	return f
}

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keysListConfig
	f, err := parseFlags(&c, keysListFlagSet, args, stderr)
	if err != nil {
		return err
	}
	bf, owner, revoked, asJSON := c.backend, c.owner, c.revoked, c.json
	q := listKeysQuery{limit: c.limit, cursor: c.cursor}
	if err := f.noArgs(); err != nil {
		return err
	}
	switch owner {
	case "me", "org":
		q.owner = owner
	default:
		q.userID, q.orgID = ownerIDs(owner, "")
	}
	switch revoked {
	case "all":
	case "yes", "true":
		q.revoked = ptr(true)
	case "no", "false":
		q.revoked = ptr(false)
	default:
		return fmt.Errorf("keys list: --revoked %q: want all, yes or no", revoked)
	}
	if q.limit < 1 || q.limit > 1000 {
		return errors.New("keys list: --limit must be between 1 and 1000")
	}
	if c.unusedFor != "" {
		if q.unusedFor, err = keystore.ParseAge(c.unusedFor); err != nil {
			return fmt.Errorf("keys list: --unused-for: %w", err)
		}
	}
	ka, err := bf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	page, err := ka.ListKeys(ctx, q)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	if asJSON {
		return writeJSON(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHINT\tOWNER\tSCOPES\tTIER\tRATE LIMIT\tNETWORKS\tCREATED\tEXPIRES\tLAST USED\tCHECKS 24H\tCHECKS 30D\tSTATE")
	now := time.Now()
	for _, k := range page.Keys {
		var t keystore.UsageTotals
		if k.UsageTotals != nil {
			t = *k.UsageTotals
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", k.ID, k.Name, k.Hint, k.Owner(),
			strings.Join(k.Scopes, ","), k.Tier, rateLimitString(k.RateLimit), networksString(k.AllowedCIDRs), k.CreatedAt.Format(time.RFC3339), orDash(k.ExpiresAt), orDash(k.LastUsedAt),
			t.Last24h, t.Last30d, keyState(k, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(stderr, "more: odin keys list --cursor %s\n", page.NextCursor)
	}
	return nil
}

// keyState is active, revoked, expired or disabled.
func keyState(k api.Key, now time.Time) string {
	if err := k.Usable(now); err != nil {
		return strings.TrimPrefix(err.Error(), "key ")
	}
	return "active"
}

// parseKeyID parses the flags of a subcommand that takes one key id into
// c, its flag set defined by flagSet, and returns the id.
func parseKeyID[C any](c *C, flagSet func(*C) *flags, args []string, stderr io.Writer) (string, error) {
	f, err := parseFlags(c, flagSet, args, stderr)
	if err != nil {
		return "", err
	}
	if len(f.positional) != 1 {
		return "", fmt.Errorf("%s: exactly one key id is required", f.Name())
	}
	return f.positional[0], nil
}

// openKeyID parses the flags of odin keys get or revoke into c, its flag
// set defined by flagSet, and opens the backend they name.
func openKeyID(ctx context.Context, c *keyIDConfig, flagSet func(*keyIDConfig) *flags, args []string, stderr io.Writer) (string, keyAdmin, error) {
	id, err := parseKeyID(c, flagSet, args, stderr)
	if err != nil {
		return "", nil, err
	}
	ka, err := c.backend.open(ctx, stderr)
	if err != nil {
		return "", nil, err
	}
	return id, ka, nil
}

// keyIDConfig is what the flags of odin keys get and odin keys revoke set.
type keyIDConfig struct {
	backend backendFlags
	json    bool
}

// keysGetFlagSet defines odin keys get's flags, writing to c.
func keysGetFlagSet(c *keyIDConfig) *flags {
	f := newFlags("keys get", "Show a key by id (key_...): its record by hint, never the key, and its checks per hour over the last 7 days.")
	c.backend.bind(f)
	f.Bool(&c.json, "json", "", false, "print the record with its usage as JSON")
	return f
}

func keysGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keyIDConfig
	id, ka, err := openKeyID(ctx, &c, keysGetFlagSet, args, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	k, err := ka.Key(ctx, id)
	if err != nil {
		return fmt.Errorf("keys get: %w", err)
	}
	if c.json {
		return writeJSON(stdout, k)
	}
	return printKey(stdout, k, time.Now())
}

// printKey shows a key and its usage for a person.
func printKey(w io.Writer, k keyRecord, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"id", k.ID}, {"name", k.Name}, {"hint", k.Hint}, {"user", orDashString(k.UserID)}, {"org", orDashString(k.OrgID)},
		{"scopes", orDashString(strings.Join(k.Scopes, ","))}, {"tier", k.Tier}, {"rate limit", rateLimitString(k.RateLimit)},
		{"networks", networksString(k.AllowedCIDRs)},
		{"state", keyState(k.Key, now)},
		{"created", k.CreatedAt.Format(time.RFC3339)}, {"expires", orDash(k.ExpiresAt)}, {"revoked", orDash(k.RevokedAt)},
		{"disabled", orDash(k.DisabledAt)},
		{"last used", orDash(k.LastUsedAt)}, {"checks, 24 hours", usageTotal(k.UsageTotals, false)},
		{"checks, 30 days", usageTotal(k.UsageTotals, true)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	if len(k.Usage) == 0 {
		fmt.Fprintln(tw, "\nno checks in the last 7 days")
		return tw.Flush()
	}
	var total int64
	fmt.Fprintln(tw, "\nHOUR (UTC)\tCHECKS")
	for _, u := range k.Usage {
		fmt.Fprintf(tw, "%s\t%d\n", u.Hour.UTC().Format("2006-01-02 15:00"), u.Count)
		total += u.Count
	}
	fmt.Fprintf(tw, "total\t%d\n", total)
	return tw.Flush()
}

// usageTotal is one of the totals (30 days, else 24 hours), or - when the
// answer had none.
func usageTotal(t *keystore.UsageTotals, month bool) string {
	switch {
	case t == nil:
		return "-"
	case month:
		return strconv.FormatInt(t.Last30d, 10)
	default:
		return strconv.FormatInt(t.Last24h, 10)
	}
}

// keysRollConfig is what odin keys roll's flags set.
type keysRollConfig struct {
	backend backendFlags
	grace   time.Duration
	json    bool
}

// keysRollFlagSet defines odin keys roll's flags, writing to c.
func keysRollFlagSet(c *keysRollConfig) *flags {
	f := newFlags("keys roll", "Replace a key (key_...) with a new one of the same name, owner, scopes, tier and expiry.\nThe new key is printed alone on stdout, once; the old one keeps working for --grace.\nA key is rolled once: rolling it again during its grace period is refused, naming its successor.")
	c.backend.bind(f)
	c.backend.bindMaxKeyLifetime(f)
	f.Duration(&c.grace, "grace", "", 0, "how long the old key keeps working, whole seconds up to "+formatDuration(keystore.MaxRollGrace)+"; 0: it stops at once")
	f.Bool(&c.json, "json", "", false, "print the new record with the key, and the old record, as JSON")
	return f
}

func keysRoll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keysRollConfig
	id, err := parseKeyID(&c, keysRollFlagSet, args, stderr)
	if err != nil {
		return err
	}
	bf, grace, asJSON := c.backend, c.grace, c.json
	if grace < 0 || grace > keystore.MaxRollGrace || grace%time.Second != 0 {
		return fmt.Errorf("keys roll: --grace %s: want whole seconds from 0 to %s", grace, keystore.MaxRollGrace)
	}
	ka, err := bf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	r, err := ka.RollKey(ctx, id, grace)
	ue, err := committed("keys roll", err)
	if err != nil {
		return err
	}
	// Unconfirmed or not, the new key exists and is shown here only.
	if !asJSON {
		fmt.Fprintf(stderr, "rolled %s into %s; the old key (%s) stops working at %s and cannot be rolled again\n", r.Previous.ID, r.ID, r.Previous.Hint, orDash(r.Previous.ExpiresAt))
	}
	err = printResult(stdout, asJSON, r, "%s\n", r.Plaintext)
	if ue != nil {
		return fmt.Errorf("keys roll: %s rolled into %s, but the old key's new expiry is %w", r.Previous.ID, r.ID, ue)
	}
	return err
}

// keysRevokeFlagSet defines odin keys revoke's flags, writing to c.
func keysRevokeFlagSet(c *keyIDConfig) *flags {
	f := newFlags("keys revoke", "Revoke a key by id (key_...). It stops working at once on every replica.")
	c.backend.bind(f)
	f.Bool(&c.json, "json", "", false, "print the revoked record as JSON")
	return f
}

func keysRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c keyIDConfig
	id, ka, err := openKeyID(ctx, &c, keysRevokeFlagSet, args, stderr)
	if err != nil {
		return err
	}
	defer ka.Close()
	k, err := ka.RevokeKey(ctx, id)
	ue, err := committed("keys revoke", err)
	if err != nil {
		return err
	}
	err = printResult(stdout, c.json, k, "revoked %s (%s) at %s\n", k.ID, k.Hint, k.RevokedAt.Format(time.RFC3339))
	if ue != nil {
		return fmt.Errorf("keys revoke: %s is revoked but %w", k.ID, ue)
	}
	return err
}

// printResult prints v as JSON, or else the text format and args make.
func printResult(w io.Writer, asJSON bool, v any, format string, args ...any) error {
	if asJSON {
		return writeJSON(w, v)
	}
	_, err := fmt.Fprintf(w, format, args...)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func orDashString(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ptr[T any](v T) *T { return &v }

// cliActor is the audit log's name for changes made with this CLI on the
// database directly; through the admin API, the API names the caller.
var cliActor = keystore.Actor{ID: "operator:cli"}

// unconfirmedError is a change that narrows what a credential may do
// (revoke, roll, session revoke), committed but not confirmed on every
// replica: keystore.NotPropagatedError, or the admin API's 503 with
// "committed": true. The command prints its result as on success, then
// exits 3 with this message.
type unconfirmedError struct {
	deniedBy time.Time
	retry    string // what propagates it again
}

func (e *unconfirmedError) Error() string {
	return fmt.Sprintf("not confirmed on every replica: it may still be accepted until %s; to propagate it again: %s",
		e.deniedBy.UTC().Format(time.RFC3339), e.retry)
}

// ExitCode is 3: committed, not confirmed (1 is any other failure).
func (e *unconfirmedError) ExitCode() int { return 3 }

// Unwrap makes it a keystore.ErrNotPropagated.
func (e *unconfirmedError) Unwrap() error { return keystore.ErrNotPropagated }

// committed splits the error of a narrowing change: an *unconfirmedError,
// whose change stands and whose result the command prints, or a failure,
// returned with the command's name.
func committed(command string, err error) (*unconfirmedError, error) {
	var ue *unconfirmedError
	if err != nil && !errors.As(err, &ue) {
		return nil, fmt.Errorf("%s: %w", command, err)
	}
	return ue, nil
}

// unconfirmed turns a keystore.NotPropagatedError into an unconfirmedError
// with the command that propagates again; other errors are returned as they
// are.
func unconfirmed(err error, retry string) error {
	var np *keystore.NotPropagatedError
	if errors.As(err, &np) {
		return &unconfirmedError{deniedBy: np.DeniedBy, retry: retry}
	}
	return err
}
