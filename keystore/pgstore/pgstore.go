// Package pgstore is the PostgreSQL implementation of keystore.Store, the
// source of truth for keys. Its schema is managed by goose migrations
// embedded in the binary and applied by `odin migrate`.
package pgstore

import (
	"context"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a keystore.Store on a pgx connection pool, with an optional
// second pool on a read replica for KeyByHash (see replica.go).
type Store struct {
	pool *pgxpool.Pool
	rep  *replica // nil without a read replica
	// schemaCurrent is set once CheckSchema saw every migration applied.
	schemaCurrent atomic.Bool
}

var _ keystore.Store = (*Store)(nil)

// Options tune the pool. Zero values take the defaults.
type Options struct {
	MaxConns       int32         // default 16, per pool
	ConnectTimeout time.Duration // default 2s
	// ReadURL, when set, is a read replica (a hot standby streaming from the
	// primary) for KeyByHash, the hot path, whenever Watermark says it is
	// current enough; everything else reads and writes the primary.
	ReadURL string
	// Watermark decides when the read replica may answer; required with
	// ReadURL.
	Watermark *keystore.Watermark
}

// Open creates a pool for the URL. It does not wait for the server: a store
// that is down at start is an outage to ride out, not a reason to exit.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := poolConfig(url, opts)
	if err != nil {
		return nil, errors.New("parse database url: invalid PostgreSQL connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	s := &Store{pool: pool}
	if opts.ReadURL != "" {
		if s.rep, err = openReplica(ctx, opts); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return s, nil
}

// poolConfig parses a URL into a pool configuration with opts applied.
// pgx errors can echo the URL, password included: callers say only what
// failed.
func poolConfig(url string, opts Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	} else if cfg.MaxConns < 16 {
		cfg.MaxConns = 16
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 2 * time.Second
	}
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > opts.ConnectTimeout {
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	}
	cfg.HealthCheckPeriod = 10 * time.Second
	return cfg, nil
}

// Close closes the pools.
func (s *Store) Close() {
	s.pool.Close()
	if s.rep != nil {
		s.rep.pool.Close()
	}
}

// Pool exposes the pool to packages that keep their own tables beside keys.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Migrate applies every pending migration. Concurrent runs (two replicas
// starting at once) are serialised by a PostgreSQL advisory lock.
func (s *Store) Migrate(ctx context.Context, logger *slog.Logger) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, r := range results {
		logger.Info("migration applied", "version", r.Source.Version, "path", r.Source.Path, "duration", r.Duration)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: read version: %w", err)
	}
	logger.Info("database schema up to date", "version", v, "applied", len(results))
	return nil
}

const keyColumns = `id, user_id, org_id, name, key_hash, hint, scopes, tier, created_at, expires_at, revoked_at, last_used_at, replaced_by, disabled_at, rate_limit_rate, rate_limit_burst, allowed_cidrs`

func scanKey(row pgx.Row) (*keystore.Key, error) {
	var (
		k                                    keystore.Key
		hash                                 []byte
		expires, revoked, lastUsed, disabled pgtype.Timestamptz
		rlRate                               *float64
		rlBurst                              *int32
	)
	err := row.Scan(&k.ID, &k.UserID, &k.OrgID, &k.Name, &hash, &k.Hint, &k.Scopes, &k.Tier,
		&k.CreatedAt, &expires, &revoked, &lastUsed, &k.ReplacedBy, &disabled, &rlRate, &rlBurst, &k.AllowedCIDRs)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keystore.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if len(hash) != len(k.Hash) {
		return nil, fmt.Errorf("key %s: stored hash has %d bytes", k.ID, len(hash))
	}
	copy(k.Hash[:], hash)
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt, k.DisabledAt = tsValue(expires), tsValue(revoked), tsValue(lastUsed), tsValue(disabled)
	k.CreatedAt = k.CreatedAt.UTC()
	if rlRate != nil && rlBurst != nil {
		k.RateLimit = &keystore.RateLimit{Rate: *rlRate, Burst: int(*rlBurst)}
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	return &k, nil
}

func tsValue(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}

func tsArg(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// KeyByHash implements keystore.Store. With a read replica it may answer
// from the replica (see keyByHashRouted).
func (s *Store) KeyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	if s.rep != nil {
		return s.keyByHashRouted(ctx, h)
	}
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, h[:]))
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("look up key by hash: %w", err)
	}
	return k, err
}

// KeyHashes implements keystore.Store: one SELECT on the primary (a single
// statement reads one snapshot), each row's bytes read in place; a bounded
// since scans the created_at index.
func (s *Store) KeyHashes(ctx context.Context, since time.Time, fn func(keystore.Hash) error) error {
	q, args := `SELECT key_hash FROM api_keys`, []any{}
	if !since.IsZero() { // its own statement: a generic plan must still use the index
		q, args = q+` WHERE created_at >= $1`, []any{since}
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read key hashes: %w", err)
	}
	defer rows.Close()
	var h keystore.Hash
	for rows.Next() {
		raw := rows.RawValues()[0] // bytea in binary format: the hash itself
		if len(raw) != len(h) {
			return fmt.Errorf("read key hashes: a stored hash has %d bytes", len(raw))
		}
		copy(h[:], raw)
		if err := fn(h); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read key hashes: %w", err)
	}
	return nil
}

// Key implements keystore.Store.
func (s *Store) Key(ctx context.Context, id string) (*keystore.Key, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, id))
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("read key %s: %w", id, err)
	}
	return k, err
}

// CreateKey implements keystore.Store.
func (s *Store) CreateKey(ctx context.Context, n keystore.NewKey, h keystore.Hash, hint string, ev *keystore.AuditEvent) (*keystore.Key, error) {
	if err := n.Validate(time.Now()); err != nil {
		return nil, err
	}
	var k *keystore.Key
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		k, err = insertKey(ctx, tx, n, h, hint)
		if err != nil {
			return err
		}
		return appendAuditAndEvent(ctx, tx, ev, k.ID, k.Owner())
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return nil, fmt.Errorf("create key: %w: duplicate key", keystore.ErrInvalid)
		}
		return nil, fmt.Errorf("create key: %w", err)
	}
	return k, nil
}

func insertKey(ctx context.Context, tx pgx.Tx, n keystore.NewKey, h keystore.Hash, hint string) (*keystore.Key, error) {
	id, err := keystore.NewKeyID()
	if err != nil {
		return nil, err
	}
	return scanKey(tx.QueryRow(ctx, `
		INSERT INTO api_keys (id, user_id, org_id, name, key_hash, hint, scopes, tier, expires_at, rate_limit_rate, rate_limit_burst, allowed_cidrs)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		RETURNING `+keyColumns,
		id, n.UserID, n.OrgID, n.Name, h[:], hint, n.Scopes, n.Tier, tsArg(n.ExpiresAt), rateArg(n.RateLimit), burstArg(n.RateLimit),
		cidrsArg(n.AllowedCIDRs)))
}

// UpdateKey implements keystore.Store: the row lock (FOR UPDATE)
// serialises changes of one key.
func (s *Store) UpdateKey(ctx context.Context, id string, fn func(context.Context, keystore.KeyTx, *keystore.Key) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		return fn(ctx, keyTx{tx: tx, id: id}, cur)
	})
}

// keyTx is the keystore.KeyTx of UpdateKey: key id is locked in tx.
type keyTx struct {
	tx pgx.Tx
	id string
}

func (t keyTx) InsertKey(ctx context.Context, n keystore.NewKey, h keystore.Hash, hint string) (*keystore.Key, error) {
	return insertKey(ctx, t.tx, n, h, hint)
}

func (t keyTx) ReplaceKey(ctx context.Context, expiresAt time.Time, successor string) (*keystore.Key, error) {
	return scanKey(t.tx.QueryRow(ctx, `
		UPDATE api_keys SET expires_at = $2, replaced_by = $3
		WHERE id = $1 RETURNING `+keyColumns, t.id, expiresAt, successor))
}

func (t keyTx) SetRevokedAt(ctx context.Context, at time.Time) (*keystore.Key, error) {
	return scanKey(t.tx.QueryRow(ctx, `
		UPDATE api_keys SET revoked_at = $2
		WHERE id = $1 RETURNING `+keyColumns, t.id, at))
}

func (t keyTx) SetState(ctx context.Context, st keystore.KeyState) (*keystore.Key, error) {
	scopes := st.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return scanKey(t.tx.QueryRow(ctx, `
		UPDATE api_keys SET name = $2, scopes = $3, tier = $4, expires_at = $5, disabled_at = $6,
			rate_limit_rate = $7, rate_limit_burst = $8, allowed_cidrs = $9
		WHERE id = $1 RETURNING `+keyColumns, t.id, st.Name, scopes, st.Tier, tsArg(st.ExpiresAt), tsArg(st.DisabledAt),
		rateArg(st.RateLimit), burstArg(st.RateLimit), cidrsArg(st.AllowedCIDRs)))
}

func (t keyTx) AppendAudit(ctx context.Context, ev *keystore.AuditEvent, target, owner string) error {
	return appendAuditAndEvent(ctx, t.tx, ev, target, owner)
}

// RecordUsage implements keystore.Store with two statements for the batch.
func (s *Store) RecordUsage(ctx context.Context, batch []keystore.Usage) error {
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, len(batch))
	hours := make([]time.Time, len(batch))
	counts := make([]int64, len(batch))
	last := make([]time.Time, len(batch))
	for i, u := range batch {
		ids[i], hours[i], counts[i], last[i] = u.KeyID, u.Hour, u.Count, u.LastUsed
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO key_usage_hourly (key_id, hour, count)
			SELECT u.id, u.hour, SUM(u.n) FROM unnest($1::text[], $2::timestamptz[], $3::bigint[]) AS u(id, hour, n)
			WHERE EXISTS (SELECT 1 FROM api_keys k WHERE k.id = u.id)
			GROUP BY u.id, u.hour
			ON CONFLICT (key_id, hour) DO UPDATE SET count = key_usage_hourly.count + EXCLUDED.count`,
			ids, hours, counts); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			UPDATE api_keys AS k SET last_used_at = u.t
			FROM (SELECT id, MAX(t) AS t FROM unnest($1::text[], $2::timestamptz[]) AS x(id, t) GROUP BY id) AS u
			WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)`, ids, last)
		return err
	})
	if err != nil {
		return fmt.Errorf("record key usage: %w", err)
	}
	return nil
}

// KeyUsage implements keystore.Store.
func (s *Store) KeyUsage(ctx context.Context, id string, since time.Time) ([]keystore.HourlyUsage, error) {
	rows, err := s.pool.Query(ctx, `SELECT hour, count FROM key_usage_hourly WHERE key_id = $1 AND hour >= $2 ORDER BY hour`, id, since)
	if err != nil {
		return nil, fmt.Errorf("read key usage: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.HourlyUsage, error) {
		var u keystore.HourlyUsage
		err := row.Scan(&u.Hour, &u.Count)
		u.Hour = u.Hour.UTC()
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("read key usage: %w", err)
	}
	return out, nil
}

// KeyUsageTotals implements keystore.Store: one aggregate over the
// (key_id, hour) primary key.
func (s *Store) KeyUsageTotals(ctx context.Context, ids []string, now time.Time) (map[string]keystore.UsageTotals, error) {
	if len(ids) == 0 {
		return map[string]keystore.UsageTotals{}, nil
	}
	q, args := keysql.UsageTotals(dialect, ids, now)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read key usage totals: %w", err)
	}
	defer rows.Close()
	out, err := keysql.ReadUsageTotals(rows, len(ids))
	if err != nil {
		return nil, fmt.Errorf("read key usage totals: %w", err)
	}
	return out, nil
}

// ListKeys implements keystore.Store with keyset pagination on
// (created_at, id), newest first.
func (s *Store) ListKeys(ctx context.Context, opts keystore.ListKeysOptions) ([]*keystore.Key, string, error) {
	limit := keystore.PageLimit(opts.Limit)
	var after []any
	if opts.Cursor != "" {
		at, id, err := decodeCursor(opts.Cursor)
		if err != nil {
			return nil, "", err
		}
		after = []any{at, id}
	}
	q, args := keysql.ListKeys(dialect, keyColumns, opts, after, limit)
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	keys, err := keysql.AppendRows(make([]*keystore.Key, 0, limit), rows, func() (*keystore.Key, error) { return scanKey(rows) })
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	keys, next := keysql.Page(keys, limit, func(k *keystore.Key) string { return encodeCursor(k.CreatedAt, k.ID) })
	return keys, next, nil
}

// Ping implements keystore.Store: the database answers and its schema is
// the one this binary needs (a reachable but unmigrated database cannot
// answer a single check, so it is not healthy).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return s.CheckSchema(ctx)
}

// dialect is how this store writes keysql's query arguments.
var dialect = keysql.Dialect{
	Placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	Time:        func(t time.Time) any { return t },
}

func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	bad := fmt.Errorf("%w: cursor: not a cursor returned by this API", keystore.ErrInvalid)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", bad
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return time.Time{}, "", bad
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, "", bad
	}
	return at, id, nil
}

// rateArg and burstArg are a key's own rate limit as column values (NULL:
// its tier's).
// cidrsArg is a key's allowlist as a column value: NULL for any network.
func cidrsArg(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

func rateArg(r *keystore.RateLimit) *float64 {
	if r == nil {
		return nil
	}
	return &r.Rate
}

func burstArg(r *keystore.RateLimit) *int32 {
	if r == nil {
		return nil
	}
	b := int32(r.Burst) // validated: at most keystore.MaxRateLimitBurst
	return &b
}
