package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func runMigrate(ctx context.Context, args []string, stderr io.Writer) error {
	f := newFlags("migrate", "Apply the embedded PostgreSQL schema migrations. Safe to run from several\nreplicas at once: an advisory lock serialises them.")
	f.SetOutput(stderr)
	var (
		databaseURL string
		lo          logOptions
	)
	f.Secret(&databaseURL, "database-url", "ODIN_DATABASE_URL", "PostgreSQL URL (required)")
	lo.bind(f, "text")
	if err := f.parse(args); err != nil {
		return err
	}
	logger, err := lo.logger(stderr)
	if err != nil {
		return err
	}
	if databaseURL == "" {
		return errMissingDatabaseURL
	}
	return migrateDatabase(ctx, databaseURL, logger)
}

func migrateDatabase(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	store, err := pgstore.Open(ctx, databaseURL, pgstore.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Migrate(ctx, logger)
}
