package keystore

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// compactKeys is the cache's tier of known keys: one fixed-size record per
// key (its hash, what a check reads of it, and the cache's times), with no
// name, hint, creation time or pre-rendered answer. Scopes and tiers are
// interned. Records and their hash index live in an arena outside the Go
// heap (newArena), so a million cached keys cost their bytes in RSS and
// nothing in garbage-collector work or headroom.
//
// It holds at most limit records, spread over shards (each with its own
// lock) by hash. Once limit are held, a new record evicts one of its
// shard's by CLOCK (second chance: a record read since the hand last passed
// it is spared once). Hashes are SHA-256 outputs, uniform, so the shards
// fill evenly; each has room for its share and a margin many standard
// deviations wide, so holding limit keys evicts none.
type compactKeys struct {
	shards []compactShard
	mask   uint64 // len(shards)-1
	seed   uint64
	limit  int64
	n      atomic.Int64 // records held
	scopes *internTable
	tiers  *internTable
	// evicted, when set, is told of each record CLOCK evicts (under its
	// shard's lock): the cache drops the key's hot entry with it, so that
	// no tier answers for a key the limit pushed out.
	evicted func(Hash)
}

// slotBlob is the room a record has for its key's id, user id and
// organisation id together. A key_ id (24 bytes) and a Clerk user id (32)
// fit with room to spare; longer ones are kept on the heap (compactShard.long).
const slotBlob = 108

// slot is one record. It holds no Go pointer: it lives in the arena.
type slot struct {
	hash Hash
	// ver identifies what was written: each fill gets a new one, so the
	// hot tier can tell a principal rendered from this record from one of
	// an older record of the same key.
	ver uint64
	// The cache's times and the key's, in Unix nanoseconds; 0 is none
	// (see nanos).
	until, stale, expires, revoked int64
	scopes, tier                   uint32 // interned (compactKeys.scopes, tiers)
	idLen, userLen, orgLen         uint8
	flags                          uint8
	blob                           [slotBlob]byte // id, user id, org id
}

const (
	slotLive     = 1 << iota // holds a record
	slotUsed                 // read since the CLOCK hand last passed
	slotLong                 // id, user and org are in compactShard.long
	slotDisabled             // the key is disabled (when, the record does not keep)
)

// keyMeta is what a hit reads of a record: the times, the version, and
// whether the key is disabled.
type keyMeta struct {
	ver                            uint64
	until, stale, expires, revoked int64
	disabled                       bool
}

// compactShard is one lock's worth of records.
type compactShard struct {
	mu    sync.Mutex
	seed  uint64
	slots []slot   // in the arena
	index []uint32 // in the arena: open addressing, slot number+1 (0: empty)
	imask uint32
	n     int    // records held
	next  uint32 // slots from here on were never used
	free  uint32 // a freed slot+1 (0: none), chained through slot.scopes
	hand  uint32 // CLOCK
	long  map[uint32][3]string
	_     [64]byte // keep neighbouring shards' locks off one cache line
}

// Shards: at most maxShards, each of at least minShardKeys records, so a
// small cache is one shard and evicts in one order.
const (
	maxShards    = 64
	minShardKeys = 1024
)

// newCompactKeys reserves room for capacity records (and each shard's
// margin). The arena's pages cost RSS only once written.
func newCompactKeys(capacity int) (*compactKeys, error) {
	if capacity < 1 || capacity > math.MaxUint32/2 {
		return nil, fmt.Errorf("build key cache: size %d out of range", capacity)
	}
	shards := 1
	for shards*2 <= maxShards && capacity/(shards*2) >= minShardKeys {
		shards *= 2
	}
	c := &compactKeys{shards: make([]compactShard, shards), mask: uint64(shards - 1), seed: rand.Uint64(),
		limit: int64(capacity), scopes: newInternTable(), tiers: newInternTable()}
	caps := make([]int, shards)
	isize := make([]int, shards)
	total := 0
	for i := range shards {
		share := (capacity + shards - 1) / shards
		caps[i] = capacity
		if shards > 1 { // the share, plus 8 standard deviations
			caps[i] = min(capacity, share+8*int(math.Sqrt(float64(share)))+8)
		}
		total += caps[i] * int(unsafe.Sizeof(slot{}))
		isize[i] = 1
		for isize[i] < caps[i]+1 || isize[i] < caps[i]*3/2 { // load ≤ 2/3
			isize[i] *= 2
		}
		total += 4 * isize[i]
	}
	mem, free, err := newArena(total)
	if err != nil {
		return nil, fmt.Errorf("build key cache: reserve %d bytes: %w", total, err)
	}
	off := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.seed = c.seed
		s.slots = unsafe.Slice((*slot)(unsafe.Pointer(&mem[off])), caps[i])
		off += caps[i] * int(unsafe.Sizeof(slot{}))
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.index = unsafe.Slice((*uint32)(unsafe.Pointer(&mem[off])), isize[i])
		s.imask = uint32(isize[i] - 1)
		off += 4 * isize[i]
	}
	// The arena is released when the cache is garbage: no record is ever
	// handed out by reference.
	runtime.AddCleanup(c, func(free func()) { free() }, free)
	return c, nil
}

// mix spreads a hash over 64 bits (a per-process seed, so the layout
// differs between replicas).
func mix(h *Hash, seed uint64) uint64 {
	return (binary.LittleEndian.Uint64(h[:8]) ^ seed) * 0x9E3779B97F4A7C15
}

func (c *compactKeys) shard(h *Hash) *compactShard {
	return &c.shards[(mix(h, c.seed)>>58)&c.mask]
}

func (s *compactShard) home(h *Hash) uint32 { return uint32(mix(h, s.seed)>>16) & s.imask }

// find returns h's index position and slot, or the empty position where it
// would go.
func (s *compactShard) find(h *Hash) (pos, idx uint32, ok bool) {
	for pos = s.home(h); ; pos = (pos + 1) & s.imask {
		v := s.index[pos]
		if v == 0 {
			return pos, 0, false
		}
		if s.slots[v-1].hash == *h {
			return pos, v - 1, true
		}
	}
}

// unlink empties index position i, moving later entries of the probe run
// back so that every entry stays reachable from its home (backward-shift
// deletion: no tombstones).
func (s *compactShard) unlink(i uint32) {
	m := s.imask
	for j := (i + 1) & m; ; j = (j + 1) & m {
		v := s.index[j]
		if v == 0 {
			break
		}
		if k := s.home(&s.slots[v-1].hash); (j-k)&m >= (j-i)&m {
			s.index[i] = v
			i = j
		}
	}
	s.index[i] = 0
}

func (sl *slot) meta() keyMeta {
	return keyMeta{ver: sl.ver, until: sl.until, stale: sl.stale, expires: sl.expires, revoked: sl.revoked,
		disabled: sl.flags&slotDisabled != 0}
}

// version returns the version of h's record, if there is one.
func (c *compactKeys) version(h Hash) (uint64, bool) {
	s := c.shard(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, idx, ok := s.find(&h)
	if !ok {
		return 0, false
	}
	return s.slots[idx].ver, true
}

// view rebuilds what the record keeps of h's key, and marks it used: id,
// user and org ids, scopes and tier (shared with every record that has the
// same, with the key's own rate limit and allowlist: see tierKey), expiry, revocation
// and whether it is disabled; no name, hint or
// creation time.
func (c *compactKeys) view(h Hash) (*Key, keyMeta, bool) {
	s := c.shard(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, idx, ok := s.find(&h)
	if !ok {
		return nil, keyMeta{}, false
	}
	sl := &s.slots[idx]
	sl.flags |= slotUsed
	k := &Key{Hash: h, ExpiresAt: fromNanos(sl.expires), RevokedAt: fromNanos(sl.revoked)}
	if sl.flags&slotDisabled != 0 {
		k.DisabledAt = DisabledSince
	}
	if sl.flags&slotLong != 0 {
		ids := s.long[idx]
		k.ID, k.UserID, k.OrgID = ids[0], ids[1], ids[2]
	} else {
		a, b := int(sl.idLen), int(sl.idLen)+int(sl.userLen)
		all := string(sl.blob[:b+int(sl.orgLen)])
		k.ID, k.UserID, k.OrgID = all[:a], all[a:b], all[b:]
	}
	_, k.Scopes = c.scopes.get(sl.scopes)
	tier, _ := c.tiers.get(sl.tier)
	splitTier(tier, k)
	return k, sl.meta(), true
}

// put stores k's record for h, replacing any, evicting another key's when
// the shard is full.
func (c *compactKeys) put(h Hash, k *Key, m keyMeta) {
	scopes, tier := c.scopes.internScopes(k.Scopes), c.tiers.acquire(tierKey(k), nil)
	s := c.shard(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, idx, ok := s.find(&h)
	if ok {
		c.clear(s, idx)
	} else {
		idx = c.alloc(s)
		pos, _, _ := s.find(&h) // after alloc: an eviction moves entries
		s.index[pos] = idx + 1
		s.n++
	}
	sl := &s.slots[idx]
	*sl = slot{hash: h, ver: m.ver, until: m.until, stale: m.stale, expires: nanos(k.ExpiresAt), revoked: nanos(k.RevokedAt),
		scopes: scopes, tier: tier, flags: slotLive}
	if !k.DisabledAt.IsZero() {
		sl.flags |= slotDisabled
	}
	if n := len(k.ID) + len(k.UserID) + len(k.OrgID); n <= slotBlob {
		sl.idLen, sl.userLen, sl.orgLen = uint8(len(k.ID)), uint8(len(k.UserID)), uint8(len(k.OrgID))
		n := copy(sl.blob[:], k.ID)
		n += copy(sl.blob[n:], k.UserID)
		copy(sl.blob[n:], k.OrgID)
	} else {
		sl.flags |= slotLong
		if s.long == nil {
			s.long = map[uint32][3]string{}
		}
		s.long[idx] = [3]string{strings.Clone(k.ID), strings.Clone(k.UserID), strings.Clone(k.OrgID)}
	}
}

// tierKey is what a record interns as its tier: the tier, followed by
// what the key has of its own, each after a NUL (never in a tier name)
// and a letter: "r" and its rate limit, "n" and its allowlist
// ("pro\x00r10/s:20\x00n10.0.0.0/8,2001:db8::/32"). A key with neither
// interns its tier alone, and keys with the same share one string.
func tierKey(k *Key) string {
	if k.RateLimit == nil && len(k.AllowedCIDRs) == 0 {
		return k.Tier
	}
	var b strings.Builder
	b.WriteString(k.Tier)
	if k.RateLimit != nil {
		b.WriteString("\x00r")
		b.WriteString(k.RateLimit.String())
	}
	if len(k.AllowedCIDRs) > 0 {
		b.WriteString("\x00n")
		for i, p := range k.AllowedCIDRs {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(p.String())
		}
	}
	return b.String()
}

// splitTier reads back tierKey into k's tier, own rate limit and
// allowlist.
func splitTier(s string, k *Key) {
	tier, rest, _ := strings.Cut(s, "\x00")
	k.Tier = tier
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, "\x00")
		switch part[0] {
		case 'r':
			rate, burst, _ := strings.Cut(part[1:], ":")
			r, err1 := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
			b, err2 := strconv.Atoi(burst)
			if err1 == nil && err2 == nil { // tierKey wrote it
				k.RateLimit = &RateLimit{Rate: r, Burst: b}
			}
		case 'n':
			nets := strings.Split(part[1:], ",")
			k.AllowedCIDRs = make([]netip.Prefix, 0, len(nets))
			for _, n := range nets {
				if p, err := netip.ParsePrefix(n); err == nil { // tierKey wrote it
					k.AllowedCIDRs = append(k.AllowedCIDRs, p)
				}
			}
		}
	}
}

// clear releases what slot idx refers to (interned values, long ids).
func (c *compactKeys) clear(s *compactShard, idx uint32) {
	sl := &s.slots[idx]
	c.scopes.release(sl.scopes)
	c.tiers.release(sl.tier)
	if sl.flags&slotLong != 0 {
		delete(s.long, idx)
	}
	sl.flags = 0
}

// alloc returns a slot for a new record, counted in c.n: a free one or a
// never used one, after evicting one of the shard's records when the cache
// holds its limit or the shard is full. (A shard with no record when the
// others hold the limit goes over it by one: the next inserts elsewhere
// evict back under. Uniform hashes make it all but impossible.)
func (c *compactKeys) alloc(s *compactShard) uint32 {
	for {
		held := c.n.Load()
		if held >= c.limit && s.n > 0 {
			c.evict(s)
			continue
		}
		if c.n.CompareAndSwap(held, held+1) {
			break
		}
	}
	if s.free == 0 && int(s.next) == len(s.slots) {
		c.evict(s)
	}
	if s.free != 0 {
		idx := s.free - 1
		s.free = s.slots[idx].scopes
		return idx
	}
	s.next++
	return s.next - 1
}

// evict drops the record the CLOCK hand picks. The shard holds at least
// one.
func (c *compactKeys) evict(s *compactShard) {
	for {
		idx := s.hand
		if s.hand++; s.hand >= s.next {
			s.hand = 0
		}
		sl := &s.slots[idx]
		if sl.flags&slotLive == 0 {
			continue
		}
		if sl.flags&slotUsed != 0 {
			sl.flags &^= slotUsed
			continue
		}
		pos, _, _ := s.find(&sl.hash)
		h := sl.hash
		c.drop(s, pos, idx)
		if c.evicted != nil {
			c.evicted(h)
		}
		return
	}
}

// remove drops h's record, if any.
func (c *compactKeys) remove(h Hash) {
	s := c.shard(&h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos, idx, ok := s.find(&h); ok {
		c.drop(s, pos, idx)
	}
}

// drop removes the record in slot idx, at index position pos, and frees
// the slot.
func (c *compactKeys) drop(s *compactShard, pos, idx uint32) {
	s.unlink(pos)
	c.clear(s, idx)
	s.slots[idx].scopes = s.free
	s.free = idx + 1
	s.n--
	c.n.Add(-1)
}

// purge drops every record.
func (c *compactKeys) purge() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for idx := range s.next {
			if s.slots[idx].flags&slotLive != 0 {
				c.clear(s, idx)
			}
		}
		clear(s.index)
		c.n.Add(int64(-s.n))
		s.n, s.next, s.free, s.hand, s.long = 0, 0, 0, 0, nil
		s.mu.Unlock()
	}
}

// len is the number of records held.
func (c *compactKeys) len() int { return int(c.n.Load()) }

// nanos is t in Unix nanoseconds for a record, 0 for the zero time. Times
// outside what int64 nanoseconds hold (years 1678–2262) are clamped, and a
// time that would read as 0 moves 1 ns earlier: an expiry or revocation
// only ever comes sooner, never later or never.
func nanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return -1
}

var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

// fromNanos is the time of a record's nanos (0: the zero time).
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
