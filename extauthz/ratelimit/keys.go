package ratelimit

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bucket is a replica's state for one limit key.
type bucket struct {
	// lease is the current lease from Redis; nil before the first.
	lease atomic.Pointer[lease]
	// tat is the in-process GCRA's theoretical arrival time (UnixNano),
	// used without Redis or while it is unreachable.
	tat atomic.Int64
	// mu serialises lease requests for this key on this replica, so one
	// replica holds at most one batch per key.
	mu sync.Mutex
	// evicted is set, under mu, when the bucket left the table.
	evicted bool
	// shard is where the bucket's decisions are counted.
	shard *shard
}

// count records a decision.
func (b *bucket) count(r Result, p path) {
	res := resultAllowed
	switch {
	case r.Unavailable:
		res = resultUnavailable
	case !r.Allowed:
		res = resultLimited
	}
	b.shard.decisions[res][p].Add(1)
}

// takeLocal spends one token of the in-process GCRA (lock-free).
func (b *bucket) takeLocal(lim *limits, t int64) Result {
	for {
		tat := b.tat.Load()
		next := max(tat, t) + lim.intervalNs
		if next-t > lim.capacityNs {
			return Result{
				Limit:      lim.burst,
				Reset:      positive(tat - t),
				RetryAfter: positive(next - lim.capacityNs - t),
			}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return Result{
				Allowed:   true,
				Limit:     lim.burst,
				Remaining: int((lim.capacityNs - (next - t)) / lim.intervalNs),
				Reset:     time.Duration(next - t),
			}
		}
	}
}

// idle reports whether dropping b loses nothing: no live lease or refusal,
// and a full in-process bucket.
func (b *bucket) idle(t int64) bool {
	le := b.lease.Load()
	return (le == nil || t >= le.expires) && b.tat.Load() <= t
}

// numShards splits the table so that no lock is shared by all keys.
const numShards = 32

// keyTable maps limit keys to buckets: sharded maps, read under a shard's
// read lock, bounded by evicting idle buckets first.
type keyTable struct {
	seed     maphash.Seed
	perShard int
	shards   [numShards]shard
}

type shard struct {
	mu sync.RWMutex
	m  map[string]*bucket
	// decisions counts the decisions for this shard's keys by result and
	// path, summed when scraped: one counter for all requests would be a
	// cache line every core fights over (it made the parallel benchmark
	// about twice as slow on two cores).
	decisions [numResults][numPaths]atomic.Uint64
	_         [64]byte // keep neighbouring shards off one cache line
}

func newKeyTable(maxKeys int) *keyTable {
	kt := &keyTable{seed: maphash.MakeSeed(), perShard: max(1, (maxKeys+numShards-1)/numShards)}
	for i := range kt.shards {
		kt.shards[i].m = make(map[string]*bucket)
	}
	return kt
}

// get returns key's bucket, creating it if needed.
func (kt *keyTable) get(key string, t int64) *bucket {
	s := &kt.shards[maphash.String(kt.seed, key)%numShards]
	s.mu.RLock()
	b := s.m[key]
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.m[key]; b != nil {
		return b
	}
	if len(s.m) >= kt.perShard {
		s.evict(kt.perShard, t)
	}
	b = &bucket{shard: s}
	s.m[strings.Clone(key)] = b // the caller's string may pin a larger buffer
	return b
}

// evict drops every idle bucket of a full shard; if all are busy, it drops
// arbitrary ones down to 7/8 of the shard, so a table full of active keys
// is not scanned on every insert. Called with s.mu held.
func (s *shard) evict(perShard int, t int64) {
	for k, b := range s.m {
		if b.mu.TryLock() { // a bucket being renewed is not idle
			if b.idle(t) {
				b.evicted = true
				delete(s.m, k)
			}
			b.mu.Unlock()
		}
	}
	for k, b := range s.m { // map order is random enough
		if len(s.m) <= perShard*7/8 {
			return
		}
		if b.mu.TryLock() {
			b.evicted = true
			delete(s.m, k)
			b.mu.Unlock()
		}
	}
}

// decisions sums a decision counter over the shards.
func (kt *keyTable) decisions(res int, p path) uint64 {
	var n uint64
	for i := range kt.shards {
		n += kt.shards[i].decisions[res][p].Load()
	}
	return n
}

// len counts the tracked keys, for the gauge.
func (kt *keyTable) len() int {
	n := 0
	for i := range kt.shards {
		s := &kt.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
