// Package sqlitestore is the embedded implementation of keystore.Store: one
// SQLite file under a data directory (pure Go, no cgo), so `odin dev` runs
// with nothing installed and its keys survive a restart. It answers exactly
// as pgstore does; keystore/storetest holds both to the same suite.
//
// Writes go through a single connection, so writers queue in the process
// instead of failing with SQLITE_BUSY; reads use a pool of read-only
// connections that WAL mode lets run beside the writer.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/odin-scan/odin-authz/keystore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a keystore.Store in one SQLite file.
type Store struct {
	writer *sql.DB // one connection: every write transaction, in turn
	reader *sql.DB // read-only connections for lookups and listings
}

var _ keystore.Store = (*Store)(nil)

// busyTimeout is how long a statement waits for a lock held by another
// process (an `odin keys` run beside `odin dev`) before failing. Within the
// process writers never contend: they share the single writer connection.
const busyTimeout = 5 * time.Second

// Open opens the database file at path, creating it and its directory when
// missing (readable by the owner only), and applies pending migrations. One
// process at a time should migrate a file; later Opens find nothing to do.
func Open(path string) (*Store, error) {
	if path == "" || strings.Contains(path, "?") {
		return nil, fmt.Errorf("open embedded store: %q is not a usable file name", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open embedded store: create data directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	f.Close()

	// synchronous=FULL: a committed revocation survives a power cut too.
	writer, err := openDB(path, 1, "_txlock=immediate",
		"_pragma=journal_mode(WAL)", "_pragma=synchronous(FULL)", "_pragma=foreign_keys(1)")
	if err != nil {
		return nil, err
	}
	if err := migrate(writer); err != nil {
		writer.Close()
		return nil, err
	}
	reader, err := openDB(path, max(4, runtime.GOMAXPROCS(0)), "_pragma=query_only(1)")
	if err != nil {
		writer.Close()
		return nil, err
	}
	return &Store{writer: writer, reader: reader}, nil
}

// openDB opens a pool of at most conns connections to path, each set up
// with busy_timeout and the given DSN parameters, and checks that it works.
func openDB(path string, conns int, params ...string) (*sql.DB, error) {
	q := append([]string{fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds())}, params...)
	db, err := sql.Open("sqlite", path+"?"+strings.Join(q, "&"))
	if err != nil {
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(0)
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open embedded store %s: %w", path, err)
	}
	return db, nil
}

// migrate applies the embedded migrations that db has not seen yet.
func migrate(db *sql.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate embedded store: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate embedded store: %w", err)
	}
	if _, err := p.Up(context.Background()); err != nil {
		return fmt.Errorf("migrate embedded store: %w", err)
	}
	return nil
}

// Close closes the database; the last connection to close checkpoints the
// write-ahead log into the file.
func (s *Store) Close() error {
	return errors.Join(s.reader.Close(), s.writer.Close())
}

// Ping implements keystore.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.reader.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("ping embedded store: %w", err)
	}
	return nil
}

// write runs fn in a transaction on the writer connection. The transaction
// begins IMMEDIATE, taking the write lock at once, so a read followed by a
// write in fn sees no other writer in between (PostgreSQL's FOR UPDATE).
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it only reports ErrTxDone
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// micros is how times are stored: Unix microseconds, the precision of
// PostgreSQL's timestamptz, truncated the same way pgx truncates.
func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros stores a zero time as NULL, as pgstore does.
func nullMicros(t time.Time) sql.NullInt64 {
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: !t.IsZero()}
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// timestamp is the store's clock, at the precision it stores.
func timestamp() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// isUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure
// (PostgreSQL's 23505).
func isUniqueViolation(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
