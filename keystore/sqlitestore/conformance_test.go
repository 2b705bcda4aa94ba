package sqlitestore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
	"github.com/odin-scan/odin-authz/keystore/storetest"
)

func open(t *testing.T, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// TestConformance runs the store conformance suite, each test on a new
// database file of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return open(t, filepath.Join(t.TempDir(), "odin.db"))
	})
}

// Keys, revocations and sessions survive a restart; the data directory is
// created, readable by its owner only.
func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "odin.db")
	s, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := keystore.GenerateKey()
	k, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", Name: "kept", Scopes: []string{"scans:read"}}, keystore.HashKey(p), keystore.KeyHint(p), nil)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := keystore.RevokeKey(ctx, s, k.ID, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sess := keystore.RevokedSession{SessionID: "sess_1", RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.RevokeSession(ctx, sess, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path) // migrations find nothing left to apply
	got, err := s.KeyByHash(ctx, keystore.HashKey(p))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.RevokedAt.Equal(revoked.RevokedAt) || !errors.Is(got.Usable(time.Now()), keystore.ErrRevoked) {
		t.Errorf("after restart: %+v, want %s revoked at %v", got, k.ID, revoked.RevokedAt)
	}
	if rs, err := s.RevokedSessions(ctx, time.Now().Add(-time.Hour), time.Now()); err != nil || len(rs) != 1 {
		t.Errorf("revoked sessions after restart: %v, %v", rs, err)
	}
	for _, f := range []string{filepath.Dir(path), path} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", f, perm)
		}
	}
}

// Two stores on one file, as `odin dev` and an `odin keys` command would be,
// write side by side: busy_timeout makes each wait for the other's lock
// instead of failing with SQLITE_BUSY.
func TestTwoHandlesOnOneFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "odin.db")
	stores := []*sqlitestore.Store{open(t, path), open(t, path)}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 4 {
		s := stores[i%2]
		wg.Go(func() {
			for j := range 20 {
				p, _ := keystore.GenerateKey()
				if _, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", Name: fmt.Sprintf("k%d-%d", i, j)}, keystore.HashKey(p), keystore.KeyHint(p), nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range stores {
		keys, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{Limit: 1000})
		if err != nil || len(keys) != 80 {
			t.Errorf("%d keys, %v; want 80", len(keys), err)
		}
	}
}

func TestOpenRefusesUnusablePaths(t *testing.T) {
	for _, p := range []string{"", filepath.Join(t.TempDir(), "odin.db?mode=memory")} {
		if s, err := sqlitestore.Open(p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlitestore.Open(filepath.Join(blocker, "odin.db")); err == nil {
		s.Close()
		t.Error("Open under a regular file succeeded")
	}
}
