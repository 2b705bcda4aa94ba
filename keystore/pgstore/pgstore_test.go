package pgstore_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func open(t *testing.T) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), testenv.Postgres(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
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
