package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
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

func create(t *testing.T, s *pgstore.Store, n keystore.NewKey) (string, *keystore.Key) {
	t.Helper()
	p, _ := keystore.GenerateKey()
	k, err := s.CreateKey(context.Background(), n, keystore.HashKey(p), keystore.KeyHint(p), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, k
}

func TestCreateAndLookup(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Name: "CI", Scopes: []string{"scans:read"}, Tier: "pro", ExpiresAt: exp})
	byHash, err := s.KeyByHash(ctx, keystore.HashKey(p))
	if err != nil {
		t.Fatal(err)
	}
	byID, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, byHash); diff != "" {
		t.Errorf("by hash (-created, +read):\n%s", diff)
	}
	if diff := cmp.Diff(k, byID); diff != "" {
		t.Errorf("by id (-created, +read):\n%s", diff)
	}
	if !k.ExpiresAt.Equal(exp) || k.Hint != keystore.KeyHint(p) || k.Tier != "pro" || len(k.ID) != 24 {
		t.Errorf("created key %+v", k)
	}
	if _, err := s.KeyByHash(ctx, keystore.HashKey("odin_sk_nope")); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("unknown hash: %v, want ErrNotFound", err)
	}
	if _, err := s.Key(ctx, "key_nope"); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("unknown id: %v, want ErrNotFound", err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	s := open(t)
	p, _ := keystore.GenerateKey()
	h := keystore.HashKey(p)
	for _, n := range []keystore.NewKey{
		{Name: "no owner"},
		{UserID: "user_1"},
		{UserID: "user 1", Name: "bad owner"},
		{UserID: "user_1", Name: "x", Scopes: []string{"Scans Read"}},
		{UserID: "user_1", Name: "x", Tier: "Gold Plus"},
		{UserID: "user_1", Name: "x", ExpiresAt: time.Now().Add(-time.Minute)},
		{UserID: "user_1", Name: "bad\x00name"},
	} {
		if _, err := s.CreateKey(context.Background(), n, h, "hint", nil); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("CreateKey(%+v) = %v, want ErrInvalid", n, err)
		}
	}
	create(t, s, keystore.NewKey{UserID: "user_1", Name: "first"})
	if _, err := s.CreateKey(context.Background(), keystore.NewKey{UserID: "user_1", Name: "a"}, h, "h", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(context.Background(), keystore.NewKey{UserID: "user_1", Name: "dup"}, h, "h", nil); !errors.Is(err, keystore.ErrInvalid) {
		t.Errorf("duplicate hash: %v, want ErrInvalid", err)
	}
}

func TestRevokeKeepsFirstTime(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "r"})
	first := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
	r1, err := s.RevokeKey(ctx, k.ID, first, nil)
	if err != nil || !r1.RevokedAt.Equal(first) {
		t.Fatalf("revoke: %v %v", r1, err)
	}
	r2, err := s.RevokeKey(ctx, k.ID, time.Now(), nil)
	if err != nil || !r2.RevokedAt.Equal(first) {
		t.Fatalf("second revoke moved the time: %v %v", r2.RevokedAt, err)
	}
	if r2.Usable(time.Now()) != keystore.ErrRevoked {
		t.Error("revoked key usable")
	}
	if _, err := s.RevokeKey(ctx, "key_missing", time.Now(), nil); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("revoke missing: %v", err)
	}
}

func TestListPaginationAndFilters(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		_, k := create(t, s, keystore.NewKey{UserID: "user_a", Name: fmt.Sprintf("k%d", i)})
		ids = append([]string{k.ID}, ids...) // newest first
	}
	create(t, s, keystore.NewKey{UserID: "user_b", Name: "other"})
	if _, err := s.RevokeKey(ctx, ids[0], time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		page, next, err := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_a", Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range page {
			got = append(got, k.ID)
		}
		if next == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if diff := cmp.Diff(ids, got); diff != "" {
		t.Errorf("paged ids (-want, +got):\n%s", diff)
	}
	active, _, _ := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_a", Revoked: ptr(false)})
	revoked, _, _ := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_a", Revoked: ptr(true)})
	if len(active) != 6 || len(revoked) != 1 || revoked[0].ID != ids[0] {
		t.Errorf("filters: %d active, %d revoked", len(active), len(revoked))
	}
	if _, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{Cursor: "not-a-cursor!"}); !errors.Is(err, keystore.ErrInvalid) {
		t.Errorf("bad cursor: %v, want ErrInvalid", err)
	}
}

func TestRecordUsage(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "t"})
	hour := time.Now().UTC().Truncate(time.Hour)
	later := time.Now().UTC().Truncate(time.Microsecond)
	earlier := later.Add(-time.Hour)
	batch := []keystore.Usage{
		{KeyID: k.ID, Hour: hour, Count: 3, LastUsed: later},
		{KeyID: k.ID, Hour: hour.Add(-time.Hour), Count: 2, LastUsed: earlier},
		{KeyID: "key_missing", Hour: hour, Count: 9, LastUsed: later}, // deleted or unknown: skipped
	}
	if err := s.RecordUsage(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordUsage(ctx, []keystore.Usage{{KeyID: k.ID, Hour: hour, Count: 4, LastUsed: earlier}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Key(ctx, k.ID)
	if !got.LastUsedAt.Equal(later) { // never moves back
		t.Errorf("last_used_at = %v, want %v", got.LastUsedAt, later)
	}
	usage, err := s.KeyUsage(ctx, k.ID, hour.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []keystore.HourlyUsage{{Hour: hour.Add(-time.Hour), Count: 2}, {Hour: hour, Count: 7}}
	if diff := cmp.Diff(want, usage); diff != "" {
		t.Errorf("hourly usage (-want, +got):\n%s", diff)
	}
}

func TestRollKeyAndAudit(t *testing.T) {
	s := open(t)
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Name: "roll me", Scopes: []string{"scans:read"}, Tier: "pro"})
	p2, _ := keystore.GenerateKey()
	graceEnd := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	ev := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled, RequestID: "req-1"}
	old, rolled, err := s.RollKey(ctx, k.ID, keystore.HashKey(p2), keystore.KeyHint(p2), graceEnd, ev)
	if err != nil {
		t.Fatal(err)
	}
	if !old.ExpiresAt.Equal(graceEnd) || rolled.ID == k.ID || rolled.Name != k.Name || rolled.Tier != "pro" || rolled.OrgID != "org_1" || !rolled.ExpiresAt.IsZero() {
		t.Errorf("roll: old %+v new %+v", old, rolled)
	}
	byHash, err := s.KeyByHash(ctx, keystore.HashKey(p2))
	if err != nil || byHash.ID != rolled.ID {
		t.Fatalf("new key by hash: %v %v", byHash, err)
	}
	if _, err := s.RevokeKey(ctx, rolled.ID, time.Now(), &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRevoked}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RollKey(ctx, rolled.ID, keystore.HashKey(p2+"x"), "h", time.Now(), nil); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("roll of a revoked key: %v, want ErrConflict", err)
	}
	if _, _, err := s.RollKey(ctx, "key_missing", keystore.HashKey(p2+"y"), "h", time.Now(), nil); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("roll of a missing key: %v, want ErrNotFound", err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Owners: []string{"org_1"}})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action+" "+e.Target)
	}
	want := []string{"key.revoked " + rolled.ID, "key.rolled " + k.ID}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Errorf("audit events (-want, +got):\n%s", diff)
	}
	if events[1].Details["new_key_id"] != rolled.ID || events[1].RequestID != "req-1" {
		t.Errorf("roll event %+v", events[1])
	}
	page, next, _ := s.ListAudit(ctx, keystore.AuditFilter{Owners: []string{"org_1"}, Limit: 1})
	rest, _, _ := s.ListAudit(ctx, keystore.AuditFilter{Owners: []string{"org_1"}, Cursor: next})
	if len(page) != 1 || next == "" || len(rest) != 1 || rest[0].ID == page[0].ID {
		t.Errorf("audit pagination: %v %q %v", page, next, rest)
	}
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

func ptr[T any](v T) *T { return &v }
