package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/odin-scan/odin-authz/keystore"
)

// seedMarkerTable records which key sets a database holds, so a seeded
// database is reused: seeding a million keys is the slow part of a run.
const seedMarkerTable = "odin_load_seed"

// SeedResult says what Seed did.
type SeedResult struct {
	Keys   int           `json:"keys"`
	Reused bool          `json:"reused"`
	Took   time.Duration `json:"took_ns"`
}

// Seed makes the database at dbURL (already migrated) hold keys 0..n-1 of
// keys, loading them with PostgreSQL COPY. A database that already holds
// exactly that set, per the marker table, is left as it is.
func Seed(ctx context.Context, dbURL string, keys Keys, n int, log *slog.Logger) (SeedResult, error) {
	if err := checkKeyFormat(); err != nil {
		return SeedResult{}, err
	}
	start := time.Now()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return SeedResult{}, fmt.Errorf("seed: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+seedMarkerTable+` (
		seed text PRIMARY KEY, keys bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now(), seconds double precision NOT NULL)`); err != nil {
		return SeedResult{}, fmt.Errorf("seed: create marker table: %w", err)
	}
	var have int
	err = conn.QueryRow(ctx, `SELECT keys FROM `+seedMarkerTable+` WHERE seed = $1`, keys.Seed).Scan(&have)
	if err == nil && have == n {
		var rows int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE id LIKE 'key_L%'`).Scan(&rows); err != nil {
			return SeedResult{}, fmt.Errorf("seed: count keys: %w", err)
		}
		if rows == n {
			log.Info("database already seeded", "keys", n)
			return SeedResult{Keys: n, Reused: true, Took: time.Since(start)}, nil
		}
	} else if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return SeedResult{}, fmt.Errorf("seed: read marker: %w", err)
	}

	log.Info("seeding keys with COPY", "keys", n)
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return SeedResult{}, fmt.Errorf("seed: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return SeedResult{}, fmt.Errorf("seed: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit
	if _, err := tx.Exec(ctx, `DELETE FROM `+seedMarkerTable+` WHERE seed = $1`, keys.Seed); err != nil {
		return SeedResult{}, fmt.Errorf("seed: clear marker: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM api_keys WHERE id LIKE 'key_L%'`); err != nil {
		return SeedResult{}, fmt.Errorf("seed: delete old load keys: %w", err)
	}
	copied, err := tx.CopyFrom(ctx, pgx.Identifier{"api_keys"},
		[]string{"id", "user_id", "name", "key_hash", "hint", "scopes", "tier"}, keyRows(keys, n, log))
	if err != nil {
		return SeedResult{}, fmt.Errorf("seed: copy keys: %w", err)
	}
	took := time.Since(start)
	if _, err := tx.Exec(ctx, `INSERT INTO `+seedMarkerTable+` (seed, keys, seconds) VALUES ($1, $2, $3)`,
		keys.Seed, copied, took.Seconds()); err != nil {
		return SeedResult{}, fmt.Errorf("seed: write marker: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return SeedResult{}, fmt.Errorf("seed: commit: %w", err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE api_keys`); err != nil {
		return SeedResult{}, fmt.Errorf("seed: analyze: %w", err)
	}
	took = time.Since(start)
	log.Info("keys seeded", "keys", copied, "took", took.Round(time.Millisecond))
	return SeedResult{Keys: int(copied), Took: took}, nil
}

// keyRows streams the rows of keys 0..n-1 to COPY without holding them.
func keyRows(keys Keys, n int, log *slog.Logger) pgx.CopyFromSource {
	scopes := []string{"scans:read", "scans:write"}
	i := 0
	return pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		key := keys.Known(i)
		h := keystore.HashKey(key)
		row := []any{keys.ID(i), keys.Owner(i), "load key " + strconv.Itoa(i), h[:], keystore.KeyHint(key), scopes, loadTier}
		i++
		if i%250_000 == 0 {
			log.Info("seeding", "rows", i, "of", n)
		}
		return row, nil
	})
}

// EnsureDatabase creates the database name on the server of adminURL when
// it does not exist, and returns its URL.
func EnsureDatabase(ctx context.Context, adminURL, name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", errors.New("database url: not a URL")
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}
