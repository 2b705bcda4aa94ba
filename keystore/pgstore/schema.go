package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/pressly/goose/v3"
)

// SchemaVersion is the newest migration embedded in this binary: the schema
// version it needs. A database at a newer version is accepted (a rolling
// upgrade runs the new migrations while old replicas still serve, so every
// migration keeps the previous binary working); an older one is not.
func SchemaVersion() int64 {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		panic(fmt.Sprintf("pgstore: embedded migrations unreadable: %v", err)) // a broken build
	}
	var newest int64
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil {
			panic(fmt.Sprintf("pgstore: embedded migration %s has no version: %v", e.Name(), err))
		}
		newest = max(newest, v)
	}
	return newest
}

// ErrSchemaBehind is returned (wrapped in a *SchemaError) by CheckSchema and
// Ping when the database lacks migrations this binary needs.
var ErrSchemaBehind = errors.New("database schema is behind this binary")

// SchemaError says which schema version the database has and which this
// binary needs. Its text names no host nor user, so readiness reports show
// it as it is.
type SchemaError struct {
	Have, Want int64
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("database schema is at version %d, this binary needs %d: run `odin migrate` (or start with --migrate)", e.Have, e.Want)
}

// ReportState is what /readyz shows for the database.
func (e *SchemaError) ReportState() string {
	return fmt.Sprintf("schema version %d, needs %d: run odin migrate", e.Have, e.Want)
}

// Unwrap makes errors.Is(err, ErrSchemaBehind) true.
func (e *SchemaError) Unwrap() error { return ErrSchemaBehind }

// CheckSchema reads the database's schema version (goose's version table,
// read only: it is not created when missing) and returns a *SchemaError when
// it is older than SchemaVersion. Once the schema was seen current, the
// store does not ask again: migrations only move forward.
func (s *Store) CheckSchema(ctx context.Context) error {
	if s.schemaCurrent.Load() {
		return nil
	}
	var (
		have   int64
		exists bool
	)
	// Two statements: a query naming a missing table fails to parse.
	err := s.pool.QueryRow(ctx, `SELECT to_regclass('goose_db_version') IS NOT NULL`).Scan(&exists)
	if err == nil && exists {
		err = s.pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&have)
	}
	if err != nil {
		return fmt.Errorf("read the database schema version: %w", err)
	}
	if want := SchemaVersion(); have < want {
		return &SchemaError{Have: have, Want: want}
	}
	s.schemaCurrent.Store(true)
	return nil
}

// ReportSchema checks the schema once, in the background, and logs what to
// run when it is behind, so that an unmigrated database is named at start
// rather than found in the first failed check. A database that cannot be
// reached yet is left to the readiness probe, which checks again.
func (s *Store) ReportSchema(ctx context.Context, logger *slog.Logger) {
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := s.CheckSchema(ctx)
		var se *SchemaError
		switch {
		case errors.As(err, &se):
			logger.Error("database schema is behind: every check will answer 503 and the service stays not ready until it is migrated",
				"have", se.Have, "want", se.Want, "run", "odin migrate (or start with --migrate)")
		case err == nil:
			logger.Info("database schema is current", "want", SchemaVersion())
		}
	}()
}
