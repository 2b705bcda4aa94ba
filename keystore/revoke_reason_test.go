package keystore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// A revoke with a reason records it, with the extra details, as the
// key.revoked event's details; revoking again writes no second event and
// keeps the first reason; Revoke records none; an unknown reason is refused
// before anything changes. On PostgreSQL and on the embedded store.
func TestRevokeWithReason(t *testing.T) {
	stores := map[string]func(t *testing.T) keystore.Store{
		"postgres": func(t *testing.T) keystore.Store { return newStore(t) },
		"sqlite": func(t *testing.T) keystore.Store {
			s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "keys.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
			ctx := context.Background()
			by := keystore.Actor{ID: "github-secret-scanning", RequestID: "req-1"}
			_, leaked, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "leaked"})
			if err != nil {
				t.Fatal(err)
			}
			_, plain, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "plain"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := mgr.RevokeWithReason(ctx, by, leaked.ID, "bored", nil); !errors.Is(err, keystore.ErrInvalid) {
				t.Fatalf("unknown reason: %v, want ErrInvalid", err)
			}
			details := map[string]any{"url": "https://github.com/o/r/blob/x/f", "reason": "overridden"}
			k, err := mgr.RevokeWithReason(ctx, by, leaked.ID, keystore.RevokeReasonLeaked, details)
			if err != nil || k.RevokedAt.IsZero() {
				t.Fatalf("revoke: %v %+v", err, k)
			}
			if details["reason"] != "overridden" {
				t.Fatal("the caller's details were changed")
			}
			if _, err := mgr.RevokeWithReason(ctx, keystore.Actor{ID: "operator"}, leaked.ID, keystore.RevokeReasonOperator, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := mgr.Revoke(ctx, by, plain.ID); err != nil {
				t.Fatal(err)
			}
			events, _, err := store.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRevoked})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]map[string]any{}
			for _, ev := range events {
				if _, dup := got[ev.Target]; dup {
					t.Fatalf("two key.revoked events of %s", ev.Target)
				}
				got[ev.Target] = ev.Details
				if ev.Actor != by.ID {
					t.Errorf("actor %q", ev.Actor)
				}
			}
			want := map[string]map[string]any{
				leaked.ID: {"reason": "leaked", "url": "https://github.com/o/r/blob/x/f"},
				plain.ID:  {},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("key.revoked details (-want, +got):\n%s", diff)
			}
		})
	}
}
