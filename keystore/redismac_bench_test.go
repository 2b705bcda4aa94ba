package keystore_test

import (
	"context"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// BenchmarkCacheRedisHit is a key lookup answered by Redis: an LRU of one
// entry and two keys looked up in turn, so every lookup misses the LRU and
// finds the key's record in Redis (a round trip, the record's MAC checked,
// decoded). Compare with BenchmarkEntryMACOpen, the MAC check alone.
func BenchmarkCacheRedisHit(b *testing.B) {
	store := newStoreB(b)
	url, prefix := testenv.Redis(b)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	mgr := keystore.NewManager(store, rd, keystore.ManagerOptions{CacheTTL: time.Hour})
	var hashes [2]keystore.Hash
	for i := range hashes {
		plaintext, _, err := mgr.Create(context.Background(), keystore.Actor{ID: "bench"}, keystore.NewKey{UserID: "user_bench", Name: "bench", Scopes: []string{"scans:read", "scans:write"}})
		if err != nil {
			b.Fatal(err)
		}
		hashes[i] = keystore.HashKey(plaintext)
	}
	c, err := keystore.NewCache(store, rd, keystore.CacheOptions{Size: 1, TTL: time.Hour}, keystore.NoPrepare, keystore.NewMetrics(nil), quiet())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Lookup(ctx, hashes[i&1], time.Now()); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	if n := store.lookups.Load(); n != 0 {
		b.Fatalf("%d PostgreSQL lookups: the benchmark must measure Redis hits only", n)
	}
}

func newStoreB(b *testing.B) *countingStore {
	b.Helper()
	s := testenv.OpenStore(b, testenv.Postgres(b), pgstore.Options{})
	return &countingStore{Store: s}
}
