package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

func testListKeys(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	var all []*keystore.Key // newest first
	add := func(n keystore.NewKey) *keystore.Key {
		_, k := create(t, s, n)
		all = append([]*keystore.Key{k}, all...)
		return k
	}
	for i := range 7 {
		add(keystore.NewKey{UserID: "user_a", Name: fmt.Sprintf("personal %d", i)})
		if i%2 == 0 {
			add(keystore.NewKey{UserID: "user_a", OrgID: "org_x", Name: fmt.Sprintf("org %d", i)})
		}
	}
	add(keystore.NewKey{UserID: "user_b", Name: "other user"})
	add(keystore.NewKey{OrgID: "org_x", Name: "org only"})
	add(keystore.NewKey{UserID: "user_b", OrgID: "org_y", Name: "other org"})
	for _, i := range []int{1, 4} {
		r, err := keystore.RevokeKey(ctx, s, all[i].ID, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		all[i] = r
	}
	for _, tc := range []struct {
		name string
		opts keystore.ListKeysOptions
		keep func(k *keystore.Key) bool
	}{
		{"all", keystore.ListKeysOptions{}, func(*keystore.Key) bool { return true }},
		{"user", keystore.ListKeysOptions{UserID: "user_a"}, func(k *keystore.Key) bool { return k.UserID == "user_a" }},
		{"org", keystore.ListKeysOptions{OrgID: "org_x"}, func(k *keystore.Key) bool { return k.OrgID == "org_x" }},
		{"user in org", keystore.ListKeysOptions{UserID: "user_a", OrgID: "org_x"}, func(k *keystore.Key) bool { return k.UserID == "user_a" && k.OrgID == "org_x" }},
		{"personal", keystore.ListKeysOptions{PersonalOnly: true}, func(k *keystore.Key) bool { return k.OrgID == "" }},
		{"user's personal", keystore.ListKeysOptions{UserID: "user_a", PersonalOnly: true}, func(k *keystore.Key) bool { return k.UserID == "user_a" && k.OrgID == "" }},
		{"revoked", keystore.ListKeysOptions{Revoked: ptr(true)}, func(k *keystore.Key) bool { return !k.RevokedAt.IsZero() }},
		{"active", keystore.ListKeysOptions{Revoked: ptr(false)}, func(k *keystore.Key) bool { return k.RevokedAt.IsZero() }},
		{"user's active", keystore.ListKeysOptions{UserID: "user_a", Revoked: ptr(false)}, func(k *keystore.Key) bool { return k.UserID == "user_a" && k.RevokedAt.IsZero() }},
		{"nobody", keystore.ListKeysOptions{UserID: "user_z"}, func(*keystore.Key) bool { return false }},
	} {
		var want []string
		for _, k := range all {
			if tc.keep(k) {
				want = append(want, k.ID)
			}
		}
		for _, limit := range []int{0, 1, 3} {
			opts := tc.opts
			opts.Limit = limit
			if diff := cmp.Diff(want, listAll(t, s, opts)); diff != "" {
				t.Errorf("%s, limit %d (-want, +got):\n%s", tc.name, limit, diff)
			}
		}
	}
	// A cursor marks a place, not an offset: a key created between two pages
	// neither repeats nor hides a key on the next page.
	first, next, err := s.ListKeys(ctx, keystore.ListKeysOptions{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	add(keystore.NewKey{UserID: "user_a", Name: "newest"})
	second, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{Limit: 3, Cursor: next})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keyIDs(all[1:7]), append(keyIDs(first), keyIDs(second)...)); diff != "" {
		t.Errorf("pages around a new key (-want, +got):\n%s", diff)
	}
}

func testListKeysBadCursor(t *testing.T, s keystore.Store) {
	create(t, s, keystore.NewKey{UserID: "user_a", Name: "k"})
	for _, c := range []string{"not-a-cursor!", "bm8tc2VwYXJhdG9y" /* no-separator */, "eHx5" /* x|y */} {
		if _, _, err := s.ListKeys(context.Background(), keystore.ListKeysOptions{Cursor: c}); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("ListKeys(cursor %q) = %v, want ErrInvalid", c, err)
		}
	}
}

// A page holds 50 keys or audit events when the caller sets no limit, and
// at most 1000.
func testPageSizes(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	for i := range 51 {
		create(t, s, keystore.NewKey{UserID: "user_a", Name: fmt.Sprintf("k%d", i)})
		if err := s.AppendAudit(ctx, keystore.AuditEvent{Actor: "user_a", Action: "test.page", Target: fmt.Sprintf("t%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ limit, want int }{{0, 50}, {-1, 50}, {5000, 51}} {
		keys, next, err := s.ListKeys(ctx, keystore.ListKeysOptions{Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != tc.want || (next == "") != (tc.want == 51) {
			t.Errorf("ListKeys(limit %d): %d keys, next %q; want %d", tc.limit, len(keys), next, tc.want)
		}
		events, next, err := s.ListAudit(ctx, keystore.AuditFilter{Action: "test.page", Limit: tc.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != tc.want || (next == "") != (tc.want == 51) {
			t.Errorf("ListAudit(limit %d): %d events, next %q; want %d", tc.limit, len(events), next, tc.want)
		}
	}
}
