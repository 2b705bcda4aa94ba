package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/keystore"
)

// testModifyKey changes every changeable field, then nothing: one
// key.updated event with each field's from and to, and the key as stored.
func testModifyKey(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	exp := time.Now().Add(48 * time.Hour).Truncate(us)
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "before", Scopes: []string{"scans:read", "scans:write"}, Tier: "free", ExpiresAt: exp})
	later := exp.Add(24 * time.Hour)
	by := keystore.Actor{ID: "operator", RequestID: "req-u"}
	got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Name: ptr("after"), Scopes: &[]string{"scans:read"}, Tier: ptr("pro"), ExpiresAt: &later}, time.Now(), by)
	if err != nil {
		t.Fatal(err)
	}
	want := *k
	want.Name, want.Scopes, want.Tier, want.ExpiresAt = "after", []string{"scans:read"}, "pro", later
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("updated key (-want, +got):\n%s", diff)
	}
	if byHash, err := s.KeyByHash(ctx, keystore.HashKey(p)); err != nil || !cmp.Equal(&want, byHash) {
		t.Errorf("updated key by hash: %+v, %v", byHash, err)
	}
	// The same change again changes nothing and writes no event; so does
	// an empty one. Removing the expiry is a change.
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Name: ptr("after"), Scopes: &[]string{"scans:read"}}, time.Now(), by); err != nil {
		t.Fatal(err)
	}
	never := time.Time{}
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{ExpiresAt: &never}, time.Now(), by); err != nil || !got.ExpiresAt.IsZero() {
		t.Errorf("remove the expiry: %+v, %v", got, err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: k.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d key.updated events, want 2: %+v", len(events), events)
	}
	first := events[1] // newest first
	raw, _ := json.Marshal(first.Details["changes"])
	var changes map[string]struct{ From, To any }
	if err := json.Unmarshal(raw, &changes); err != nil {
		t.Fatal(err)
	}
	wantChanges := map[string]struct{ From, To any }{
		"name":       {"before", "after"},
		"scopes":     {[]any{"scans:read", "scans:write"}, []any{"scans:read"}},
		"tier":       {"free", "pro"},
		"expires_at": {exp.UTC().Format(time.RFC3339Nano), later.UTC().Format(time.RFC3339Nano)},
	}
	if diff := cmp.Diff(wantChanges, changes); diff != "" || first.Actor != "operator" || first.RequestID != "req-u" || first.Owner != "user_1" {
		t.Errorf("key.updated event %+v; changes (-want, +got):\n%s", first, diff)
	}
	if c, _ := events[0].Details["changes"].(map[string]any); c == nil || c["expires_at"] == nil {
		t.Errorf("removing the expiry: event %+v", events[0])
	}
}

// testModifyKeyRefuses: bad values, widening when narrowing only, revoked,
// expired and unknown keys; none writes anything.
func testModifyKeyRefuses(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "k", Scopes: []string{"scans:read"}})
	past := time.Now().Add(-time.Minute)
	by := keystore.Actor{ID: "user_1"}
	for _, tc := range []struct {
		name string
		u    keystore.KeyUpdate
		want error
	}{
		{"empty name", keystore.KeyUpdate{Name: ptr("")}, keystore.ErrInvalid},
		{"bad scope", keystore.KeyUpdate{Scopes: &[]string{"BAD SCOPE"}}, keystore.ErrInvalid},
		{"bad tier", keystore.KeyUpdate{Tier: ptr("Pro!")}, keystore.ErrInvalid},
		{"past expiry", keystore.KeyUpdate{ExpiresAt: &past}, keystore.ErrInvalid},
		{"widen", keystore.KeyUpdate{Scopes: &[]string{"scans:read", "scans:write"}, NarrowScopesOnly: true}, keystore.ErrWider},
	} {
		if got, err := keystore.ModifyKey(ctx, s, k.ID, tc.u, time.Now(), by); !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: %+v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	// Narrowing (to none) is allowed.
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Scopes: &[]string{}, NarrowScopesOnly: true}, time.Now(), by); err != nil || len(got.Scopes) != 0 {
		t.Errorf("narrow to none: %+v, %v", got, err)
	}
	if _, err := keystore.RevokeKey(ctx, s, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Name: ptr("x")}, time.Now(), by); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("update a revoked key: %v, want ErrConflict", err)
	}
	_, soon := create(t, s, keystore.NewKey{UserID: "user_1", Name: "soon", ExpiresAt: time.Now().Add(time.Hour)})
	if _, err := keystore.ModifyKey(ctx, s, soon.ID, keystore.KeyUpdate{Name: ptr("x")}, time.Now().Add(2*time.Hour), by); !errors.Is(err, keystore.ErrConflict) {
		t.Errorf("update an expired key: %v, want ErrConflict", err)
	}
	if _, err := keystore.ModifyKey(ctx, s, "key_missing", keystore.KeyUpdate{Name: ptr("x")}, time.Now(), by); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("update a missing key: %v, want ErrNotFound", err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyUpdated})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Errorf("%d key.updated events, want 1 (the narrowing): %+v", len(events), events)
	}
}

// testDisable disables and enables a key: the first disabling time is
// kept, a key in the state asked for writes no event, and a revoked key
// can be neither.
func testDisable(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "k", Scopes: []string{"scans:read"}})
	by := keystore.Actor{ID: "user_1"}
	at := time.Now().Add(-time.Second)
	d, err := keystore.SetKeyDisabled(ctx, s, k.ID, true, at, by)
	if err != nil || !d.DisabledAt.Equal(at.Truncate(us)) {
		t.Fatalf("disable: %+v, %v", d, err)
	}
	if err := d.Usable(time.Now()); !errors.Is(err, keystore.ErrDisabled) {
		t.Errorf("disabled key: Usable = %v, want ErrDisabled", err)
	}
	if got, err := s.KeyByHash(ctx, keystore.HashKey(p)); err != nil || !got.DisabledAt.Equal(at.Truncate(us)) {
		t.Errorf("disabled key by hash: %+v, %v", got, err)
	}
	if again, err := keystore.SetKeyDisabled(ctx, s, k.ID, true, time.Now(), by); err != nil || !again.DisabledAt.Equal(at.Truncate(us)) {
		t.Errorf("disable again: %+v, %v; want the first time kept", again, err)
	}
	// A disabled key can still be renamed.
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Name: ptr("renamed")}, time.Now(), by); err != nil || got.DisabledAt.IsZero() {
		t.Errorf("rename a disabled key: %+v, %v", got, err)
	}
	e, err := keystore.SetKeyDisabled(ctx, s, k.ID, false, time.Now(), by)
	if err != nil || !e.DisabledAt.IsZero() || e.Usable(time.Now()) != nil {
		t.Errorf("enable: %+v, %v", e, err)
	}
	if _, err := keystore.SetKeyDisabled(ctx, s, k.ID, false, time.Now(), by); err != nil {
		t.Errorf("enable again: %v", err)
	}
	for action, want := range map[string]int{keystore.ActionKeyDisabled: 1, keystore.ActionKeyEnabled: 1} {
		events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: action, Target: k.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) != want || events[0].Actor != "user_1" {
			t.Errorf("%s events: %+v, want %d by user_1", action, events, want)
		}
	}
	if os, ok := s.(keystore.OutboxStore); ok { // each change has its webhook event
		for _, typ := range []string{keystore.ActionKeyDisabled, keystore.ActionKeyEnabled, keystore.ActionKeyUpdated} {
			if evs, _, err := os.ListOutbox(ctx, keystore.OutboxFilter{Type: typ}); err != nil || len(evs) != 1 {
				t.Errorf("%s webhook events: %d, %v; want 1", typ, len(evs), err)
			}
		}
	}
	if _, err := keystore.RevokeKey(ctx, s, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	for _, disabled := range []bool{true, false} {
		if _, err := keystore.SetKeyDisabled(ctx, s, k.ID, disabled, time.Now(), by); !errors.Is(err, keystore.ErrConflict) {
			t.Errorf("disabled=%t on a revoked key: %v, want ErrConflict", disabled, err)
		}
	}
	if _, err := keystore.SetKeyDisabled(ctx, s, "key_missing", true, time.Now(), by); !errors.Is(err, keystore.ErrNotFound) {
		t.Errorf("disable a missing key: %v, want ErrNotFound", err)
	}
}

// testRateLimit gives a key its own rate limit at creation, changes it
// and takes it away: each stored and read back exactly (by hash, by id, in
// a list), each change in a key.updated event, a rolled key keeping it,
// and bad limits refused.
func testRateLimit(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	own := &keystore.RateLimit{Rate: 0.5, Burst: 3}
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "limited", Tier: "pro", RateLimit: own})
	if !own.Equal(k.RateLimit) {
		t.Fatalf("created key's rate limit: %+v, want %+v", k.RateLimit, own)
	}
	_, plain := create(t, s, keystore.NewKey{UserID: "user_1", Name: "tier"})
	if plain.RateLimit != nil {
		t.Errorf("a key created without a rate limit has %+v", plain.RateLimit)
	}
	check := func(what string, want *keystore.RateLimit) {
		t.Helper()
		byHash, err := s.KeyByHash(ctx, keystore.HashKey(p))
		if err != nil || !want.Equal(byHash.RateLimit) {
			t.Errorf("%s: by hash %+v, %v; want %+v", what, byHash, err, want)
		}
		byID, err := s.Key(ctx, k.ID)
		if err != nil || !want.Equal(byID.RateLimit) {
			t.Errorf("%s: by id %+v, %v; want %+v", what, byID, err, want)
		}
		keys, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range keys {
			if l.ID == k.ID && !want.Equal(l.RateLimit) {
				t.Errorf("%s: listed %+v, want %+v", what, l.RateLimit, want)
			}
		}
	}
	check("created", own)
	by := keystore.Actor{ID: "operator"}
	for _, bad := range []keystore.RateLimit{{Rate: 0, Burst: 1}, {Rate: -1, Burst: 1}, {Rate: 1, Burst: 0}, {Rate: 1e6, Burst: 1}, {Rate: 1, Burst: 2e9}} {
		bad := &bad
		if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{RateLimit: &bad}, time.Now(), by); !errors.Is(err, keystore.ErrInvalid) || got != nil {
			t.Errorf("rate limit %+v: %+v, %v; want ErrInvalid", *bad, got, err)
		}
		hk, _ := keystore.GenerateKey()
		if _, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", Name: "bad", RateLimit: bad}, keystore.HashKey(hk), keystore.KeyHint(hk), nil); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("create with rate limit %+v: %v; want ErrInvalid", *bad, err)
		}
	}
	check("after the refusals", own)
	changed := &keystore.RateLimit{Rate: 1000, Burst: 50}
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{RateLimit: &changed}, time.Now(), by); err != nil || !changed.Equal(got.RateLimit) {
		t.Fatalf("change the rate limit: %+v, %v", got, err)
	}
	check("changed", changed)
	var tier *keystore.RateLimit
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{RateLimit: &tier}, time.Now(), by); err != nil || got.RateLimit != nil || got.Tier != "pro" {
		t.Fatalf("back to the tier: %+v, %v", got, err)
	}
	check("back to the tier", nil)
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{RateLimit: &tier}, time.Now(), by); err != nil {
		t.Fatal(err)
	}
	got := updatedChanges(t, s, k.ID)
	limit := func(rate float64, burst int) map[string]any {
		return map[string]any{"rate": rate, "burst": float64(burst)}
	}
	want := []any{
		map[string]any{"rate_limit": map[string]any{"from": limit(0.5, 3), "to": limit(1000, 50)}},
		map[string]any{"rate_limit": map[string]any{"from": limit(1000, 50), "to": nil}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("key.updated changes (-want, +got):\n%s", diff)
	}
	// A rolled key keeps its own limit.
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{RateLimit: &own}, time.Now(), by); err != nil {
		t.Fatal(err)
	}
	np, _ := keystore.GenerateKey()
	_, rolled, err := keystore.RollKey(ctx, s, k.ID, keystore.HashKey(np), keystore.KeyHint(np), time.Now().Add(time.Hour), nil)
	if err != nil || !own.Equal(rolled.RateLimit) {
		t.Errorf("rolled key: %+v, %v; want rate limit %+v", rolled, err, own)
	}
}

func testAllowedCIDRs(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	nets := func(ss ...string) []netip.Prefix {
		out := make([]netip.Prefix, len(ss))
		for i, p := range ss {
			out[i] = netip.MustParsePrefix(p)
		}
		return out
	}
	// Given out of order and with a duplicate: stored canonical.
	p, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "ci", AllowedCIDRs: nets("2001:db8::/32", "203.0.113.0/24", "10.0.0.0/8", "203.0.113.0/24")})
	canonical := nets("10.0.0.0/8", "203.0.113.0/24", "2001:db8::/32")
	if !slices.Equal(k.AllowedCIDRs, canonical) {
		t.Fatalf("created key's allowlist: %v, want %v", k.AllowedCIDRs, canonical)
	}
	_, plain := create(t, s, keystore.NewKey{UserID: "user_1", Name: "anywhere", AllowedCIDRs: []netip.Prefix{}})
	if plain.AllowedCIDRs != nil {
		t.Errorf("a key created with an empty allowlist has %v, want nil (any network)", plain.AllowedCIDRs)
	}
	check := func(what string, want []netip.Prefix) {
		t.Helper()
		byHash, err := s.KeyByHash(ctx, keystore.HashKey(p))
		if err != nil || !slices.Equal(byHash.AllowedCIDRs, want) {
			t.Errorf("%s: by hash %v, %v; want %v", what, byHash.AllowedCIDRs, err, want)
		}
		byID, err := s.Key(ctx, k.ID)
		if err != nil || !slices.Equal(byID.AllowedCIDRs, want) {
			t.Errorf("%s: by id %v, %v; want %v", what, byID.AllowedCIDRs, err, want)
		}
		keys, _, err := s.ListKeys(ctx, keystore.ListKeysOptions{UserID: "user_1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range keys {
			if l.ID == k.ID && !slices.Equal(l.AllowedCIDRs, want) {
				t.Errorf("%s: listed %v, want %v", what, l.AllowedCIDRs, want)
			}
		}
	}
	check("created", canonical)
	by := keystore.Actor{ID: "operator"}
	tooMany := make([]netip.Prefix, keystore.MaxAllowedCIDRs+1)
	for i := range tooMany {
		tooMany[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
	}
	for _, bad := range [][]netip.Prefix{
		nets("10.1.2.3/8"),          // host bits
		nets("::ffff:10.0.0.0/104"), // IPv4-mapped
		{{}},                        // not a network
		tooMany,
	} {
		if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{AllowedCIDRs: &bad}, time.Now(), by); !errors.Is(err, keystore.ErrInvalid) || got != nil {
			t.Errorf("allowlist %v: %v, %v; want ErrInvalid", bad, got, err)
		}
		hk, _ := keystore.GenerateKey()
		if _, err := s.CreateKey(ctx, keystore.NewKey{UserID: "user_1", Name: "bad", AllowedCIDRs: bad}, keystore.HashKey(hk), keystore.KeyHint(hk), nil); !errors.Is(err, keystore.ErrInvalid) {
			t.Errorf("create with allowlist %v: %v; want ErrInvalid", bad, err)
		}
	}
	check("after the refusals", canonical)
	narrowed := nets("203.0.113.128/25")
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{AllowedCIDRs: &narrowed}, time.Now(), by); err != nil || !slices.Equal(got.AllowedCIDRs, narrowed) {
		t.Fatalf("narrow the allowlist: %+v, %v", got, err)
	}
	check("narrowed", narrowed)
	var anyNet []netip.Prefix
	if got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{AllowedCIDRs: &anyNet}, time.Now(), by); err != nil || got.AllowedCIDRs != nil {
		t.Fatalf("remove the allowlist: %+v, %v", got, err)
	}
	check("removed", nil)
	empty := []netip.Prefix{} // the same as nil: no change, no event
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{AllowedCIDRs: &empty}, time.Now(), by); err != nil {
		t.Fatal(err)
	}
	got := updatedChanges(t, s, k.ID)
	want := []any{
		map[string]any{"allowed_cidrs": map[string]any{"from": []any{"10.0.0.0/8", "203.0.113.0/24", "2001:db8::/32"}, "to": []any{"203.0.113.128/25"}}},
		map[string]any{"allowed_cidrs": map[string]any{"from": []any{"203.0.113.128/25"}, "to": nil}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("key.updated changes (-want, +got):\n%s", diff)
	}
	// A rolled key keeps its allowlist.
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{AllowedCIDRs: &narrowed}, time.Now(), by); err != nil {
		t.Fatal(err)
	}
	np, _ := keystore.GenerateKey()
	_, rolled, err := keystore.RollKey(ctx, s, k.ID, keystore.HashKey(np), keystore.KeyHint(np), time.Now().Add(time.Hour), nil)
	if err != nil || !slices.Equal(rolled.AllowedCIDRs, narrowed) {
		t.Errorf("rolled key: %+v, %v; want allowlist %v", rolled, err, narrowed)
	}
}

// testNarrowCIDRsOnly: with NarrowCIDRsOnly, an allowlist that allows an
// address the key's current one does not (removing it, adding or growing
// a network) is ErrWiderNetworks, an ErrWider, and changes nothing;
// narrowing it, the same list, and a first allowlist on a key without one
// are made.
func testNarrowCIDRsOnly(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	by := keystore.Actor{ID: "user_1"}
	nets := func(ss ...string) *[]netip.Prefix {
		out := make([]netip.Prefix, len(ss))
		for i, p := range ss {
			out[i] = netip.MustParsePrefix(p)
		}
		return &out
	}
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "office", AllowedCIDRs: *nets("203.0.113.0/24", "2001:db8::/32")})
	modify := func(id string, cidrs *[]netip.Prefix) (*keystore.Key, error) {
		return keystore.ModifyKey(ctx, s, id, keystore.KeyUpdate{AllowedCIDRs: cidrs, NarrowCIDRsOnly: true}, time.Now(), by)
	}
	if got, err := modify(k.ID, nets("203.0.113.0/25", "2001:db8::/32")); err != nil || len(got.AllowedCIDRs) != 2 {
		t.Fatalf("narrowed: %+v, %v", got, err)
	}
	if _, err := modify(k.ID, nets("2001:db8::/32", "203.0.113.0/25")); err != nil {
		t.Fatalf("the same list: %v", err)
	}
	for name, wider := range map[string]*[]netip.Prefix{
		"removed":       {},
		"removed (nil)": new([]netip.Prefix),
		"an address":    nets("203.0.113.0/25", "2001:db8::/32", "198.51.100.7/32"),
		"grown":         nets("203.0.113.0/24", "2001:db8::/32"),
	} {
		if got, err := modify(k.ID, wider); !errors.Is(err, keystore.ErrWiderNetworks) || !errors.Is(err, keystore.ErrWider) || got != nil {
			t.Errorf("%s: %+v, %v; want ErrWiderNetworks", name, got, err)
		}
	}
	if cur, err := s.Key(ctx, k.ID); err != nil || !slices.Equal(cur.AllowedCIDRs, *nets("203.0.113.0/25", "2001:db8::/32")) {
		t.Errorf("after the refused widenings: %+v, %v", cur, err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: k.ID})
	if err != nil || len(events) != 1 {
		t.Errorf("%d key.updated events (%v), want 1: the narrowing", len(events), err)
	}
	_, open := create(t, s, keystore.NewKey{UserID: "user_1", Name: "open"})
	if got, err := modify(open.ID, nets("192.0.2.0/24")); err != nil || len(got.AllowedCIDRs) != 1 {
		t.Errorf("a first allowlist: %+v, %v", got, err)
	}
}

// A scope given twice is granted once, at creation and in a change.
func testDuplicateScopes(t *testing.T, s keystore.Store) {
	ctx := context.Background()
	_, k := create(t, s, keystore.NewKey{UserID: "user_1", Name: "twice", Scopes: []string{"scans:read", "scans:write", "scans:read"}})
	if want := []string{"scans:read", "scans:write"}; !slices.Equal(k.Scopes, want) {
		t.Errorf("created with a scope twice: %q, want %q", k.Scopes, want)
	}
	scopes := []string{"scans:write", "scans:write"}
	got, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Scopes: &scopes}, time.Now(), keystore.Actor{ID: "operator"})
	if err != nil || !slices.Equal(got.Scopes, []string{"scans:write"}) {
		t.Errorf("changed to a scope twice: %+v, %v", got, err)
	}
	same := []string{"scans:write", "scans:write"} // no change: no event
	if _, err := keystore.ModifyKey(ctx, s, k.ID, keystore.KeyUpdate{Scopes: &same}, time.Now(), keystore.Actor{ID: "operator"}); err != nil {
		t.Fatal(err)
	}
	events, _, err := s.ListAudit(ctx, keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: k.ID})
	if err != nil || len(events) != 1 {
		t.Errorf("key.updated events: %d, %v; want 1", len(events), err)
	}
}

// updatedChanges are the "changes" of key id's key.updated events, oldest
// first, as JSON reads them back (numbers as float64).
func updatedChanges(t *testing.T, s keystore.Store, id string) []any {
	t.Helper()
	events, _, err := s.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: id})
	if err != nil {
		t.Fatal(err)
	}
	var got []any
	for i := len(events) - 1; i >= 0; i-- {
		raw, _ := json.Marshal(events[i].Details["changes"])
		var c map[string]any
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
	return got
}
