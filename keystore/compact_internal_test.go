package keystore

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// mapStore is a store of keys in a map, with a count of lookups: the
// cache's own behaviour without a database.
type mapStore struct {
	Store
	mu      sync.Mutex
	keys    map[Hash]*Key
	lookups atomic.Int64
}

func (s *mapStore) KeyByHash(_ context.Context, h Hash) (*Key, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[h]
	if !ok {
		return nil, ErrNotFound
	}
	c := *k // what a store returns is the caller's
	c.Scopes = append([]string(nil), k.Scopes...)
	return &c, nil
}

func (s *mapStore) set(k *Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[Hash]*Key{}
	}
	s.keys[k.Hash] = k
}

func testKey(i int) *Key {
	return &Key{ID: "key_" + strings.Repeat("x", 16) + string(rune('A'+i%26)) + string(rune('a'+i/26%26)) + string(rune('0'+i/676%10)) + string(rune('0'+i/6760%10)),
		UserID: "user_" + string(rune('a'+i%7)), Hash: randomHash(), Name: "a name", Hint: "odin_sk_abcd…wxyz",
		Scopes: []string{"scans:read", "scans:write"}, Tier: "pro", CreatedAt: time.Now()}
}

// scopesPrepare makes an entry carry the key's scopes, as a principal does.
func scopesPrepare(k *Key) string { return k.ID + " " + strings.Join(k.Scopes, ",") + " " + k.Tier }

func newTestCache(t *testing.T, s Store, opts CacheOptions) *Cache[string] {
	t.Helper()
	c, err := NewCache(s, nil, opts, scopesPrepare, NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSlotIsSmall(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != 192 {
		t.Errorf("a compact record is %d bytes, want 192", got)
	}
}

// The record keeps what a check needs and nothing else, and hands back
// what it was given.
func TestCompactRecordRoundTrip(t *testing.T) {
	ck, err := newCompactKeys(10)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	long := strings.Repeat("o", 120)
	for _, k := range []*Key{
		{ID: "key_0123456789ABCDEFGHij", UserID: "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", OrgID: "org_2abc", Scopes: []string{"a", "b"}, Tier: "pro", ExpiresAt: exp},
		{ID: "some-other-id", OrgID: long, Scopes: []string{}, Tier: "", RevokedAt: exp},                           // too long for the record: kept aside
		{ID: "k3", UserID: "u", Scopes: nil, Tier: "free", ExpiresAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}, // past int64 nanoseconds
		{ID: "k4", UserID: "u", Scopes: []string{"a"}, Tier: "free", DisabledAt: DisabledSince},                    // whether, not when
	} {
		k.Hash = randomHash()
		ck.put(k.Hash, k, keyMeta{ver: 7, until: 1, stale: 2})
		got, m, ok := ck.view(k.Hash)
		if !ok {
			t.Fatalf("%s: not found", k.ID)
		}
		want := *k
		if want.ExpiresAt.Year() == 9999 { // clamped: it only comes sooner
			want.ExpiresAt = time.Unix(0, math.MaxInt64).UTC()
		}
		if diff := cmp.Diff(&want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", k.ID, diff)
		}
		if (got.Scopes == nil) != (k.Scopes == nil) {
			t.Errorf("%s: scopes %#v, want %#v", k.ID, got.Scopes, k.Scopes)
		}
		if m.ver != 7 || m.until != 1 || m.stale != 2 || m.disabled != !k.DisabledAt.IsZero() {
			t.Errorf("%s: meta %+v", k.ID, m)
		}
	}
	if ck.len() != 4 {
		t.Errorf("len %d, want 4", ck.len())
	}
}

func TestNanos(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Time{}, 0},
		{time.Unix(0, 0), -1}, // not "never"
		{time.Unix(0, 5), 5},
		{time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
	} {
		if got := nanos(tc.t); got != tc.want {
			t.Errorf("nanos(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
}

// Keys with the same scopes and tier share one copy, and the copy goes
// when the last of them does.
func TestInternedValuesShared(t *testing.T) {
	ck, err := newCompactKeys(100)
	if err != nil {
		t.Fatal(err)
	}
	a, b := testKey(1), testKey(2)
	b.Scopes = []string{"scans:read", "scans:write"} // equal, not the same slice
	ck.put(a.Hash, a, keyMeta{})
	ck.put(b.Hash, b, keyMeta{})
	ka, _, _ := ck.view(a.Hash)
	kb, _, _ := ck.view(b.Hash)
	if &ka.Scopes[0] != &kb.Scopes[0] || unsafe.StringData(ka.Tier) != unsafe.StringData(kb.Tier) {
		t.Error("two keys with the same scopes and tier hold two copies")
	}
	if &ka.Scopes[0] == &a.Scopes[0] {
		t.Error("the interned scopes are the caller's slice")
	}
	if ck.scopes.len() != 1 || ck.tiers.len() != 1 {
		t.Errorf("%d scope lists and %d tiers interned, want 1 and 1", ck.scopes.len(), ck.tiers.len())
	}
	c := testKey(3)
	c.Scopes, c.Tier = []string{"admin"}, "enterprise"
	ck.put(c.Hash, c, keyMeta{})
	if ck.scopes.len() != 2 || ck.tiers.len() != 2 {
		t.Errorf("%d scope lists and %d tiers interned, want 2 and 2", ck.scopes.len(), ck.tiers.len())
	}
	ck.remove(c.Hash)
	ck.remove(a.Hash)
	if ck.scopes.len() != 1 || ck.tiers.len() != 1 {
		t.Errorf("after removals: %d scope lists and %d tiers interned, want 1 and 1", ck.scopes.len(), ck.tiers.len())
	}
	ck.purge()
	if ck.scopes.len() != 0 || ck.tiers.len() != 0 || ck.len() != 0 {
		t.Errorf("after purge: %d scope lists, %d tiers, %d records", ck.scopes.len(), ck.tiers.len(), ck.len())
	}
	// Lists that only a naive join would confuse stay apart.
	if scopesKey([]string{"a,b"}) == scopesKey([]string{"a", "b"}) || scopesKey(nil) == scopesKey([]string{}) {
		t.Error("scopesKey is not injective")
	}
}

// The table holds at most its limit, evicts a key not read since the hand
// last passed, and stays consistent with a map under random operations
// (backward-shift deletion).
func TestCompactKeysAgainstAMap(t *testing.T) {
	for _, size := range []int{1, 7, 3000, 20000} { // 20000: several shards
		ck, err := newCompactKeys(size)
		if err != nil {
			t.Fatal(err)
		}
		model := map[Hash]uint64{}
		var hashes []Hash
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for i := range 4 * size {
			switch op := rng.IntN(10); {
			case op < 7 || len(hashes) == 0:
				k := testKey(i)
				ck.put(k.Hash, k, keyMeta{ver: uint64(i)})
				model[k.Hash] = uint64(i)
				hashes = append(hashes, k.Hash)
			case op < 9:
				h := hashes[rng.IntN(len(hashes))]
				ck.remove(h)
				delete(model, h)
			default: // overwrite
				h := hashes[rng.IntN(len(hashes))]
				k := testKey(i)
				ck.put(h, k, keyMeta{ver: uint64(i)})
				model[h] = uint64(i)
			}
			if ck.len() > size {
				t.Fatalf("size %d: %d records held", size, ck.len())
			}
		}
		// Every record held is the model's; the model's others were evicted.
		held := 0
		for h, ver := range model {
			if v, ok := ck.version(h); ok {
				held++
				if v != ver {
					t.Fatalf("size %d: version %d, want %d", size, v, ver)
				}
			}
		}
		if held != ck.len() {
			t.Fatalf("size %d: %d of the model's keys found, len %d", size, held, ck.len())
		}
		if want := min(size, len(model)); held < want*95/100 {
			t.Errorf("size %d: holds %d, want about %d", size, held, want)
		}
	}
}

// Filling the cache with exactly Size keys evicts none, whatever shard
// each falls in.
func TestCompactKeysHoldTheirSize(t *testing.T) {
	const size = 100_000
	ck, err := newCompactKeys(size)
	if err != nil {
		t.Fatal(err)
	}
	k := testKey(0)
	for range size {
		ck.put(randomHash(), k, keyMeta{})
	}
	if ck.len() != size {
		t.Fatalf("len %d after %d puts, want %d", ck.len(), size, size)
	}
	ck.put(randomHash(), k, keyMeta{})
	if ck.len() != size {
		t.Fatalf("len %d after one more, want %d", ck.len(), size)
	}
}

// A key read since the hand last passed is spared; one not read goes.
func TestCompactEvictionSparesUsedKeys(t *testing.T) {
	ck, err := newCompactKeys(3)
	if err != nil {
		t.Fatal(err)
	}
	k := [4]*Key{testKey(0), testKey(1), testKey(2), testKey(3)}
	for _, x := range k[:3] {
		ck.put(x.Hash, x, keyMeta{})
	}
	ck.view(k[0].Hash)
	ck.view(k[2].Hash)
	ck.put(k[3].Hash, k[3], keyMeta{})
	for i, want := range []bool{true, false, true, true} {
		if _, ok := ck.version(k[i].Hash); ok != want {
			t.Errorf("key %d held = %v, want %v", i, ok, want)
		}
	}
}

// A cached key outside the hot tier is rendered from its record on its
// check, with no store query, and is hot after.
func TestHotTierEvictionRendersFromRecord(t *testing.T) {
	s := &mapStore{}
	a, b := testKey(1), testKey(2)
	s.set(a)
	s.set(b)
	c := newTestCache(t, s, CacheOptions{HotSize: 1, TTL: time.Minute})
	ctx, now := context.Background(), time.Now()
	for _, k := range []*Key{a, b} {
		if _, err := c.Lookup(ctx, k.Hash, now); err != nil {
			t.Fatal(err)
		}
	}
	if c.hot.Contains(a.Hash) || c.Len() != 2 {
		t.Fatalf("hot holds a: %v, len %d: want b only hot, both cached", c.hot.Contains(a.Hash), c.Len())
	}
	e, err := c.Lookup(ctx, a.Hash, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Prepared(), scopesPrepare(a); got != want || e.ID() != a.ID {
		t.Errorf("rendered %q (id %s), want %q", got, e.ID(), want)
	}
	if n := s.lookups.Load(); n != 2 {
		t.Errorf("%d store lookups, want 2 (the render reads the record)", n)
	}
	if e2, _ := c.Lookup(ctx, a.Hash, now); e2 != e {
		t.Error("the rendered entry is not hot")
	}
}

// A disabled key's entry, loaded or rendered from its compact record,
// says so.
func TestDisabledKeyRendersDisabled(t *testing.T) {
	s := &mapStore{}
	a, b := testKey(1), testKey(2)
	a.DisabledAt = time.Now()
	s.set(a)
	s.set(b)
	c := newTestCache(t, s, CacheOptions{HotSize: 1, TTL: time.Minute})
	ctx, now := context.Background(), time.Now()
	for _, k := range []*Key{a, b} {
		e, err := c.Lookup(ctx, k.Hash, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Usable(now), map[bool]error{true: ErrDisabled}[k == a]; got != want {
			t.Errorf("%s loaded: Usable = %v, want %v", k.ID, got, want)
		}
	}
	if c.hot.Contains(a.Hash) {
		t.Fatal("a is still hot")
	}
	e, err := c.Lookup(ctx, a.Hash, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Usable(now); err != ErrDisabled {
		t.Errorf("rendered from the record: Usable = %v, want ErrDisabled", err)
	}
}

// Size bounds every tier: the hot tier is no larger than Size, and a key
// the limit evicts from the records leaves the hot tier with it, so a
// cache of Size keys cycled through by more keys reads each again.
func TestSizeBoundsTheHotTier(t *testing.T) {
	s := &mapStore{}
	keys := []*Key{testKey(1), testKey(2), testKey(3)}
	for _, k := range keys {
		s.set(k)
	}
	c := newTestCache(t, s, CacheOptions{Size: 2, HotSize: 100, TTL: time.Minute})
	if got := c.Options().HotSize; got != 2 {
		t.Errorf("HotSize %d with Size 2, want 2", got)
	}
	ctx, now := context.Background(), time.Now()
	for range 2 {
		for _, k := range keys {
			if _, err := c.Lookup(ctx, k.Hash, now); err != nil {
				t.Fatal(err)
			}
			if c.Len() > 2 || c.hot.Len() > 2 {
				t.Fatalf("%d records, %d hot: over Size 2", c.Len(), c.hot.Len())
			}
			for _, h := range c.hot.Keys() {
				if _, ok := c.keys.version(h); !ok {
					t.Fatal("a hot entry outlived its key's record")
				}
			}
		}
	}
	if n := s.lookups.Load(); n != 6 {
		t.Errorf("%d store lookups cycling 3 keys twice through a cache of 2, want 6", n)
	}
}

// Invalidate drops a key from both tiers: the next check reads the store.
func TestInvalidateDropsBothTiers(t *testing.T) {
	s := &mapStore{}
	a := testKey(1)
	s.set(a)
	c := newTestCache(t, s, CacheOptions{TTL: time.Minute})
	ctx, now := context.Background(), time.Now()
	if _, err := c.Lookup(ctx, a.Hash, now); err != nil {
		t.Fatal(err)
	}
	revoked := *a
	revoked.RevokedAt = now.Add(-time.Second)
	s.set(&revoked)
	c.Invalidate(Invalidation{Kind: InvalidateKey, Hash: a.Hash})
	if c.hot.Contains(a.Hash) || c.Len() != 0 {
		t.Fatal("the key is still cached after its invalidation")
	}
	e, err := c.Lookup(ctx, a.Hash, now)
	if err != nil || e.Usable(now) != ErrRevoked {
		t.Fatalf("after invalidation: %v, %v; want the revoked key", e, err)
	}
	if n := s.lookups.Load(); n != 2 {
		t.Errorf("%d store lookups, want 2", n)
	}
	c.Invalidate(Invalidation{Kind: InvalidateAll})
	if c.hot.Len() != 0 || c.Len() != 0 || c.keys.scopes.len() != 0 {
		t.Error("InvalidateAll left something cached")
	}
}

// A key whose scopes change between loads answers with the new ones, from
// the hot tier and from a render alike.
func TestScopesChangeBetweenLoads(t *testing.T) {
	s := &mapStore{}
	a, other := testKey(1), testKey(2)
	s.set(a)
	s.set(other)
	c := newTestCache(t, s, CacheOptions{HotSize: 1, TTL: time.Minute})
	ctx, now := context.Background(), time.Now()
	if _, err := c.Lookup(ctx, a.Hash, now); err != nil {
		t.Fatal(err)
	}
	changed := *a
	changed.Scopes, changed.Tier = []string{"admin"}, "enterprise"
	s.set(&changed)
	c.Invalidate(Invalidation{Kind: InvalidateKey, Hash: a.Hash})
	check := func(how string) {
		t.Helper()
		e, err := c.Lookup(ctx, a.Hash, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Prepared(), scopesPrepare(&changed); got != want {
			t.Errorf("%s: %q, want %q", how, got, want)
		}
	}
	check("loaded")
	if _, err := c.Lookup(ctx, other.Hash, now); err != nil { // evicts a from the hot tier
		t.Fatal(err)
	}
	check("rendered")
	check("hot")
}

// A render that read a record before a fill replaced it does not put its
// older entry in the hot tier.
func TestRenderLosesToALaterFill(t *testing.T) {
	s := &mapStore{}
	a := testKey(1)
	s.set(a)
	c := newTestCache(t, s, CacheOptions{TTL: time.Minute})
	now := time.Now()
	until := now.Add(time.Minute).UnixNano()
	if _, err := c.fill(a.Hash, a, until, 0, c.gen.Load()); err != nil {
		t.Fatal(err)
	}
	c.hot.Remove(a.Hash)
	// Interleave: the render reads the record, a fill replaces it, then the
	// render would keep what it read.
	old, m, _ := c.keys.view(a.Hash)
	changed := *a
	changed.Scopes = []string{"admin"}
	fresh, _ := c.fill(a.Hash, &changed, until, 0, c.gen.Load())
	stale := &Entry[string]{id: old.ID, until: m.until, ver: m.ver, prepared: scopesPrepare(old)}
	c.fillMu.Lock()
	if v, ok := c.keys.version(a.Hash); ok && v == stale.ver {
		c.hot.Add(a.Hash, stale)
	}
	c.fillMu.Unlock()
	if e, _ := c.hot.Peek(a.Hash); e != fresh {
		t.Fatalf("hot tier holds %q, want the later fill's %q", e.Prepared(), fresh.Prepared())
	}
	if e := c.cached(a.Hash, now.UnixNano()); e.Prepared() != scopesPrepare(&changed) {
		t.Errorf("cached %q", e.Prepared())
	}
}

// A fill that began before an invalidation leaves neither tier holding
// what it read.
func TestFillAfterInvalidationKeepsNothing(t *testing.T) {
	s := &mapStore{}
	a := testKey(1)
	c := newTestCache(t, s, CacheOptions{TTL: time.Minute})
	gen := c.gen.Load()
	c.Invalidate(Invalidation{Kind: InvalidateKey, Hash: a.Hash})
	e, err := c.fill(a.Hash, a, time.Now().Add(time.Minute).UnixNano(), 0, gen)
	if err != nil || e.ID() != a.ID {
		t.Fatalf("the fill's answer: %v, %v", e, err)
	}
	if c.hot.Contains(a.Hash) || c.Len() != 0 {
		t.Error("a fill older than an invalidation was cached")
	}
}

// A key's own rate limit rides in its record's interned tier, exactly.
func TestCompactRateLimit(t *testing.T) {
	c, err := newCompactKeys(16)
	if err != nil {
		t.Fatal(err)
	}
	for i, rl := range []*RateLimit{nil, {Rate: 0.1, Burst: 1}, {Rate: 1.0 / 3, Burst: 7}, {Rate: MaxRateLimitRate, Burst: MaxRateLimitBurst}} {
		h := Hash{byte(i + 1)}
		c.put(h, &Key{ID: "key_" + string(rune('a'+i)), UserID: "user_1", Tier: "pro", RateLimit: rl}, keyMeta{ver: 1})
		k, _, ok := c.view(h)
		if !ok || k.Tier != "pro" || !rl.Equal(k.RateLimit) {
			t.Errorf("record of a key with rate limit %+v: %+v", rl, k)
		}
	}
}

// A key's allowlist rides in its record's interned tier, with or without
// its own rate limit, exactly.
func TestCompactAllowedCIDRs(t *testing.T) {
	c, err := newCompactKeys(16)
	if err != nil {
		t.Fatal(err)
	}
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	for i, k := range []*Key{
		{Tier: "pro", AllowedCIDRs: nets[:1]},
		{Tier: "pro", AllowedCIDRs: nets},
		{Tier: "free", AllowedCIDRs: nets[2:], RateLimit: &RateLimit{Rate: 0.25, Burst: 4}},
		{Tier: "free", RateLimit: &RateLimit{Rate: 2, Burst: 4}},
		{Tier: "free"},
	} {
		h := Hash{byte(i + 1)}
		k.ID, k.UserID = "key_"+string(rune('a'+i)), "user_1"
		c.put(h, k, keyMeta{ver: 1})
		got, _, ok := c.view(h)
		if !ok || got.Tier != k.Tier || !k.RateLimit.Equal(got.RateLimit) || !slices.Equal(got.AllowedCIDRs, k.AllowedCIDRs) {
			t.Errorf("record of %+v: %+v", k, got)
		}
		if (got.AllowedCIDRs == nil) != (k.AllowedCIDRs == nil) {
			t.Errorf("record of %+v: allowlist %#v", k, got.AllowedCIDRs)
		}
	}
}

// A webhook event shows a key's allowlist as the API does: strings in
// CIDR notation, and nothing for any network.
func TestWebhookKeyAllowlist(t *testing.T) {
	k := &Key{ID: "key_a", UserID: "user_1", AllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")}}
	b, err := json.Marshal(webhookKeyOf(k))
	if err != nil || !strings.Contains(string(b), `"allowed_cidrs":["10.0.0.0/8","2001:db8::1/128"]`) {
		t.Errorf("webhook key: %s, %v", b, err)
	}
	k.AllowedCIDRs = nil
	if b, _ := json.Marshal(webhookKeyOf(k)); strings.Contains(string(b), "allowed_cidrs") {
		t.Errorf("webhook key of a key without an allowlist: %s", b)
	}
}
