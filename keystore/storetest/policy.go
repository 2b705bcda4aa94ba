package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/odin-scan/odin-authz/keystore"
)

// Usage totals count the hours of the current one and the 23 (719) before
// it, for a page of keys in one call; a key without checks in 30 days is
// absent.
func testUsageTotals(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, a := create(t, s, keystore.NewKey{UserID: "user_1", Name: "a"})
	_, b := create(t, s, keystore.NewKey{UserID: "user_1", Name: "b"})
	_, idle := create(t, s, keystore.NewKey{UserID: "user_1", Name: "idle"})
	now := time.Now()
	hour := now.UTC().Truncate(time.Hour)
	used := now.Add(-time.Minute)
	if err := s.RecordUsage(ctx, []keystore.Usage{
		{KeyID: a.ID, Hour: hour, Count: 1, LastUsed: used},
		{KeyID: a.ID, Hour: hour.Add(-23 * time.Hour), Count: 2, LastUsed: used},  // last of the 24 hours
		{KeyID: a.ID, Hour: hour.Add(-24 * time.Hour), Count: 4, LastUsed: used},  // 30 days only
		{KeyID: a.ID, Hour: hour.Add(-719 * time.Hour), Count: 8, LastUsed: used}, // last of the 720 hours
		{KeyID: a.ID, Hour: hour.Add(-720 * time.Hour), Count: 16, LastUsed: used},
		{KeyID: b.ID, Hour: hour.Add(-100 * time.Hour), Count: 32, LastUsed: used},
		{KeyID: idle.ID, Hour: hour.Add(-800 * time.Hour), Count: 64, LastUsed: used},
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.KeyUsageTotals(ctx, []string{a.ID, b.ID, idle.ID, "key_missing"}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]keystore.UsageTotals{a.ID: {Last24h: 3, Last30d: 15}, b.ID: {Last24h: 0, Last30d: 32}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage totals (-want, +got):\n%s", diff)
	}
	if got, err := s.KeyUsageTotals(ctx, nil, now); err != nil || len(got) != 0 {
		t.Errorf("no ids: %v, %v; want an empty map", got, err)
	}
}

// UnusedSince keeps the keys last used before it, or never used and created
// before it, with the other filters and across pages.
func testListKeysUnused(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, never := create(t, s, keystore.NewKey{UserID: "user_a", Name: "never used"})
	_, old := create(t, s, keystore.NewKey{UserID: "user_a", Name: "used before the cutoff"})
	_, recent := create(t, s, keystore.NewKey{UserID: "user_a", Name: "used after the cutoff"})
	_, revoked := create(t, s, keystore.NewKey{UserID: "user_a", Name: "revoked, never used"})
	_, other := create(t, s, keystore.NewKey{UserID: "user_b", Name: "other user, never used"})
	if _, err := keystore.RevokeKey(ctx, s, revoked.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	// Keys are created now: a cutoff an hour ahead makes never-used keys
	// unused; uses are placed on either side of it.
	cutoff := time.Now().Add(time.Hour)
	hour := time.Now().UTC().Truncate(time.Hour)
	if err := s.RecordUsage(ctx, []keystore.Usage{
		{KeyID: old.ID, Hour: hour, Count: 1, LastUsed: cutoff.Add(-time.Minute)},
		{KeyID: recent.ID, Hour: hour, Count: 1, LastUsed: cutoff.Add(time.Minute)},
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts keystore.ListKeysOptions
		want []*keystore.Key // newest first
	}{
		{"all", keystore.ListKeysOptions{UnusedSince: cutoff}, []*keystore.Key{other, revoked, old, never}},
		{"active", keystore.ListKeysOptions{UnusedSince: cutoff, Revoked: ptr(false)}, []*keystore.Key{other, old, never}},
		{"user's active", keystore.ListKeysOptions{UnusedSince: cutoff, Revoked: ptr(false), UserID: "user_a"}, []*keystore.Key{old, never}},
		{"before every key", keystore.ListKeysOptions{UnusedSince: time.Now().Add(-time.Hour)}, nil},
	} {
		for _, limit := range []int{0, 1} {
			opts := tc.opts
			opts.Limit = limit
			if diff := cmp.Diff(keyIDs(tc.want), listAll(t, s, opts), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s, limit %d (-want, +got):\n%s", tc.name, limit, diff)
			}
		}
	}
}

// ExpiresFrom and ExpiresBefore keep the keys whose expiry falls between
// them, with the other filters and across pages; keys that never expire
// are never among them.
func testListKeysExpiring(t *testing.T, s keystore.Store) {
	now := time.Now().UTC().Truncate(time.Second)
	at := func(d time.Duration) time.Time { return now.Add(d) }
	_, never := create(t, s, keystore.NewKey{UserID: "user_a", Name: "never expires"})
	_, soon := create(t, s, keystore.NewKey{UserID: "user_a", Name: "in 2 days", ExpiresAt: at(48 * time.Hour)})
	_, later := create(t, s, keystore.NewKey{UserID: "user_a", Name: "in 20 days", ExpiresAt: at(20 * 24 * time.Hour)})
	_, far := create(t, s, keystore.NewKey{UserID: "user_a", Name: "in 60 days", ExpiresAt: at(60 * 24 * time.Hour)})
	_, other := create(t, s, keystore.NewKey{UserID: "user_b", Name: "other user, in 1 day", ExpiresAt: at(24 * time.Hour)})
	_ = never
	for _, tc := range []struct {
		name string
		opts keystore.ListKeysOptions
		want []*keystore.Key // newest first
	}{
		{"within 7 days", keystore.ListKeysOptions{ExpiresFrom: now, ExpiresBefore: at(7 * 24 * time.Hour)}, []*keystore.Key{other, soon}},
		{"within 30 days", keystore.ListKeysOptions{ExpiresFrom: now, ExpiresBefore: at(30 * 24 * time.Hour)}, []*keystore.Key{other, later, soon}},
		{"user's, within 90 days", keystore.ListKeysOptions{UserID: "user_a", ExpiresFrom: now, ExpiresBefore: at(90 * 24 * time.Hour)}, []*keystore.Key{far, later, soon}},
		{"from after the soonest", keystore.ListKeysOptions{ExpiresFrom: at(72 * time.Hour), ExpiresBefore: at(30 * 24 * time.Hour)}, []*keystore.Key{later}},
		{"within an hour", keystore.ListKeysOptions{ExpiresFrom: now, ExpiresBefore: at(time.Hour)}, nil},
	} {
		for _, limit := range []int{0, 1} {
			opts := tc.opts
			opts.Limit = limit
			if diff := cmp.Diff(keyIDs(tc.want), listAll(t, s, opts), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s, limit %d (-want, +got):\n%s", tc.name, limit, diff)
			}
		}
	}
}
