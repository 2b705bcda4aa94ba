package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

const keysUsage = `Usage: odin keys <create|list|revoke> [flags]

  create --name N [--scopes a,b] [--tier T] --owner ID [--expires-in DUR] [--json]
         prints the new key alone on stdout (it is shown once, never again)
  list   [--owner ID] [--revoked all|yes|no] [--limit N] [--cursor C] [--json]
  revoke <id> [--json]
         revokes at once: PostgreSQL, then Redis, then every replica via the bus

Run 'odin keys <subcommand> -h' for every flag.
`

var errMissingDatabaseURL = errors.New("a database URL is required (--database-url or ODIN_DATABASE_URL)")

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return errors.New("keys: no subcommand given")
	}
	switch args[0] {
	case "create":
		return keysCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return keysList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return keysRevoke(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, keysUsage)
		return nil
	}
	fmt.Fprint(stderr, keysUsage)
	return fmt.Errorf("keys: unknown subcommand %q", args[0])
}

// keysEnv is what every keys subcommand opens.
type keysEnv struct {
	store   *pgstore.Store
	redis   *keystore.Redis
	manager *keystore.Manager
}

func (e *keysEnv) close() {
	if e.redis != nil {
		_ = e.redis.Close()
	}
	e.store.Close()
}

func openKeysEnv(ctx context.Context, sf storeFlags, stderr io.Writer) (*keysEnv, error) {
	if sf.databaseURL == "" {
		return nil, errMissingDatabaseURL
	}
	store, err := pgstore.Open(ctx, sf.databaseURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	e := &keysEnv{store: store}
	if sf.redisURL != "" {
		logger, _ := (&logOptions{level: "warn", format: "text"}).logger(stderr)
		e.redis, err = keystore.OpenRedis(keystore.RedisOptions{URL: sf.redisURL, Prefix: sf.redisPrefix}, keystore.NewMetrics(nil), logger)
		if err != nil {
			store.Close()
			return nil, err
		}
	}
	e.manager = keystore.NewManager(store, e.redis, keystore.ManagerOptions{CacheTTL: sf.cacheTTL, SessionRetention: sf.sessionRetention})
	return e, nil
}

// ownerIDs maps --owner to user and organisation: ids that start with org_
// are organisations (Clerk's convention), anything else a user.
func ownerIDs(owner, org string) (userID, orgID string) {
	if strings.HasPrefix(owner, "org_") {
		return "", owner
	}
	return owner, org
}

func keysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("keys create", "Issue an API key. The key is printed alone on stdout, once; only its hash is stored.")
	f.SetOutput(stderr)
	var (
		sf                     storeFlags
		name, tier, owner, org string
		scopes                 []string
		expiresIn              time.Duration
		asJSON                 bool
	)
	sf.bind(f)
	f.String(&name, "name", "", "", "descriptive name, e.g. \"GitHub Actions - Production\" (required)")
	f.List(&scopes, "scopes", "", "scopes, e.g. scans:read,scans:write")
	f.String(&tier, "tier", "", keystore.DefaultTier, "subscription tier")
	f.String(&owner, "owner", "", "", "owning user id (user_...) or organisation id (org_...) (required)")
	f.String(&org, "org", "", "", "organisation the key belongs to, when --owner is a user")
	f.Duration(&expiresIn, "expires-in", "", 0, "lifetime, e.g. 720h; 0: never expires")
	f.BoolVar(&asJSON, "json", false, "print the record with the key as JSON")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.positional) > 0 {
		return fmt.Errorf("keys create: unexpected argument %q", f.positional[0])
	}
	if expiresIn < 0 {
		return errors.New("keys create: --expires-in must not be negative")
	}
	env, err := openKeysEnv(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	n := keystore.NewKey{Name: name, Scopes: scopes, Tier: tier}
	n.UserID, n.OrgID = ownerIDs(owner, org)
	if expiresIn > 0 {
		n.ExpiresAt = time.Now().Add(expiresIn)
	}
	plaintext, k, err := env.manager.Create(ctx, cliActor, n)
	if errors.Is(err, keystore.ErrNotPropagated) {
		fmt.Fprintln(stderr, "odin: warning:", err)
	} else if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	if asJSON {
		return writeJSON(stdout, createdKey{Plaintext: plaintext, Key: k})
	}
	_, err = fmt.Fprintln(stdout, plaintext)
	return err
}

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("keys list", "List keys, newest first, by hint (never the key).")
	f.SetOutput(stderr)
	var (
		sf                     storeFlags
		owner, revoked, cursor string
		limit                  int
		asJSON                 bool
	)
	sf.bind(f)
	f.String(&owner, "owner", "", "", "only keys of this user (user_...) or organisation (org_...)")
	f.String(&revoked, "revoked", "", "all", "all, yes (revoked only) or no (active only)")
	f.Int(&limit, "limit", "", 50, "page size, 1 to 1000")
	f.String(&cursor, "cursor", "", "", "next-page cursor printed by the previous page")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	if err := f.parse(args); err != nil {
		return err
	}
	opts := keystore.ListKeysOptions{Limit: limit, Cursor: cursor}
	opts.UserID, opts.OrgID = ownerIDs(owner, "")
	switch revoked {
	case "all":
	case "yes", "true":
		opts.Revoked = ptr(true)
	case "no", "false":
		opts.Revoked = ptr(false)
	default:
		return fmt.Errorf("keys list: --revoked %q: want all, yes or no", revoked)
	}
	if limit < 1 || limit > 1000 {
		return errors.New("keys list: --limit must be between 1 and 1000")
	}
	env, err := openKeysEnv(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	keys, next, err := env.store.ListKeys(ctx, opts)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	if asJSON {
		return writeJSON(stdout, struct {
			Keys       []*keystore.Key `json:"keys"`
			NextCursor string          `json:"next_cursor,omitempty"`
		}{keys, next})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHINT\tOWNER\tSCOPES\tTIER\tCREATED\tEXPIRES\tSTATE")
	now := time.Now()
	for _, k := range keys {
		state := "active"
		if err := k.Usable(now); err != nil {
			state = strings.TrimPrefix(err.Error(), "key ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Hint, k.Owner(),
			strings.Join(k.Scopes, ","), k.Tier, k.CreatedAt.Format(time.RFC3339), orDash(k.ExpiresAt), state)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(stderr, "more: odin keys list --cursor %s\n", next)
	}
	return nil
}

func keysRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlags("keys revoke", "Revoke a key by id (key_...). It stops working at once on every replica.")
	f.SetOutput(stderr)
	var (
		sf     storeFlags
		asJSON bool
	)
	sf.bind(f)
	f.BoolVar(&asJSON, "json", false, "print the revoked record as JSON")
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.positional) != 1 {
		return errors.New("keys revoke: exactly one key id is required")
	}
	env, err := openKeysEnv(ctx, sf, stderr)
	if err != nil {
		return err
	}
	defer env.close()
	k, err := env.manager.Revoke(ctx, cliActor, f.positional[0])
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return fmt.Errorf("keys revoke: no key with id %q", f.positional[0])
	case errors.Is(err, keystore.ErrNotPropagated):
		fmt.Fprintf(stderr, "odin: warning: %v; replicas drop the key within --cache-ttl (%s)\n", err, sf.cacheTTL)
	case err != nil:
		return fmt.Errorf("keys revoke: %w", err)
	}
	if asJSON {
		return writeJSON(stdout, k)
	}
	_, err = fmt.Fprintf(stdout, "revoked %s (%s) at %s\n", k.ID, k.Hint, k.RevokedAt.Format(time.RFC3339))
	return err
}

// createdKey is the --json form of a new key: the record and, this once,
// the key itself.
type createdKey struct {
	Plaintext string `json:"key"`
	*keystore.Key
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

func ptr[T any](v T) *T { return &v }

// cliActor is the audit log's name for changes made with this CLI on the
// database directly.
var cliActor = keystore.Actor{ID: "operator:cli"}
