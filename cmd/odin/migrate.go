package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// migrateConfig is what odin migrate's flags set.
type migrateConfig struct {
	databaseURL string
	log         logOptions
}

// migrateFlagSet defines odin migrate's flags, writing to c.
func migrateFlagSet(c *migrateConfig) *flags {
	f := newFlags("migrate", "Apply the embedded PostgreSQL schema migrations. Safe to run from several\nreplicas at once: an advisory lock serialises them.")
	f.Secret(&c.databaseURL, "database-url", "ODIN_DATABASE_URL", "PostgreSQL URL (required)")
	c.log.bind(f, "text")
	return f
}

func runMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	var c migrateConfig
	if _, err := parseFlags(&c, migrateFlagSet, args, stderr); err != nil {
		return err
	}
	logger, err := c.log.logger(stderr)
	if err != nil {
		return err
	}
	if c.databaseURL == "" {
		return errMissingDatabaseURL
	}
	return migrateDatabase(ctx, c.databaseURL, logger)
}

func migrateDatabase(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	store, err := pgstore.Open(ctx, databaseURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx, logger)
}
