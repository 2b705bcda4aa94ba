package pgstore_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func open(t *testing.T) *pgstore.Store {
	t.Helper()
	s := testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{})
	return s
}

// Migrations are idempotent and safe to run from several replicas at once.
func TestConcurrentMigrate(t *testing.T) {
	s := open(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.Migrate(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejectsBadURLWithoutEchoingIt(t *testing.T) {
	_, err := pgstore.Open(context.Background(), "postgres://u:s3cret@[bad", pgstore.Options{})
	if err == nil || contains(err.Error(), "s3cret") {
		t.Fatalf("Open(bad url) = %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// An empty database is reachable but unusable: Ping says which schema
// version it has and which this binary needs, until it is migrated.
func TestPingRefusesAnUnmigratedDatabase(t *testing.T) {
	s := testenv.OpenStore(t, testenv.PostgresEmpty(t), pgstore.Options{})
	want := pgstore.SchemaVersion()
	if want < 4 {
		t.Fatalf("SchemaVersion() = %d, want the newest embedded migration (at least 4)", want)
	}
	err := s.Ping(context.Background())
	var se *pgstore.SchemaError
	if !errors.As(err, &se) || !errors.Is(err, pgstore.ErrSchemaBehind) || se.Have != 0 || se.Want != want {
		t.Fatalf("Ping on an empty database = %v, want a SchemaError 0 < %d", err, want)
	}
	if !strings.Contains(err.Error(), "odin migrate") || !strings.Contains(se.ReportState(), "needs "+strconv.FormatInt(want, 10)) {
		t.Errorf("the error does not say what to run or which version: %q / %q", err, se.ReportState())
	}
	if err := s.Migrate(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after migrating = %v", err)
	}
}
