package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

const keyColumns = `id, user_id, org_id, name, key_hash, hint, scopes, tier, created_at, expires_at, revoked_at, last_used_at, replaced_by, disabled_at, rate_limit_rate, rate_limit_burst, allowed_cidrs`

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner) (*keystore.Key, error) {
	var (
		k                          keystore.Key
		hash                       []byte
		scopes                     string
		created                    int64
		expires, revoked, lastUsed sql.NullInt64
		disabled                   sql.NullInt64
		rlRate                     sql.NullFloat64
		rlBurst                    sql.NullInt64
		cidrs                      sql.NullString
	)
	err := row.Scan(&k.ID, &k.UserID, &k.OrgID, &k.Name, &hash, &k.Hint, &scopes, &k.Tier,
		&created, &expires, &revoked, &lastUsed, &k.ReplacedBy, &disabled, &rlRate, &rlBurst, &cidrs)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keystore.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if len(hash) != len(k.Hash) {
		return nil, fmt.Errorf("key %s: stored hash has %d bytes", k.ID, len(hash))
	}
	copy(k.Hash[:], hash)
	if err := json.Unmarshal([]byte(scopes), &k.Scopes); err != nil {
		return nil, fmt.Errorf("key %s: stored scopes: %w", k.ID, err)
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	k.CreatedAt = fromMicros(created)
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt = fromNullMicros(expires), fromNullMicros(revoked), fromNullMicros(lastUsed)
	k.DisabledAt = fromNullMicros(disabled)
	if rlRate.Valid && rlBurst.Valid {
		k.RateLimit = &keystore.RateLimit{Rate: rlRate.Float64, Burst: int(rlBurst.Int64)}
	}
	if cidrs.Valid {
		if err := json.Unmarshal([]byte(cidrs.String), &k.AllowedCIDRs); err != nil {
			return nil, fmt.Errorf("key %s: stored allowed_cidrs: %w", k.ID, err)
		}
		if len(k.AllowedCIDRs) == 0 {
			k.AllowedCIDRs = nil
		}
	}
	return &k, nil
}

// KeyByHash implements keystore.Store.
func (s *Store) KeyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	k, err := scanKey(s.reader.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE key_hash = ?`, h[:]))
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("look up key by hash: %w", err)
	}
	return k, err
}

// KeyHashes implements keystore.Store: one SELECT (one read transaction,
// so one snapshot), each row's bytes read in place.
func (s *Store) KeyHashes(ctx context.Context, since time.Time, fn func(keystore.Hash) error) error {
	q, args := `SELECT key_hash FROM api_keys`, []any{}
	if !since.IsZero() {
		q, args = q+` WHERE created_at >= ?`, []any{micros(since)}
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read key hashes: %w", err)
	}
	defer rows.Close()
	var (
		h   keystore.Hash
		raw sql.RawBytes
	)
	for rows.Next() {
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("read key hashes: %w", err)
		}
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
	k, err := scanKey(s.reader.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if k, err = insertKey(ctx, tx, n, h, hint); err != nil {
			return err
		}
		return appendAuditAndEvent(ctx, tx, ev, k.ID, k.Owner())
	})
	if err != nil {
		if isUniqueViolation(err) {
			return nil, fmt.Errorf("create key: %w: duplicate key", keystore.ErrInvalid)
		}
		return nil, fmt.Errorf("create key: %w", err)
	}
	return k, nil
}

func insertKey(ctx context.Context, tx *sql.Tx, n keystore.NewKey, h keystore.Hash, hint string) (*keystore.Key, error) {
	id, err := keystore.NewKeyID()
	if err != nil {
		return nil, err
	}
	scopes, err := json.Marshal(n.Scopes)
	if err != nil {
		return nil, err
	}
	if n.Scopes == nil {
		scopes = []byte("[]")
	}
	return scanKey(tx.QueryRowContext(ctx, `
		INSERT INTO api_keys (id, user_id, org_id, name, key_hash, hint, scopes, tier, created_at, expires_at, rate_limit_rate, rate_limit_burst, allowed_cidrs)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		RETURNING `+keyColumns,
		id, n.UserID, n.OrgID, n.Name, h[:], hint, string(scopes), n.Tier, micros(timestamp()), nullMicros(n.ExpiresAt),
		rateArg(n.RateLimit), burstArg(n.RateLimit), cidrsArg(n.AllowedCIDRs)))
}

// UpdateKey implements keystore.Store: the write transaction (BEGIN
// IMMEDIATE) serialises changes of one key.
func (s *Store) UpdateKey(ctx context.Context, id string, fn func(context.Context, keystore.KeyTx, *keystore.Key) error) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		cur, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, id))
		if err != nil {
			return err
		}
		return fn(ctx, keyTx{tx: tx, id: id}, cur)
	})
}

// keyTx is the keystore.KeyTx of UpdateKey: tx holds the write lock.
type keyTx struct {
	tx *sql.Tx
	id string
}

func (t keyTx) InsertKey(ctx context.Context, n keystore.NewKey, h keystore.Hash, hint string) (*keystore.Key, error) {
	return insertKey(ctx, t.tx, n, h, hint)
}

func (t keyTx) ReplaceKey(ctx context.Context, expiresAt time.Time, successor string) (*keystore.Key, error) {
	return scanKey(t.tx.QueryRowContext(ctx, `
		UPDATE api_keys SET expires_at = ?, replaced_by = ?
		WHERE id = ? RETURNING `+keyColumns, micros(expiresAt), successor, t.id))
}

func (t keyTx) SetRevokedAt(ctx context.Context, at time.Time) (*keystore.Key, error) {
	return scanKey(t.tx.QueryRowContext(ctx, `
		UPDATE api_keys SET revoked_at = ?
		WHERE id = ? RETURNING `+keyColumns, micros(at), t.id))
}

func (t keyTx) SetState(ctx context.Context, st keystore.KeyState) (*keystore.Key, error) {
	scopes, err := json.Marshal(st.Scopes)
	if err != nil {
		return nil, err
	}
	if st.Scopes == nil {
		scopes = []byte("[]")
	}
	return scanKey(t.tx.QueryRowContext(ctx, `
		UPDATE api_keys SET name = ?, scopes = ?, tier = ?, expires_at = ?, disabled_at = ?,
			rate_limit_rate = ?, rate_limit_burst = ?, allowed_cidrs = ?
		WHERE id = ? RETURNING `+keyColumns, st.Name, string(scopes), st.Tier, nullMicros(st.ExpiresAt), nullMicros(st.DisabledAt),
		rateArg(st.RateLimit), burstArg(st.RateLimit), cidrsArg(st.AllowedCIDRs), t.id))
}

func (t keyTx) AppendAudit(ctx context.Context, ev *keystore.AuditEvent, target, owner string) error {
	return appendAuditAndEvent(ctx, t.tx, ev, target, owner)
}

// RecordUsage implements keystore.Store: one transaction for the batch.
// Counts of keys that no longer exist are skipped, and last_used_at only
// moves forward.
func (s *Store) RecordUsage(ctx context.Context, batch []keystore.Usage) error {
	if len(batch) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		count, err := tx.PrepareContext(ctx, `
			INSERT INTO key_usage_hourly (key_id, hour, count)
			SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1)
			ON CONFLICT (key_id, hour) DO UPDATE SET count = key_usage_hourly.count + excluded.count`)
		if err != nil {
			return err
		}
		defer count.Close()
		last, err := tx.PrepareContext(ctx, `
			UPDATE api_keys SET last_used_at = ?2
			WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)`)
		if err != nil {
			return err
		}
		defer last.Close()
		for _, u := range batch {
			if _, err := count.ExecContext(ctx, u.KeyID, micros(u.Hour), u.Count); err != nil {
				return err
			}
			if u.LastUsed.IsZero() {
				continue
			}
			if _, err := last.ExecContext(ctx, u.KeyID, micros(u.LastUsed)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record key usage: %w", err)
	}
	return nil
}

// KeyUsage implements keystore.Store.
func (s *Store) KeyUsage(ctx context.Context, id string, since time.Time) ([]keystore.HourlyUsage, error) {
	rows, err := s.reader.QueryContext(ctx, `
		SELECT hour, count FROM key_usage_hourly WHERE key_id = ? AND hour >= ? ORDER BY hour`, id, micros(since))
	if err != nil {
		return nil, fmt.Errorf("read key usage: %w", err)
	}
	defer rows.Close()
	out, err := keysql.AppendRows(nil, rows, func() (keystore.HourlyUsage, error) {
		var (
			u    keystore.HourlyUsage
			hour int64
		)
		err := rows.Scan(&hour, &u.Count)
		u.Hour = fromMicros(hour)
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
	rows, err := s.reader.QueryContext(ctx, q, args...)
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
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	keys, err := keysql.AppendRows(make([]*keystore.Key, 0, limit), rows, func() (*keystore.Key, error) { return scanKey(rows) })
	if err != nil {
		return nil, "", fmt.Errorf("list keys: %w", err)
	}
	keys, next := keysql.Page(keys, limit, func(k *keystore.Key) string { return encodeCursor(micros(k.CreatedAt), k.ID) })
	return keys, next, nil
}

// dialect is how this store writes keysql's query arguments.
var dialect = keysql.Dialect{
	Placeholder: func(int) string { return "?" },
	Time:        func(t time.Time) any { return micros(t) },
}

// A key cursor is the (created_at, id) of the last key of a page.
func encodeCursor(at int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + "|" + id))
}

func decodeCursor(c string) (int64, string, error) {
	bad := fmt.Errorf("%w: cursor: not a cursor returned by this API", keystore.ErrInvalid)
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", bad
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return 0, "", bad
	}
	at, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, "", bad
	}
	return at, id, nil
}

// cidrsArg is a key's allowlist as a column value: a JSON array of
// networks, NULL for any network.
func cidrsArg(ps []netip.Prefix) sql.NullString {
	if len(ps) == 0 {
		return sql.NullString{}
	}
	b, _ := json.Marshal(keystore.CIDRStrings(ps)) // strings: cannot fail
	return sql.NullString{String: string(b), Valid: true}
}

// rateArg and burstArg are a key's own rate limit as column values (NULL:
// its tier's).
func rateArg(r *keystore.RateLimit) sql.NullFloat64 {
	if r == nil {
		return sql.NullFloat64{}
	}
	return sql.NullFloat64{Float64: r.Rate, Valid: true}
}

func burstArg(r *keystore.RateLimit) sql.NullInt64 {
	if r == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: int64(r.Burst), Valid: true}
}
