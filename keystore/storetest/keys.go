package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

func testCreateAndLookup(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour + 123*time.Nanosecond)
	before := time.Now()
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Name: "CI", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro", ExpiresAt: exp})
	after := time.Now()
	want := &keystore.Key{
		ID: k.ID, UserID: "user_1", OrgID: "org_1", Name: "CI", Hash: keystore.HashKey(p), Hint: keystore.KeyHint(p),
		Scopes: []string{"scans:read", "scans:write"}, Tier: "pro", CreatedAt: k.CreatedAt, ExpiresAt: exp.Truncate(us),
	}
	if diff := cmp.Diff(want, k); diff != "" {
		t.Errorf("created key (-want, +got):\n%s", diff)
	}
	if !strings.HasPrefix(k.ID, "key_") || len(k.ID) != 24 {
		t.Errorf("key id %q, want key_ and 20 characters", k.ID)
	}
	// The store's clock stamps created_at: the database server's for PostgreSQL.
	if k.CreatedAt.Before(before.Add(-5*time.Second)) || k.CreatedAt.After(after.Add(5*time.Second)) {
		t.Errorf("created_at %v, not between %v and %v", k.CreatedAt, before, after)
	}
	byHash, err := s.KeyByHash(ctx, keystore.HashKey(p))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, byHash); diff != "" {
		t.Errorf("by hash (-created, +read):\n%s", diff)
	}
	byID, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, byID); diff != "" {
		t.Errorf("by id (-created, +read):\n%s", diff)
	}

	// Defaults: no scopes is an empty list, not null; no tier is the default.
	p2, bare := create(t, s, keystore.NewKey{OrgID: "org_2", Name: "bare"})
	if bare.Scopes == nil || len(bare.Scopes) != 0 || bare.Tier != keystore.DefaultTier || !bare.ExpiresAt.IsZero() || bare.Owner() != "org_2" {
		t.Errorf("key with defaults: %+v", bare)
	}
	if got, err := s.KeyByHash(ctx, keystore.HashKey(p2)); err != nil || got.Scopes == nil || len(got.Scopes) != 0 {
		t.Errorf("key with defaults read back: %+v, %v", got, err)
	}

	if got, err := s.KeyByHash(ctx, keystore.HashKey("odin_sk_nope")); !errors.Is(err, keystore.ErrNotFound) || got != nil {
		t.Errorf("unknown hash: %v, %v; want nil, ErrNotFound", got, err)
	}
	if got, err := s.Key(ctx, "key_nope"); !errors.Is(err, keystore.ErrNotFound) || got != nil {
		t.Errorf("unknown id: %v, %v; want nil, ErrNotFound", got, err)
	}
}

func testCreateRefusesBadInput(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	p, _ := keystore.GenerateKey()
	h := keystore.HashKey(p)
	tooManyScopes := make([]string, 65)
	for i := range tooManyScopes {
		tooManyScopes[i] = fmt.Sprintf("s%d", i)
	}
	for _, tc := range []struct {
		name string
		n    keystore.NewKey
	}{
		{"no owner", keystore.NewKey{Name: "no owner"}},
		{"bad user id", keystore.NewKey{UserID: "user 1", Name: "x"}},
		{"bad org id", keystore.NewKey{OrgID: "org/1", Name: "x"}},
		{"no name", keystore.NewKey{UserID: "user_1"}},
		{"control character in name", keystore.NewKey{UserID: "user_1", Name: "bad\x00name"}},
		{"name too long", keystore.NewKey{UserID: "user_1", Name: strings.Repeat("n", 201)}},
		{"bad scope", keystore.NewKey{UserID: "user_1", Name: "x", Scopes: []string{"Scans Read"}}},
		{"too many scopes", keystore.NewKey{UserID: "user_1", Name: "x", Scopes: tooManyScopes}},
		{"bad tier", keystore.NewKey{UserID: "user_1", Name: "x", Tier: "Gold Plus"}},
		{"expiry in the past", keystore.NewKey{UserID: "user_1", Name: "x", ExpiresAt: time.Now().Add(-time.Minute)}},
	} {
		ev := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyCreated}
		if _, err := s.CreateKey(ctx, tc.n, h, "hint", ev); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("%s: CreateKey(%+v) = %v, want ErrInvalid", tc.name, tc.n, err)
		}
	}

	ev := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyCreated}
	first, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", Name: "first"}, h, "h", ev)
	if err != nil {
		t.Fatal(err)
	}
	dupEv := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyCreated}
	if _, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_2", Name: "dup"}, h, "h", dupEv); !errors.Is(err, keystore.ErrInvalid) {
		t.Errorf("duplicate hash: %v, want ErrInvalid", err)
	}
	// Nothing refused was stored: neither a key nor, since the event shares
	// the key's transaction, an audit event.
	keys, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].ID != first.ID {
		t.Errorf("stored keys %v, want only %s", keyIDs(keys), first.ID)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Target != first.ID {
		t.Errorf("audit events %+v, want one for %s", events, first.ID)
	}
}

func testCreateWritesAuditEvent(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	p, _ := keystore.GenerateKey()
	ev := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyCreated, RequestID: "req-1",
		Details: map[string]any{"name": "CI", "hint": keystore.KeyHint(p)}}
	k, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Name: "CI"}, keystore.HashKey(p), keystore.KeyHint(p), ev)
	if err != nil {
		t.Fatal(err)
	}
	// The store fills in the event it wrote: id, time, target and owner.
	if ev.ID <= 0 || ev.At.IsZero() || ev.Target != k.ID || ev.Owner != "org_1" {
		t.Errorf("event after CreateKey: %+v", ev)
	}
	events, next, err := s.ListAudit(ctx, keystore.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]keystore.AuditEvent{*ev}, events); diff != "" || next != "" {
		t.Errorf("audit log (-want, +got), next %q:\n%s", next, diff)
	}
}

func testRevokeKeepsFirstTime(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "r"})
	first := time.Now().Add(-time.Minute + 789*time.Nanosecond)
	ev1 := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRevoked}
	r1, err := keystore.RevokeKey(ctx, s, k.ID, first, ev1)
	if err != nil {
		t.Fatal(err)
	}
	if !r1.RevokedAt.Equal(first.Truncate(us)) || r1.ID != k.ID || r1.Hash != k.Hash {
		t.Errorf("revoked key %+v, want revoked_at %v", r1, first.Truncate(us))
	}
	ev2 := &keystore.AuditEvent{Actor: "operator", Action: keystore.ActionKeyRevoked}
	r2, err := keystore.RevokeKey(ctx, s, k.ID, time.Now(), ev2)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.RevokedAt.Equal(first.Truncate(us)) {
		t.Errorf("second revoke moved the time to %v", r2.RevokedAt)
	}
	if err := r2.Usable(time.Now()); !errors.Is(err, keystore.ErrRevoked) {
		t.Errorf("revoked key: Usable = %v, want ErrRevoked", err)
	}
	// A revoked key is still found, so a check can say why it is refused.
	if got, err := s.KeyByHash(ctx, keystore.HashKey(p)); err != nil || !got.RevokedAt.Equal(first.Truncate(us)) {
		t.Errorf("revoked key by hash: %+v, %v", got, err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRevoked})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Actor != "user_1" || events[0].Target != k.ID || events[0].Owner != "user_1" || ev2.ID != 0 {
		t.Errorf("revoke events %+v (second event id %d), want one, by user_1", events, ev2.ID)
	}
	if got, err := keystore.RevokeKey(ctx, s, "key_missing", time.Now(), nil); !errors.Is(err, keystore.ErrNotFound) || got != nil {
		t.Errorf("revoke missing: %v, %v; want nil, ErrNotFound", got, err)
	}
}

func testRoll(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	exp := time.Now().Add(48 * time.Hour).Truncate(us)
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Name: "roll me", Scopes: []string{"scans:read"}, Tier: "pro", ExpiresAt: exp})
	p2, _ := keystore.GenerateKey()
	graceEnd := time.Now().Add(time.Hour)
	ev := &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled, RequestID: "req-1", Details: map[string]any{"grace_seconds": 3600}}
	old, rolled, err := keystore.RollKey(ctx, s, k.ID, keystore.HashKey(p2), keystore.KeyHint(p2), graceEnd, ev)
	if err != nil {
		t.Fatal(err)
	}
	wantOld := *k
	wantOld.ExpiresAt, wantOld.ReplacedBy = graceEnd.Truncate(us), rolled.ID
	if diff := cmp.Diff(&wantOld, old); diff != "" {
		t.Errorf("old key (-want, +got):\n%s", diff)
	}
	wantNew := &keystore.Key{ID: rolled.ID, UserID: "user_1", OrgID: "org_1", Name: "roll me", Hash: keystore.HashKey(p2), Hint: keystore.KeyHint(p2),
		Scopes: []string{"scans:read"}, Tier: "pro", CreatedAt: rolled.CreatedAt, ExpiresAt: exp}
	if diff := cmp.Diff(wantNew, rolled); diff != "" || rolled.ID == k.ID {
		t.Errorf("rolled key (-want, +got):\n%s", diff)
	}
	if got, err := s.Key(ctx, k.ID); err != nil || !got.ExpiresAt.Equal(graceEnd.Truncate(us)) {
		t.Errorf("old key read back: %+v, %v", got, err)
	}
	if got, err := s.KeyByHash(ctx, keystore.HashKey(p2)); err != nil || got.ID != rolled.ID {
		t.Errorf("new key by hash: %+v, %v", got, err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRolled})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("roll events: %+v, want one", events)
	}
	e := events[0]
	if e.Target != k.ID || e.Owner != "org_1" || e.RequestID != "req-1" || e.Details["new_key_id"] != rolled.ID || e.Details["grace_seconds"] != float64(3600) {
		t.Errorf("roll event %+v", e)
	}
	if e.Details["old_key_expires_at"] == nil {
		t.Errorf("roll event has no old_key_expires_at: %+v", e.Details)
	}

	// A grace period past the key's own expiry does not extend it; a key
	// without expiry gives a rolled key without expiry.
	shortExp := time.Now().Add(30 * time.Minute).Truncate(us)
	_, short := create(t, s, keystore.NewKey{UserID: "user_2", Name: "short", ExpiresAt: shortExp})
	p3, _ := keystore.GenerateKey()
	old, rolled, err = keystore.RollKey(ctx, s, short.ID, keystore.HashKey(p3), keystore.KeyHint(p3), time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !old.ExpiresAt.Equal(shortExp) || !rolled.ExpiresAt.Equal(shortExp) {
		t.Errorf("roll of a key expiring first: old expires %v, new %v; want both %v", old.ExpiresAt, rolled.ExpiresAt, shortExp)
	}
	_, forever := create(t, s, keystore.NewKey{UserID: "user_2", Name: "forever"})
	p4, _ := keystore.GenerateKey()
	if _, rolled, err = keystore.RollKey(ctx, s, forever.ID, keystore.HashKey(p4), keystore.KeyHint(p4), time.Now().Add(time.Hour), nil); err != nil || !rolled.ExpiresAt.IsZero() {
		t.Errorf("roll of a key without expiry: %+v, %v", rolled, err)
	}
}

func testRollRefusesUnusableKeys(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "k"})
	_, other := create(t, s, keystore.NewKey{UserID: "user_1", Name: "other"})
	newHash := func() keystore.Hash { p, _ := keystore.GenerateKey(); return keystore.HashKey(p) }
	ev := func() *keystore.AuditEvent {
		return &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled}
	}

	// A new key under a hash already stored fails, and changes nothing.
	if _, _, err := keystore.RollKey(ctx, s, k.ID, other.Hash, "h", time.Now(), ev()); err == nil {
		t.Error("roll onto an existing hash succeeded")
	}
	if got, _ := s.Key(ctx, k.ID); !got.ExpiresAt.IsZero() {
		t.Errorf("failed roll changed the old key's expiry to %v", got.ExpiresAt)
	}

	// A roll with no grace expires the old key at once: it cannot be rolled again.
	if _, _, err := keystore.RollKey(ctx, s, k.ID, newHash(), "h", time.Now(), ev()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keystore.RollKey(ctx, s, k.ID, newHash(), "h", time.Now(), ev()); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("roll of an expired key: %v, want ErrConflict", err)
	}
	if _, err := keystore.RevokeKey(ctx, s, other.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := keystore.RollKey(ctx, s, other.ID, newHash(), "h", time.Now().Add(time.Hour), ev()); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("roll of a revoked key: %v, want ErrConflict", err)
	}
	if got, _ := s.Key(ctx, other.ID); !got.ExpiresAt.IsZero() {
		t.Errorf("refused roll changed the revoked key's expiry to %v", got.ExpiresAt)
	}
	if old, rolled, err := keystore.RollKey(ctx, s, "key_missing", newHash(), "h", time.Now(), ev()); !errors.Is(err, keystore.ErrNotFound) || old != nil || rolled != nil {
		t.Errorf("roll of a missing key: %v, want ErrNotFound", err)
	}
	keys, _, _ := s.ListKeys(ctx, keystore.ListKeysOptions{})
	events, _, _ := s.ListAudit(ctx, keystore.AuditFilter{})
	if len(keys) != 3 || len(events) != 1 {
		t.Errorf("after one successful roll: %d keys, %d audit events; want 3 and 1", len(keys), len(events))
	}
}

func testExpiry(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Hour + 456*time.Nanosecond)
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "e", ExpiresAt: exp})
	got, err := s.Key(ctx, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored := exp.Truncate(us)
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{time.Now(), nil},
		{stored.Add(-us), nil},
		{stored, keystore.ErrExpired},
		{stored.Add(time.Hour), keystore.ErrExpired},
	} {
		if err := got.Usable(tc.at); !errors.Is(err, tc.want) {
			t.Errorf("Usable(%v) = %v, want %v (expires %v)", tc.at, err, tc.want, got.ExpiresAt)
		}
	}
	// A revocation dated in the future takes effect at that time.
	revokeAt := time.Now().Add(10 * time.Minute).Truncate(us)
	r, err := keystore.RevokeKey(ctx, s, k.ID, revokeAt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Usable(revokeAt.Add(-us)); err != nil {
		t.Errorf("before its revocation time: Usable = %v", err)
	}
	if err := r.Usable(revokeAt); !errors.Is(err, keystore.ErrRevoked) {
		t.Errorf("at its revocation time: Usable = %v, want ErrRevoked", err)
	}
}

// A key in its grace period cannot be rolled again: a key has one
// successor, and the refusal names it.
func testRollOnce(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "once"})
	newHash := func() keystore.Hash { p, _ := keystore.GenerateKey(); return keystore.HashKey(p) }
	ev := func() *keystore.AuditEvent {
		return &keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled}
	}
	graceEnd := time.Now().Add(time.Hour)
	old, rolled, err := keystore.RollKey(ctx, s, k.ID, newHash(), "h", graceEnd, ev())
	if err != nil {
		t.Fatal(err)
	}
	if old.ReplacedBy != rolled.ID || rolled.ReplacedBy != "" {
		t.Errorf("after a roll: old replaced by %q, new by %q; want %q and none", old.ReplacedBy, rolled.ReplacedBy, rolled.ID)
	}
	if got, err := s.Key(ctx, k.ID); err != nil || got.ReplacedBy != rolled.ID {
		t.Errorf("old key read back: %+v, %v", got, err)
	}
	again, twice, err := keystore.RollKey(ctx, s, k.ID, newHash(), "h", time.Now(), ev())
	var already *keystore.AlreadyRolledError
	if !errors.As(err, &already) || !errors.Is(err, keystore.ErrConflict) || already.Successor != rolled.ID || again != nil || twice != nil {
		t.Fatalf("second roll in the grace period: %v (%v, %v); want an AlreadyRolledError naming %s", err, again, twice, rolled.ID)
	}
	if got, _ := s.Key(ctx, k.ID); !got.ExpiresAt.Equal(graceEnd.Truncate(us)) {
		t.Errorf("a refused roll moved the old key's expiry to %v", got.ExpiresAt)
	}
	// The successor itself can be rolled, once.
	if _, _, err := keystore.RollKey(ctx, s, rolled.ID, newHash(), "h", time.Now().Add(time.Hour), ev()); err != nil {
		t.Errorf("roll of the successor: %v", err)
	}
	keys, _, _ := s.ListKeys(ctx, keystore.ListKeysOptions{})
	events, _, _ := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRolled})
	if len(keys) != 3 || len(events) != 2 {
		t.Errorf("after two rolls and one refusal: %d keys, %d roll events; want 3 and 2", len(keys), len(events))
	}
}

// Of concurrent rolls of one key exactly one succeeds: the check and the
// change are one transaction on the key's row.
func testConcurrentRolls(t *testing.T, s keystore.Store) {
	const rollers = 8
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "raced"})
	start := make(chan struct{})
	type result struct {
		rolled *keystore.Key
		err    error
	}
	results := make(chan result, rollers)
	var wg sync.WaitGroup
	for range rollers {
		wg.Go(func() {
			p, _ := keystore.GenerateKey()
			<-start
			_, rolled, err := keystore.RollKey(ctx, s, k.ID, keystore.HashKey(p), keystore.KeyHint(p), time.Now().Add(time.Hour),
				&keystore.AuditEvent{Actor: "user_1", Action: keystore.ActionKeyRolled})
			results <- result{rolled, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	var winners []string
	var refused []*keystore.AlreadyRolledError
	for r := range results {
		var already *keystore.AlreadyRolledError
		switch {
		case r.err == nil:
			winners = append(winners, r.rolled.ID)
		case errors.As(r.err, &already):
			refused = append(refused, already)
		default:
			t.Errorf("concurrent roll: %v", r.err)
		}
	}
	if len(winners) != 1 || len(refused) != rollers-1 {
		t.Fatalf("%d concurrent rolls: %d succeeded %v, %d refused; want exactly one success", rollers, len(winners), winners, len(refused))
	}
	for _, r := range refused {
		if r.Successor != winners[0] {
			t.Errorf("a refusal names %s, the successor is %s", r.Successor, winners[0])
		}
	}
	keys, _, _ := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_1"})
	events, _, _ := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyRolled})
	if len(keys) != 2 || len(events) != 1 {
		t.Errorf("after the race: %d keys, %d roll events; want 2 and 1", len(keys), len(events))
	}
}

// KeyHashes streams the hash of every key, revoked, expired and rolled ones
// too, each once, or of the keys created since a time, and stops at the
// callback's first error.
func testKeyHashes(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	collect := func(since time.Time) map[keystore.Hash]int {
		got := map[keystore.Hash]int{}
		if err := s.KeyHashes(ctx, since, func(h keystore.Hash) error { got[h]++; return nil }); err != nil {
			t.Fatalf("KeyHashes: %v", err)
		}
		return got
	}
	if got := collect(time.Time{}); len(got) != 0 {
		t.Fatalf("empty store: %d hashes", len(got))
	}
	want := map[keystore.Hash]int{}
	for i := range 25 {
		p, k := create(t, s, keystore.NewKey{UserID: fmt.Sprintf("user_%d", i%3), Name: fmt.Sprintf("k%d", i)})
		want[keystore.HashKey(p)] = 1
		switch i % 5 {
		case 1:
			if _, err := keystore.RevokeKey(ctx, s, k.ID, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
		case 2:
			p2, _ := keystore.GenerateKey()
			if _, _, err := keystore.RollKey(ctx, s, k.ID, keystore.HashKey(p2), keystore.KeyHint(p2), time.Now(), nil); err != nil {
				t.Fatal(err)
			}
			want[keystore.HashKey(p2)] = 1
		}
	}
	if diff := cmp.Diff(want, collect(time.Time{})); diff != "" {
		t.Errorf("hashes (-want, +got):\n%s", diff)
	}
	// Since a time: the keys created from then on only (the store's clock
	// stamps created_at; a second of margin either side).
	time.Sleep(1100 * time.Millisecond)
	mark := time.Now()
	time.Sleep(1100 * time.Millisecond)
	p, _ := create(t, s, keystore.NewKey{UserID: "user_9", Name: "late"})
	if diff := cmp.Diff(map[keystore.Hash]int{keystore.HashKey(p): 1}, collect(mark)); diff != "" {
		t.Errorf("hashes since a time (-want, +got):\n%s", diff)
	}
	stop := errors.New("stop")
	n := 0
	err := s.KeyHashes(ctx, time.Time{}, func(keystore.Hash) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("a callback error: KeyHashes returned %v after %d calls, want it after 3", err, n)
	}
}
