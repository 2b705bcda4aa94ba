package keystore_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// policyStores are the two stores the key policy is tested on.
var policyStores = map[string]func(t *testing.T) keystore.Store{
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

// Under a maximum lifetime a key created without an expiry gets one, a
// later expiry is refused, an earlier one is kept; a roll's new key expires
// no later than the maximum from the roll, also when the old key never
// expires.
func TestMaxKeyLifetime(t *testing.T) {
	const max = 30 * 24 * time.Hour
	for name, open := range policyStores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			by := keystore.Actor{ID: "operator"}
			free := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
			mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {},
				MaxKeyLifetime: keystore.KeyLifetimes{Default: keystore.MaxLifetime(max)}})
			before := time.Now()
			_, k, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "no expiry"})
			if err != nil {
				t.Fatal(err)
			}
			if k.ExpiresAt.Before(before.Add(max).Truncate(time.Microsecond)) || k.ExpiresAt.After(time.Now().Add(max)) {
				t.Errorf("expires_at %v, want created_at + %v (created %v)", k.ExpiresAt, max, k.CreatedAt)
			}
			if _, _, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "too long", ExpiresAt: time.Now().Add(max + time.Hour)}); !errors.Is(err, keystore.ErrInvalid) {
				t.Errorf("expiry past the maximum: %v, want ErrInvalid", err)
			}
			short := time.Now().Add(time.Hour).Truncate(time.Microsecond)
			_, k, err = mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "short", ExpiresAt: short})
			if err != nil || !k.ExpiresAt.Equal(short) {
				t.Errorf("short expiry: %v, %v; want %v", k, err, short)
			}
			_, forever, err := free.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "before the policy"})
			if err != nil || !forever.ExpiresAt.IsZero() {
				t.Fatalf("without a maximum: %+v, %v", forever, err)
			}
			before = time.Now()
			_, _, rolled, err := mgr.Roll(ctx, by, forever.ID, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if rolled.ExpiresAt.IsZero() || rolled.ExpiresAt.Before(before.Add(max).Truncate(time.Microsecond)) || rolled.ExpiresAt.After(time.Now().Add(max)) {
				t.Errorf("rolled key expires %v, want the roll's time + %v", rolled.ExpiresAt, max)
			}
			_, _, rolled, err = mgr.Roll(ctx, by, k.ID, 0)
			if err != nil || !rolled.ExpiresAt.Equal(short) {
				t.Errorf("roll of a key within the maximum: %v, %v; want its expiry %v", rolled, err, short)
			}
		})
	}
}

// Under a maximum lifetime a change of expiry (PATCH /v1/keys/{id}) may
// not let a key live longer than the maximum from its creation, nor make it
// never expire; bringing an expiry forward is always allowed, also on a key
// made before the policy and older than the maximum.
func TestMaxKeyLifetimeBoundsUpdates(t *testing.T) {
	const max = 30 * 24 * time.Hour
	for name, open := range policyStores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			by := keystore.Actor{ID: "operator"}
			opts := func(lt keystore.KeyLifetimes) keystore.ManagerOptions {
				return keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}, MaxKeyLifetime: lt}
			}
			free := keystore.NewManager(store, nil, opts(keystore.KeyLifetimes{}))
			mgr := keystore.NewManager(store, nil, opts(keystore.KeyLifetimes{Default: keystore.MaxLifetime(max)}))
			at := func(d time.Duration) *time.Time { t := time.Now().Add(d).Truncate(time.Microsecond); return &t }
			never := &time.Time{}

			_, k, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "capped", ExpiresAt: *at(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			for what, exp := range map[string]*time.Time{"past the maximum": at(max + time.Hour), "never": never} {
				if _, err := mgr.Update(ctx, by, k.ID, keystore.KeyUpdate{ExpiresAt: exp}); !errors.Is(err, keystore.ErrInvalid) || !strings.Contains(err.Error(), "expires_at") {
					t.Errorf("expiry %s: %v, want ErrInvalid naming expires_at", what, err)
				}
			}
			within := at(max - time.Hour)
			if k, err := mgr.Update(ctx, by, k.ID, keystore.KeyUpdate{ExpiresAt: within}); err != nil || !k.ExpiresAt.Equal(*within) {
				t.Errorf("later expiry within the maximum: %v, %v", k, err)
			}
			if _, err := free.Update(ctx, by, k.ID, keystore.KeyUpdate{ExpiresAt: never}); err != nil {
				t.Errorf("without a maximum, never: %v", err)
			}

			// A key older than the maximum, made before the policy: it may
			// be given an expiry and have it brought forward, not pushed back.
			_, old, err := free.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "before the policy"})
			if err != nil {
				t.Fatal(err)
			}
			old.CreatedAt = old.CreatedAt.Add(-2 * max) // as the policy sees it below
			if err := (keystore.KeyLifetimes{Default: keystore.MaxLifetime(max)}).AllowsExpiry(old, *at(24 * time.Hour)); err != nil {
				t.Errorf("an expiry for a key that never expired: %v", err)
			}
			old.ExpiresAt = *at(time.Hour)
			if err := (keystore.KeyLifetimes{Default: keystore.MaxLifetime(max)}).AllowsExpiry(old, *at(30 * time.Minute)); err != nil {
				t.Errorf("bringing an expiry forward: %v", err)
			}
			if err := (keystore.KeyLifetimes{Default: keystore.MaxLifetime(max)}).AllowsExpiry(old, *at(2 * time.Hour)); !errors.Is(err, keystore.ErrInvalid) {
				t.Errorf("pushing the expiry of a key past its maximum back: %v, want ErrInvalid", err)
			}
		})
	}
}

// RevokeUnused revokes an active key unused since the cutoff, with the
// reason expired-by-policy; a key used since, a revoked or an expired one is
// ErrUsed and unchanged; a second call writes no second event.
func TestRevokeUnused(t *testing.T) {
	for name, open := range policyStores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
			op := keystore.Actor{ID: "operator"}
			policy := keystore.Actor{ID: "policy:unused-keys"}
			mk := func(name string, expires time.Time) *keystore.Key {
				_, k, err := mgr.Create(ctx, op, keystore.NewKey{UserID: "user_1", Name: name, ExpiresAt: expires})
				if err != nil {
					t.Fatal(err)
				}
				return k
			}
			idle, used, revoked, expiring := mk("idle", time.Time{}), mk("used", time.Time{}), mk("revoked", time.Time{}), mk("expiring", time.Now().Add(50*time.Millisecond))
			cutoff := time.Now().Add(time.Hour) // every key was created before it
			if err := store.RecordUsage(ctx, []keystore.Usage{{KeyID: used.ID, Hour: time.Now().UTC().Truncate(time.Hour), Count: 1, LastUsed: cutoff.Add(time.Second)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := mgr.Revoke(ctx, op, revoked.ID); err != nil {
				t.Fatal(err)
			}
			for time.Now().Before(expiring.ExpiresAt) {
				time.Sleep(10 * time.Millisecond)
			}
			k, err := mgr.RevokeUnused(ctx, policy, idle.ID, cutoff, map[string]any{"unused_for": "90d"})
			if err != nil || k.RevokedAt.IsZero() {
				t.Fatalf("idle key: %+v, %v", k, err)
			}
			for _, id := range []string{idle.ID, used.ID, revoked.ID, expiring.ID} {
				if _, err := mgr.RevokeUnused(ctx, policy, id, cutoff, nil); !errors.Is(err, keystore.ErrUsed) || !errors.Is(err, keystore.ErrConflict) {
					t.Errorf("RevokeUnused(%s) = %v, want ErrUsed", id, err)
				}
			}
			if k, _ := store.Key(ctx, used.ID); !k.RevokedAt.IsZero() {
				t.Error("the used key was revoked")
			}
			events, _, err := store.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRevoked, Actor: policy.ID})
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != 1 || events[0].Target != idle.ID || events[0].Details["reason"] != keystore.RevokeReasonExpiredByPolicy || events[0].Details["unused_for"] != "90d" {
				t.Errorf("policy's key.revoked events: %+v; want one of %s, reason expired-by-policy", events, idle.ID)
			}
		})
	}
}

func TestParseAge(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "1d": 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute} {
		if got, err := keystore.ParseAge(in); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "0", "-1h", "-3d", "d", "1.5d", "90", "ninety days", "36500000d", "999999999h", "1w"} {
		if got, err := keystore.ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) = %v, want an error", in, got)
		}
	}
	for d, want := range map[time.Duration]string{90 * 24 * time.Hour: "90d", 36 * time.Hour: "36h0m0s"} {
		if got := keystore.FormatAge(d); got != want {
			t.Errorf("FormatAge(%v) = %q, want %q", d, got, want)
		}
	}
}

// An organisation's own maximum replaces the default for its keys, shorter
// or longer; personal keys and other organisations' keep the default.
func TestOrgMaxKeyLifetime(t *testing.T) {
	const day = 24 * time.Hour
	store := policyStores["sqlite"](t)
	ctx := context.Background()
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {},
		MaxKeyLifetime: keystore.KeyLifetimes{Default: keystore.MaxLifetime(30 * day), Orgs: map[string]keystore.MaxLifetime{
			"org_short": keystore.MaxLifetime(7 * day), "org_long": keystore.MaxLifetime(365 * day)}}})
	for _, tc := range []struct {
		user, org string
		want      time.Duration
	}{
		{"user_1", "", 30 * day}, {"user_1", "org_other", 30 * day}, {"", "org_short", 7 * day}, {"user_1", "org_long", 365 * day},
	} {
		before := time.Now()
		_, k, err := mgr.Create(ctx, keystore.Actor{ID: "operator"}, keystore.NewKey{UserID: tc.user, OrgID: tc.org, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if k.ExpiresAt.Before(before.Add(tc.want).Truncate(time.Microsecond)) || k.ExpiresAt.After(time.Now().Add(tc.want)) {
			t.Errorf("org %q: expires %v after creation, want %v", tc.org, k.ExpiresAt.Sub(k.CreatedAt), tc.want)
		}
	}
	_, _, err := mgr.Create(ctx, keystore.Actor{ID: "operator"}, keystore.NewKey{OrgID: "org_short", Name: "k", ExpiresAt: time.Now().Add(8 * day)})
	if !errors.Is(err, keystore.ErrInvalid) || !strings.Contains(err.Error(), "organisation org_short") {
		t.Errorf("past the organisation's maximum: %v", err)
	}
}

func TestParseKeyPolicy(t *testing.T) {
	got, err := keystore.ParseKeyPolicy([]byte(`{"organisations": {"org_a": {"max_key_lifetime": "30d"}, "org_b": {"max_key_lifetime": "36h"}}}`))
	want := map[string]keystore.MaxLifetime{"org_a": keystore.MaxLifetime(30 * 24 * time.Hour), "org_b": keystore.MaxLifetime(36 * time.Hour)}
	if err != nil || len(got) != 2 || got["org_a"] != want["org_a"] || got["org_b"] != want["org_b"] {
		t.Errorf("ParseKeyPolicy = %v, %v; want %v", got, err, want)
	}
	for _, bad := range []string{
		``, `[]`, `{"orgs": {}}`, `{"organisations": {"org a": {"max_key_lifetime": "30d"}}}`,
		`{"organisations": {"org_a": {"max_key_lifetime": "forever"}}}`, `{"organisations": {"org_a": {}}}`,
		`{"organisations": {"org_a": {"max_key_lifetime": "30d", "revoke": true}}}`, `{} {}`,
	} {
		if got, err := keystore.ParseKeyPolicy([]byte(bad)); err == nil {
			t.Errorf("ParseKeyPolicy(%s) = %v, want an error", bad, got)
		}
	}
}

// Concurrent RevokeUnused calls of one key (policy jobs on several
// replicas, without their lock) revoke it once: one succeeds, the others get
// ErrUsed, and there is one key.revoked event.
func TestConcurrentRevokeUnused(t *testing.T) {
	for name, open := range policyStores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}})
			_, k, err := mgr.Create(ctx, keystore.Actor{ID: "operator"}, keystore.NewKey{UserID: "user_1", Name: "idle"})
			if err != nil {
				t.Fatal(err)
			}
			cutoff := time.Now().Add(time.Hour)
			errs := make([]error, 4)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() {
					_, errs[i] = mgr.RevokeUnused(ctx, keystore.Actor{ID: "policy:unused-keys"}, k.ID, cutoff, nil)
				})
			}
			wg.Wait()
			revoked := 0
			for _, err := range errs {
				switch {
				case err == nil:
					revoked++
				case !errors.Is(err, keystore.ErrUsed):
					t.Errorf("RevokeUnused: %v", err)
				}
			}
			events, _, err := store.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRevoked})
			if err != nil {
				t.Fatal(err)
			}
			if revoked != 1 || len(events) != 1 {
				t.Errorf("%d revokes succeeded, %d key.revoked events; want 1 and 1", revoked, len(events))
			}
		})
	}
}
