package drills

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/odin-scan/odin-authz/internal/loadtest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// countingStore is the real PostgreSQL store with a record of every key
// lookup (by hash, with its start time), so the drill can count queries per
// distinct key rather than in total.
type countingStore struct {
	keystore.Store
	mu      sync.Mutex
	queries map[keystore.Hash][]time.Time
	reads   atomic.Int64 // the key filter's reads (builds, catch-ups)
}

func (s *countingStore) KeyHashes(ctx context.Context, since time.Time, fn func(keystore.Hash) error) error {
	s.reads.Add(1)
	return s.Store.KeyHashes(ctx, since, fn)
}

func (s *countingStore) KeyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	s.mu.Lock()
	s.queries[h] = append(s.queries[h], time.Now())
	s.mu.Unlock()
	return s.Store.KeyByHash(ctx, h)
}

func (s *countingStore) snapshot() map[keystore.Hash][]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[keystore.Hash][]time.Time, len(s.queries))
	for h, q := range s.queries {
		c[h] = append([]time.Time(nil), q...)
	}
	return c
}

// TestDrillUnknownKeyFlood floods one replica with keys nobody issued:
//   - a pool of well-formed unknown keys sent over and over: each reaches
//     PostgreSQL at most once per negative-cache TTL (consecutive queries for
//     one key are at least the TTL apart);
//   - well-formed random keys, each new: refused by the key filter with no
//     query at all, except its false positives (about 0.4 %), each queried
//     once (figure: queries per second);
//   - malformed keys (bad checksum, wrong length, wrong alphabet): refused
//     on their format, zero queries;
//
// every one answered 401 with the error body, no RPC failing. Real keys
// warmed before the flood stay in the replica's LRU (it holds fewer entries
// than the flood has unknown keys: unknown keys have a tier of their own),
// so when PostgreSQL then goes away, past the cache TTL, stale-if-error
// still answers them (200); forged keys then get 503, as any key the
// replica cannot confirm (the filter's refusal needs a read of recent keys).
func TestDrillUnknownKeyFlood(t *testing.T) {
	var (
		workers     = 12
		duration    = pick(4*time.Second, 30*time.Second)
		negativeTTL = pick(time.Second, 5*time.Second) // the default run shortens it to see several windows
		poolSize    = 32
	)
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	pgProxy := testenv.NewProxy(t, u.Host) // the outage after the flood
	u.Host = pgProxy.Addr()
	pg := testenv.OpenStore(t, u.String(), pgstore.Options{})
	store := &countingStore{Store: pg, queries: map[keystore.Hash][]time.Time{}}
	cfg := authzsvc.Config{Store: store, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true, RateLimit: generousTiers()}
	cfg.Cache.NegativeTTL = negativeTTL
	// Fewer entries than the flood has unknown keys, and a TTL that ends
	// before the outage's checks: only stale-if-error can answer them then.
	cfg.Cache.Size, cfg.Cache.TTL = 1000, duration/2
	// A Redis read timing out on a starved machine, while the bus is late
	// too, sends a lookup to PostgreSQL that the drill would count against
	// the negative cache; the default 100ms is for production's latency.
	cfg.RedisTimeout = 500 * time.Millisecond
	r := startReplica(t, "a", cfg)
	// Created without Redis (in PostgreSQL only, as keys made long ago),
	// then warmed into the replica's LRU.
	real, _ := createKeys(t, keystore.NewManager(pg, nil, keystore.ManagerOptions{}), 32, "real")
	for _, k := range real {
		if got := checkOnce(t, r, k); got != "200" {
			t.Fatalf("warming a real key: %s", got)
		}
	}

	pool := unknownKeys(t, poolSize)
	poolHashes := map[keystore.Hash]bool{}
	for _, k := range pool {
		poolHashes[keystore.HashKey(k)] = true
	}
	// Fresh keys come from the load library's derivation: well-formed,
	// distinct for every i, and never issued.
	fresh := loadtest.Keys{Seed: "drill-" + testenv.RandomSuffix()}
	var freshMu sync.Mutex
	freshHashes := map[keystore.Hash]bool{}
	malformed := malformedKeys(t, 64)

	// Of every 4 requests: 2 from the repeated pool, 1 fresh random key, 1
	// malformed key.
	ph := newPhases("flood")
	run := load{
		targets: []authv3.AuthorizationClient{r.client}, workers: workers,
		maxDuration: duration, maxRequests: 2_000_000, timeout: 5 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "api-key"}
			switch i % 4 {
			case 0, 1:
				req.class, req.value = "pool", pool[int(i/4)%poolSize]
			case 2:
				k := fresh.Unknown(int(i))
				freshMu.Lock()
				freshHashes[keystore.HashKey(k)] = true
				freshMu.Unlock()
				req.class, req.value = "fresh", k
			default:
				req.class, req.value = "malformed", malformed[int(i/4)%len(malformed)]
				if i%8 == 7 { // also as a Bearer token, the other way a key arrives
					req.header, req.value = "authorization", "Bearer "+req.value
				}
			}
			return req
		},
	}.start()
	reads0 := store.reads.Load()
	samples := run.wait()
	elapsed := run.elapsed
	queries := store.snapshot()
	filterReads := store.reads.Load() - reads0

	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	for _, class := range []string{"pool", "fresh", "malformed"} {
		if other := only(counts(samples, ofClass(class)), "401"); len(other) > 0 {
			t.Errorf("%s keys: want every answer 401, got also %v", class, other)
		}
	}
	realHashes := map[keystore.Hash]bool{}
	for _, k := range real {
		realHashes[keystore.HashKey(k)] = true
	}
	var poolQueries, freshQueries, strayQueries, maxPerKey int
	var minGap time.Duration = -1
	for h, q := range queries {
		switch {
		case poolHashes[h]:
			poolQueries += len(q)
			maxPerKey = max(maxPerKey, len(q))
			for i := 1; i < len(q); i++ {
				gap := q[i].Sub(q[i-1])
				if minGap < 0 || gap < minGap {
					minGap = gap
				}
				if gap < negativeTTL {
					t.Errorf("a pooled unknown key reached PostgreSQL twice %v apart, within the negative TTL %v", gap, negativeTTL)
				}
			}
		case realHashes[h]: // the warm-up's
		case freshHashes[h]:
			freshQueries += len(q)
			if len(q) > 1 {
				t.Errorf("a fresh unknown key, sent once, reached PostgreSQL %d times", len(q))
			}
		default:
			strayQueries += len(q)
		}
	}
	if strayQueries > 0 {
		t.Errorf("%d PostgreSQL queries for hashes the drill never sent as well-formed keys (malformed keys must cost none)", strayQueries)
	}
	windows := int(elapsed/negativeTTL) + 1
	if maxPerKey > windows {
		t.Errorf("a pooled key was queried %d times in %v: more than once per %v", maxPerKey, elapsed, negativeTTL)
	}
	total := poolQueries + freshQueries + strayQueries + len(real)
	if m := int(r.storeQueries(t)); m != total {
		t.Errorf("odin_keystore_store_queries_total = %d, the store saw %d lookups", m, total)
	}
	sent := counts(samples, ofClass("fresh"))["401"]
	if freshQueries > sent {
		t.Errorf("%d queries for %d fresh keys", freshQueries, sent)
	}
	if limit := int64(elapsed/(50*time.Millisecond)) + 3; filterReads > limit { // one catch-up per 50 ms at most
		t.Errorf("the key filter read the store %d times in %v, want at most %d", filterReads, elapsed, limit)
	}
	if limit := sent/100 + 20; freshQueries > limit { // 0.4 % false positives, and margin
		t.Errorf("%d queries for %d fresh forged keys: the key filter let more than 1 %% through", freshQueries, sent)
	}

	// PostgreSQL goes away; the warmed keys' TTL (half the flood) has
	// passed. The flood evicted none of them: stale-if-error answers every
	// one. A forged key gets 503: its refusal cannot be confirmed.
	pgProxy.SetDown(true)
	var realDuring, forgedDuring = map[string]int{}, map[string]int{}
	for i, k := range real {
		realDuring[checkOnce(t, r, k)]++
		forgedDuring[checkOnce(t, r, fresh.Unknown(-1-i))]++
	}
	pgProxy.SetDown(false)
	if realDuring["200"] != len(real) {
		t.Errorf("real keys warmed before the flood, with PostgreSQL down after it: %v, want all 200 (stale-if-error)", realDuring)
	}
	if forgedDuring["503"] != len(real) {
		t.Errorf("forged keys with PostgreSQL down: %v, want all 503", forgedDuring)
	}

	p50, p99, maxLat := quantiles(samples, nil)
	f := loadFigures("unknown_key_flood", samples, elapsed, workers)
	f.add("elapsed", elapsed)
	f.add("negative_ttl", negativeTTL)
	f.add("outcomes", counts(samples, nil))
	f.add("pool_requests", sum(counts(samples, ofClass("pool"))))
	f.add("pool_keys", poolSize)
	f.add("pool_pg_queries", poolQueries)
	f.add("pool_queries_per_key_per_ttl", float64(poolQueries)/float64(poolSize)/(elapsed.Seconds()/negativeTTL.Seconds()))
	f.add("pool_max_queries_per_key", maxPerKey)
	f.add("pool_min_gap", minGap)
	f.add("fresh_requests", sum(counts(samples, ofClass("fresh"))))
	f.add("fresh_pg_queries", freshQueries)
	f.add("fresh_pg_queries_per_s", float64(freshQueries)/elapsed.Seconds())
	f.add("malformed_requests", sum(counts(samples, ofClass("malformed"))))
	f.add("malformed_pg_queries", strayQueries)
	f.add("pg_queries_per_s", float64(total)/elapsed.Seconds())
	f.add("p50", p50)
	f.add("p99", p99)
	f.add("max", maxLat)
	f.add("redis_errors", int(r.metric(t, "odin_keystore_redis_errors_total", nil)))
	f.add("filter_reads", filterReads)
	f.add("filter_reads_per_s", float64(filterReads)/elapsed.Seconds())
	f.add("filter_refused", int(r.metric(t, "odin_keystore_lookups_total", map[string]string{"tier": "filter"})))
	f.add("pg_down_real_keys", realDuring)
	f.add("pg_down_forged_keys", forgedDuring)
	f.report(t)
}

// malformedKeys returns n keys that fail the format check in different
// ways: a changed checksum character, one character too many or too few, a
// character outside base62, the wrong prefix.
func malformedKeys(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for i := range n {
		k := unknownKeys(t, 1)[0]
		var bad string
		switch i % 5 {
		case 0: // checksum off by one character
			last := k[len(k)-1]
			repl := byte('A')
			if last == 'A' {
				repl = 'B'
			}
			bad = k[:len(k)-1] + string(repl)
		case 1:
			bad = k + "x"
		case 2:
			bad = k[:len(k)-1]
		case 3:
			bad = k[:20] + "-" + k[21:]
		default:
			bad = strings.Replace(k, keystore.KeyPrefix, "odin_pk_", 1)
		}
		if keystore.ValidKey(bad) {
			t.Fatalf("malformed key %d passes the format check", i)
		}
		out = append(out, bad)
	}
	return out
}

func sum(c map[string]int) int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}
