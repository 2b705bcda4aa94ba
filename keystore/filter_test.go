package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// replica is a Cache wired to its own bus end as odin authz wires it: the
// bus's fence, the key filter and its builder running.
type replica struct {
	cache *keystore.Cache[struct{}]
	bus   *keystore.Bus
	reg   *prometheus.Registry
}

func startReplica(t *testing.T, store keystore.Store, redisURL, prefix string, opts keystore.CacheOptions) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	m := keystore.NewMetrics(reg)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: redisURL, Prefix: prefix, MACSecret: testenv.RedisMACSecret, Timeout: 500 * time.Millisecond}, m, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	bus := rd.NewBus(keystore.NewReplicaID(), 0)
	opts.Fenced, opts.Filter = bus.Fenced, true
	c, err := keystore.NewCache(store, rd, opts, keystore.NoPrepare, m, quiet())
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	go bus.Run(ctx, c.Invalidate, nil)
	r := &replica{cache: c, bus: bus, reg: reg}
	r.waitFilter(t)
	return r
}

func (r *replica) waitFilter(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.cache.FilterReady() || r.bus.Fenced(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the key filter was not built within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *replica) queries(t *testing.T) float64 {
	t.Helper()
	var n float64
	for _, res := range []string{"found", "not_found", "error"} {
		n += counterValue(t, r.reg, "odin_keystore_store_queries_total", res)
	}
	return n
}

// forgedKeys returns n distinct well-formed keys nobody issued: anyone can
// make them, the checksum being public.
func forgedKeys(t *testing.T, n int) []keystore.Hash {
	t.Helper()
	out := make([]keystore.Hash, n)
	for i := range out {
		k, err := keystore.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		out[i] = keystore.HashKey(k)
	}
	return out
}

// flood looks every hash up from 500 goroutines (an attacker's concurrency) and returns the answers by
// error (nil: a key was returned).
func flood(c *keystore.Cache[struct{}], hashes []keystore.Hash) map[error]int {
	var (
		mu  sync.Mutex
		out = map[error]int{}
		wg  sync.WaitGroup
		idx atomic.Int64
	)
	for range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(idx.Add(1)) - 1
				if i >= len(hashes) {
					return
				}
				_, err := c.Lookup(context.Background(), hashes[i], time.Now())
				mu.Lock()
				out[err]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// 10,000 distinct forged keys cost fewer than 100 store queries, and evict
// no known key: after the flood every real key is still answered by the
// LRU. (Before the filter and the unknown-key tier: one query, one Redis
// read and one Redis write per forged key, and the negative entries shared
// the LRU, evicting the real keys.)
func TestForgedKeyFloodIsCheap(t *testing.T) {
	store := newStore(t)
	url, prefix := testenv.Redis(t)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	var real []keystore.Hash
	for i := range 20 {
		p, _, err := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("k", i)})
		if err != nil {
			t.Fatal(err)
		}
		real = append(real, keystore.HashKey(p))
	}
	r := startReplica(t, store, url, prefix, keystore.CacheOptions{Size: 1000, NegativeSize: 1000, TTL: time.Minute})
	for _, h := range real {
		if _, err := r.cache.Lookup(context.Background(), h, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	before, readsBefore := store.lookups.Load(), store.hashReads.Load()

	start := time.Now()
	answers := flood(r.cache, forgedKeys(t, 10_000))
	elapsed := time.Since(start)
	if answers[keystore.ErrNotFound] != 10_000 {
		t.Errorf("forged keys answered %v, want all ErrNotFound", answers)
	}
	lookups, reads := store.lookups.Load()-before, store.hashReads.Load()-readsBefore
	refused := counterValue(t, r.reg, "odin_keystore_lookups_total", "filter")
	t.Logf("10,000 forged keys in %v: %d key lookups (false positives) + %d catch-up reads of recent keys = %d store queries; %v refused by the filter",
		elapsed, lookups, reads, lookups+reads, refused)
	// The two costs of a flood, each against its own bound: the key lookups
	// are the filter's false positives (about 0.4% of the forged keys,
	// whatever the flood's duration); the catch-up reads are shared by every
	// refused key waiting at the time, one per catchUpSpacing (50ms) at most,
	// however many keys arrive: their number follows the flood's duration (a
	// loaded machine stretches it), never its size. (The store counts the
	// filter's rebuilds with them: at most one per 2s, filterMinGap.)
	if lookups >= 100 {
		t.Errorf("10,000 forged keys made %d key lookups, want < 100 (the filter's false positives)", lookups)
	}
	if bound := int64(elapsed/(50*time.Millisecond)) + 1 + int64(elapsed/(2*time.Second)) + 1; reads > bound {
		t.Errorf("%d catch-up reads and rebuilds in %v, want at most %d (one read per 50ms, one rebuild per 2s)", reads, elapsed, bound)
	}
	if refused+float64(lookups) < 10_000 {
		t.Errorf("%v forged keys refused by the filter and %d looked up, want all 10,000", refused, lookups)
	}
	if m := r.queries(t); int64(m) != store.lookups.Load() {
		t.Errorf("odin_keystore_store_queries_total = %v, the store saw %d", m, store.lookups.Load())
	}

	lruBefore := counterValue(t, r.reg, "odin_keystore_lookups_total", "lru")
	for _, h := range real {
		if _, err := r.cache.Lookup(context.Background(), h, time.Now()); err != nil {
			t.Fatalf("a real key after the flood: %v", err)
		}
	}
	if got := counterValue(t, r.reg, "odin_keystore_lookups_total", "lru") - lruBefore; got != float64(len(real)) {
		t.Errorf("after the flood %v of %d real keys were answered by the LRU: the flood evicted the others", got, len(real))
	}
}

// Without a filter, the store lookups that find nothing are bounded by the
// unknown-key rate; past it a miss is never answered "unknown" (it may be
// a real key) but unavailable, and unknown keys do not evict known ones.
func TestUnknownKeyBudget(t *testing.T) {
	store := newStore(t)
	mgr := keystore.NewManager(store, nil, keystore.ManagerOptions{})
	p, _, err := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "real"})
	if err != nil {
		t.Fatal(err)
	}
	c, reg := newCache(t, store, nil, keystore.CacheOptions{Size: 100, NegativeSize: 100, UnknownKeyRate: 50})
	if _, err := c.Lookup(context.Background(), keystore.HashKey(p), time.Now()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	forged := forgedKeys(t, 10_000)
	answers := map[error]int{}
	for _, h := range forged {
		_, err := c.Lookup(context.Background(), h, time.Now())
		answers[err]++
	}
	elapsed := time.Since(start)
	notFound := counterValue(t, reg, "odin_keystore_store_queries_total", "not_found")
	bound := 50 + 50*elapsed.Seconds() + 1
	t.Logf("10,000 forged keys in %v without a filter: %v store queries (bound %.0f), answers %v", elapsed, notFound, bound, answers)
	if notFound > bound {
		t.Errorf("%v store queries found nothing in %v, want at most %.0f", notFound, elapsed, bound)
	}
	if answers[keystore.ErrNotFound]+answers[keystore.ErrUnavailable] != len(forged) {
		t.Errorf("answers %v: want only ErrNotFound or ErrUnavailable", answers)
	}
	if throttled := plainCounter(t, reg, "odin_keystore_store_throttled_total"); throttled == 0 {
		t.Error("no miss was throttled")
	}
	before := store.lookups.Load()
	if _, err := c.Lookup(context.Background(), keystore.HashKey(p), time.Now()); err != nil {
		t.Fatalf("the real key after the flood: %v", err)
	}
	if store.lookups.Load() != before {
		t.Error("the real key was evicted by the flood")
	}
}

// A key is never refused by the filter, even used the moment after it was
// committed, published on the bus or not: a refusal waits for a read of the
// keys created recently that began after the request arrived.
func TestFilterAdmitsANewKeyAtOnce(t *testing.T) {
	store := newStore(t)
	url, prefix := testenv.Redis(t)
	r := startReplica(t, store, url, prefix, keystore.CacheOptions{})
	// Without Redis too (odin dev, or odin authz without a bus).
	solo, _ := newCache(t, store, nil, keystore.CacheOptions{Filter: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go solo.Run(ctx)
	for !solo.FilterReady() {
		time.Sleep(10 * time.Millisecond)
	}
	admin, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	mgr := keystore.NewManager(store, admin, keystore.ManagerOptions{})
	for i := range 10 {
		// Written to the store only: no bus message, no Redis record (a
		// process without Redis, or a row written by hand).
		p, _ := keystore.GenerateKey()
		h := keystore.HashKey(p)
		if _, err := store.CreateKey(context.Background(), keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("n", i)}, h, keystore.KeyHint(p), nil); err != nil {
			t.Fatal(err)
		}
		for name, c := range map[string]*keystore.Cache[struct{}]{"with the bus": r.cache, "without Redis": solo} {
			if _, err := c.Lookup(context.Background(), h, time.Now()); err != nil {
				t.Fatalf("key %d, written to the store only, used at once (%s): %v", i, name, err)
			}
		}
		// Through the manager, as the admin API creates keys.
		p2, _, err := mgr.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: fmt.Sprint("m", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.cache.Lookup(context.Background(), keystore.HashKey(p2), time.Now()); err != nil {
			t.Fatalf("key %d created through the manager: %v", i, err)
		}
		if _, err := r.cache.Lookup(context.Background(), forgedKeys(t, 1)[0], time.Now()); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("a forged key: %v", err)
		}
	}
}

// plainCounter reads a counter without labels.
func plainCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	if ms := series(t, reg, name); len(ms) == 1 {
		return ms[0].GetCounter().GetValue()
	}
	return 0
}

// BenchmarkKeyFilterFromPostgres is a replica's key filter build from
// PostgreSQL holding 1M keys: the stream of hashes and the build.
//
//	go test -run '^$' -bench KeyFilterFromPostgres -benchtime 1x ./keystore/
func BenchmarkKeyFilterFromPostgres(b *testing.B) {
	db := testenv.Postgres(b)
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1_000_000
	if _, err := conn.Exec(context.Background(), `
		INSERT INTO api_keys (id, user_id, name, key_hash, hint, tier)
		SELECT 'key_b' || i, 'user_1', 'b', decode(md5(i::text) || md5((-i)::text), 'hex'), 'h', 'free'
		FROM generate_series(1, $1) i`, n); err != nil {
		b.Fatal(err)
	}
	_, _ = conn.Exec(context.Background(), `VACUUM ANALYZE api_keys`)
	conn.Close(context.Background())
	s, err := pgstore.Open(context.Background(), db, pgstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for range b.N {
		c, err := keystore.NewCache(s, nil, keystore.CacheOptions{Filter: true}, keystore.NoPrepare, keystore.NewMetrics(prometheus.NewRegistry()), quiet())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go c.Run(ctx)
		for !c.FilterReady() {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}
}
