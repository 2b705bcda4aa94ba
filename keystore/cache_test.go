package keystore_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// countingStore is the real PostgreSQL store with a count of lookups.
type countingStore struct {
	*pgstore.Store
	lookups   atomic.Int64
	hashReads atomic.Int64
	delay     time.Duration // before the read
	// answerDelay holds the first lookup's answer back after the read, as
	// a slow network does.
	answerDelay time.Duration
}

func (s *countingStore) KeyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	n := s.lookups.Add(1)
	time.Sleep(s.delay)
	k, err := s.Store.KeyByHash(ctx, h)
	if n == 1 {
		time.Sleep(s.answerDelay)
	}
	return k, err
}

// KeyHashes counts the key filter's reads (builds and catch-ups).
func (s *countingStore) KeyHashes(ctx context.Context, since time.Time, fn func(keystore.Hash) error) error {
	s.hashReads.Add(1)
	return s.Store.KeyHashes(ctx, since, fn)
}

func newStore(t *testing.T) *countingStore {
	t.Helper()
	s := testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{})
	return &countingStore{Store: s}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newCache(t *testing.T, store keystore.Store, rd *keystore.Redis, opts keystore.CacheOptions) (*keystore.Cache[struct{}], *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := keystore.NewCache(store, rd, opts, keystore.NoPrepare, keystore.NewMetrics(reg), quiet())
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

// A burst of concurrent checks of one uncached key makes one store query.
func TestConcurrentMissesCollapse(t *testing.T) {
	store := newStore(t)
	store.delay = 20 * time.Millisecond // keep the first query in flight while the others arrive
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	plaintext, k, err := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "burst"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newCache(t, store, nil, keystore.CacheOptions{})
	h := keystore.HashKey(plaintext)
	var wg sync.WaitGroup
	var bad atomic.Int64
	start := make(chan struct{})
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			e, err := c.Lookup(context.Background(), h, time.Now())
			if err != nil || e.ID() != k.ID {
				bad.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d lookups failed", bad.Load())
	}
	if n := store.lookups.Load(); n != 1 {
		t.Fatalf("1000 concurrent lookups made %d store queries, want 1", n)
	}
}

// Unknown keys are cached negatively: a flood of one unknown key costs one
// query per negative TTL.
func TestNegativeCaching(t *testing.T) {
	store := newStore(t)
	c, reg := newCache(t, store, nil, keystore.CacheOptions{NegativeTTL: 200 * time.Millisecond})
	unknown, _ := keystore.GenerateKey()
	h := keystore.HashKey(unknown)
	for range 100 {
		if _, err := c.Lookup(context.Background(), h, time.Now()); err != keystore.ErrNotFound {
			t.Fatalf("unknown key: %v, want ErrNotFound", err)
		}
	}
	if n := store.lookups.Load(); n != 1 {
		t.Fatalf("100 lookups of an unknown key made %d queries, want 1", n)
	}
	time.Sleep(250 * time.Millisecond)
	_, _ = c.Lookup(context.Background(), h, time.Now())
	if n := store.lookups.Load(); n != 2 {
		t.Fatalf("after the negative TTL: %d queries, want 2", n)
	}
	if got := counterValue(t, reg, "odin_keystore_store_queries_total", "not_found"); got != 2 {
		t.Errorf("not_found queries metric = %v", got)
	}
}

// series gathers reg and returns the series of its metric family name
// (none when reg has no such family).
func series(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// counterValue reads one labelled counter from a registry.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	for _, m := range series(t, reg, name) {
		for _, l := range m.GetLabel() {
			if l.GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Every cached entry ends within the TTL even if no invalidation arrives:
// the bound documented as the revocation safety net.
func TestTTLBoundsAStaleEntry(t *testing.T) {
	store := newStore(t)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	plaintext, k, _ := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "ttl"})
	c, _ := newCache(t, store, nil, keystore.CacheOptions{TTL: 300 * time.Millisecond})
	h := keystore.HashKey(plaintext)
	if _, err := c.Lookup(context.Background(), h, time.Now()); err != nil {
		t.Fatal(err)
	}
	// Revoke behind the cache's back (no bus): the LRU still says usable…
	if _, err := keystore.RevokeKey(context.Background(), store, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	e, _ := c.Lookup(context.Background(), h, time.Now())
	if e.Usable(time.Now()) != nil {
		t.Fatal("expected the stale cached entry before the TTL")
	}
	// …until the TTL ends it.
	time.Sleep(350 * time.Millisecond)
	e, err := c.Lookup(context.Background(), h, time.Now())
	if err != nil || e.Usable(time.Now()) != keystore.ErrRevoked {
		t.Fatalf("after TTL: %v, %v; want the revoked key", e, err)
	}
}

// A load that read PostgreSQL before a revoke must not put its stale result
// into the LRU after the invalidation for that revoke was handled.
func TestInvalidationDuringLoadWins(t *testing.T) {
	store := newStore(t)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	plaintext, k, _ := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "race"})
	store.lookups.Store(0)
	store.answerDelay = 100 * time.Millisecond // read before the revoke, answered after it
	c, _ := newCache(t, store, nil, keystore.CacheOptions{})
	h := keystore.HashKey(plaintext)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Lookup(context.Background(), h, time.Now()) // reads "active", answers slowly
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := keystore.RevokeKey(context.Background(), store, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	c.Invalidate(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: h})
	<-done
	e, err := c.Lookup(context.Background(), h, time.Now())
	if err != nil || e.Usable(time.Now()) != keystore.ErrRevoked {
		t.Fatalf("after invalidation: key usable = %v (%v); the stale load was cached", e.Usable(time.Now()), err)
	}
}

// A lookup that begins after an invalidation does not join a load that
// began before it: that load may have read the key as it was before the
// change, and the change has been acknowledged (a revoke answered 200)
// by the time the new lookup runs.
func TestLookupAfterInvalidationJoinsNoEarlierLoad(t *testing.T) {
	store := newStore(t)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	plaintext, k, _ := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "race"})
	store.lookups.Store(0)
	store.answerDelay = 200 * time.Millisecond // the first load has read and is still answering when the second lookup begins
	c, _ := newCache(t, store, nil, keystore.CacheOptions{})
	h := keystore.HashKey(plaintext)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Lookup(context.Background(), h, time.Now()) // reads "active", answers slowly
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := keystore.RevokeKey(context.Background(), store, k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	c.Invalidate(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: h})
	e, err := c.Lookup(context.Background(), h, time.Now()) // the first load is still answering
	<-done
	if err != nil || e.Usable(time.Now()) != keystore.ErrRevoked {
		t.Fatalf("a lookup after the invalidation: key usable = %v (%v); it shared the load begun before", e.Usable(time.Now()), err)
	}
}

// Redis is the second tier: a second replica's cache finds the key there
// without a PostgreSQL query.
func TestRedisTierServesOtherReplicas(t *testing.T) {
	store := newStore(t)
	url, prefix := testenv.Redis(t)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	plaintext, _, err := keystore.NewManager(store, rd, keystore.ManagerOptions{}).Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "redis"})
	if err != nil {
		t.Fatal(err)
	}
	h := keystore.HashKey(plaintext)
	c1, _ := newCache(t, store, rd, keystore.CacheOptions{})
	c2, reg2 := newCache(t, store, rd, keystore.CacheOptions{})
	for _, c := range []*keystore.Cache[struct{}]{c1, c2} {
		if _, err := c.Lookup(context.Background(), h, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.lookups.Load(); n != 0 {
		t.Fatalf("store queried %d times; the manager wrote the key to Redis at creation", n)
	}
	if got := counterValue(t, reg2, "odin_keystore_lookups_total", "redis"); got != 1 {
		t.Errorf("redis tier hits = %v, want 1", got)
	}
}

// gatedStore holds the lookups of one hash until released, so a test can
// keep one lookup in flight while others run.
type gatedStore struct {
	*countingStore
	slow    keystore.Hash
	release chan struct{}
}

func (s *gatedStore) KeyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	if h == s.slow {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.countingStore.KeyByHash(ctx, h)
}

// A lookup that times out after a later one succeeded does not declare the
// store down: PostgreSQL was slow, has recovered, and misses keep reaching
// it instead of failing fast for the backoff.
func TestLateTimeoutAfterRecoveryStartsNoBackoff(t *testing.T) {
	base := newStore(t)
	mgr := keystore.NewManager(base, nil, keystore.ManagerOptions{})
	var keys []string
	for i := range 3 {
		k, _, err := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "k" + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	store := &gatedStore{countingStore: base, slow: keystore.HashKey(keys[0]), release: make(chan struct{})}
	c, reg := newCache(t, store, nil, keystore.CacheOptions{StoreTimeout: 300 * time.Millisecond})

	slow := make(chan error, 1)
	go func() { // sent while the store is "slow": times out after 300 ms
		_, err := c.Lookup(context.Background(), keystore.HashKey(keys[0]), time.Now())
		slow <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Lookup(context.Background(), keystore.HashKey(keys[1]), time.Now()); err != nil {
		t.Fatalf("a lookup after the store recovered: %v", err)
	}
	if err := <-slow; err != keystore.ErrUnavailable {
		t.Fatalf("the slow lookup: %v, want ErrUnavailable", err)
	}
	if _, err := c.Lookup(context.Background(), keystore.HashKey(keys[2]), time.Now()); err != nil {
		t.Fatalf("a miss right after the late timeout: %v, want the key (no backoff)", err)
	}
	if got := counterValue(t, reg, "odin_keystore_store_queries_total", "error"); got != 1 {
		t.Errorf("error queries = %v, want 1 (the timeout is still counted)", got)
	}
	close(store.release)
}

// A key's allowlist reaches the cache's prepare whichever tier answers:
// PostgreSQL, another replica's Redis record, or the compact record of a
// key that has left the hot tier.
func TestAllowlistInEveryTier(t *testing.T) {
	store := newStore(t)
	url, prefix := testenv.Redis(t)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	nets, err := keystore.ParseCIDRs([]string{"2001:db8::/32", "198.51.100.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	m := keystore.NewManager(store, rd, keystore.ManagerOptions{})
	ctx := context.Background()
	plaintext, _, err := m.Create(ctx, keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "ci", AllowedCIDRs: nets})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := m.Create(ctx, keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	prepare := func(k *keystore.Key) []netip.Prefix { return k.AllowedCIDRs }
	lookup := func(c *keystore.Cache[[]netip.Prefix], what string) {
		t.Helper()
		e, err := c.Lookup(ctx, keystore.HashKey(plaintext), time.Now())
		if err != nil || !slices.Equal(e.Prepared(), nets) {
			t.Errorf("%s: allowlist %v, %v; want %v", what, e, err, nets)
		}
	}
	fromRedis, err := keystore.NewCache(store, rd, keystore.CacheOptions{HotSize: 1}, prepare, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	lookup(fromRedis, "from Redis")
	if n := store.lookups.Load(); n != 0 {
		t.Fatalf("store queried %d times; the key should have come from Redis", n)
	}
	if _, err := fromRedis.Lookup(ctx, keystore.HashKey(other), time.Now()); err != nil { // evicts it from the hot tier
		t.Fatal(err)
	}
	lookup(fromRedis, "from the compact record")
	fromStore, err := keystore.NewCache(store, nil, keystore.CacheOptions{}, prepare, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	lookup(fromStore, "from PostgreSQL")
}
