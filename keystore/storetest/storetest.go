// Package storetest is the conformance suite of keystore.Store: the one set
// of tests that the PostgreSQL store and the embedded store both pass, so
// that `odin dev` behaves as production does. A store's package runs it from
// a test:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, openStore) }
package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// Run runs every conformance test as a parallel subtest. open returns a new,
// empty, migrated store for one test and arranges for its closing.
func Run(t *testing.T, open func(t *testing.T) keystore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s keystore.Store)
	}{
		{"CreateAndLookup", testCreateAndLookup},
		{"CreateRefusesBadInput", testCreateRefusesBadInput},
		{"CreateWritesAuditEvent", testCreateWritesAuditEvent},
		{"RevokeKeepsFirstTime", testRevokeKeepsFirstTime},
		{"Roll", testRoll},
		{"RollRefusesUnusableKeys", testRollRefusesUnusableKeys},
		{"RollOnce", testRollOnce},
		{"ConcurrentRolls", testConcurrentRolls},
		{"Expiry", testExpiry},
		{"ModifyKey", testModifyKey},
		{"ModifyKeyRefuses", testModifyKeyRefuses},
		{"Disable", testDisable},
		{"RateLimit", testRateLimit},
		{"AllowedCIDRs", testAllowedCIDRs},
		{"DuplicateScopes", testDuplicateScopes},
		{"NarrowCIDRsOnly", testNarrowCIDRsOnly},
		{"KeyHashes", testKeyHashes},
		{"ListKeysPaginationAndFilters", testListKeys},
		{"ListKeysBadCursor", testListKeysBadCursor},
		{"PageSizes", testPageSizes},
		{"Usage", testUsage},
		{"UsageTotals", testUsageTotals},
		{"ListKeysUnused", testListKeysUnused},
		{"ListKeysExpiring", testListKeysExpiring},
		{"SessionRevocation", testSessionRevocation},
		{"AuditFiltersAndPagination", testAuditFilters},
		{"AuditEvents", testAuditEvents},
		{"WebhookDeliveries", testDeliveries},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// us is the precision every store keeps times at: PostgreSQL's
// timestamptz, truncated.
const us = time.Microsecond

// create stores a key for n with a fresh plaintext, and returns both.
func create(t *testing.T, s keystore.Store, n keystore.NewKey) (string, *keystore.Key) {
	t.Helper()
	p, err := keystore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateKey(context.Background(), n, keystore.HashKey(p), keystore.KeyHint(p), nil)
	if err != nil {
		t.Fatalf("CreateKey(%+v): %v", n, err)
	}
	return p, k
}

func ptr[T any](v T) *T { return &v }

func keyIDs(keys []*keystore.Key) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

// listAll pages through ListKeys, limit keys at a time.
func listAll(t *testing.T, s keystore.Store, opts keystore.ListKeysOptions) []string {
	t.Helper()
	var ids []string
	for pages := 0; ; pages++ {
		page, next, err := s.ListKeys(context.Background(), opts)
		if err != nil {
			t.Fatalf("ListKeys(%+v): %v", opts, err)
		}
		if opts.Limit > 0 && len(page) > opts.Limit {
			t.Fatalf("ListKeys(%+v) returned %d keys", opts, len(page))
		}
		ids = append(ids, keyIDs(page)...)
		if next == "" {
			return ids
		}
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
		opts.Cursor = next
	}
}

// sortedSessions orders revocations by session id, for comparison.
func sortedSessions(rs []keystore.RevokedSession) []keystore.RevokedSession {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b keystore.RevokedSession) int { return strings.Compare(a.SessionID, b.SessionID) })
	return rs
}

// auditIDs are the request ids of events: the suite labels its events so.
func auditIDs(events []keystore.AuditEvent) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.RequestID
	}
	return ids
}

// testConcurrentWriters runs writers side by side, as the admin API's
// handlers and a replica's usage flush do: none may fail (for SQLite, no
// SQLITE_BUSY), and every write must be counted once.
func testConcurrentWriters(t *testing.T, s keystore.Store) {
	const writers, each = 8, 25
	ctx := context.Background()
	_, shared := create(t, s, keystore.NewKey{UserID: "reader", Name: "shared"})
	hour := time.Now().UTC().Truncate(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := writeOnce(ctx, s, shared.ID, hour, w, i); err != nil {
					errs <- fmt.Errorf("writer %d, round %d: %w", w, i, err)
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

	const revoked = writers * ((each + 1) / 2)
	all := listAll(t, s, keystore.ListKeysOptions{UserID: "writer", Limit: 1000})
	gone := listAll(t, s, keystore.ListKeysOptions{UserID: "writer", Revoked: ptr(true), Limit: 1000})
	if len(all) != writers*each || len(gone) != revoked {
		t.Errorf("%d keys, %d revoked; want %d and %d", len(all), len(gone), writers*each, revoked)
	}
	page, next, err := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "writer"})
	if err != nil || len(page) != 50 || next == "" {
		t.Errorf("default page: %d keys, next %q, %v; want 50 and a cursor", len(page), next, err)
	}
	for action, want := range map[string]int{keystore.ActionKeyCreated: writers * each, keystore.ActionKeyRevoked: revoked} {
		var n int
		f := keystore.AuditFilter{Action: action, Limit: 1000}
		for {
			events, next, err := s.ListAudit(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			n += len(events)
			if next == "" {
				break
			}
			f.Cursor = next
		}
		if n != want {
			t.Errorf("%d %s events, want %d", n, action, want)
		}
	}
	usage, err := s.KeyUsage(ctx, shared.ID, hour)
	if err != nil || len(usage) != 1 || usage[0].Count != writers*each {
		t.Errorf("shared key usage %v, %v; want %d in one hour", usage, err, writers*each)
	}
}

// writeOnce is one round of a concurrent writer: create a key, read it
// back, count a use of the shared key, and revoke every other key.
func writeOnce(ctx context.Context, s keystore.Store, sharedID string, hour time.Time, w, i int) error {
	p, err := keystore.GenerateKey()
	if err != nil {
		return err
	}
	k, err := s.CreateKey(ctx, keystore.NewKey{UserID: "writer", Name: fmt.Sprintf("w%d-%d", w, i)}, keystore.HashKey(p), keystore.KeyHint(p),
		&keystore.AuditEvent{Actor: "writer", Action: keystore.ActionKeyCreated})
	if err != nil {
		return err
	}
	if got, err := s.KeyByHash(ctx, keystore.HashKey(p)); err != nil || got.ID != k.ID {
		return fmt.Errorf("read back %s: %v, %v", k.ID, got, err)
	}
	if err := s.RecordUsage(ctx, []keystore.Usage{{KeyID: sharedID, Hour: hour, Count: 1, LastUsed: time.Now()}}); err != nil {
		return err
	}
	if i%2 == 0 {
		_, err = keystore.RevokeKey(ctx, s, k.ID, time.Now(), &keystore.AuditEvent{Actor: "writer", Action: keystore.ActionKeyRevoked})
	}
	return err
}

func testPing(t *testing.T, s keystore.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}
