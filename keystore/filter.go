package keystore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/FastFilter/xorfilter"
)

// keyFilter is a replica's membership filter of every key hash, so that a
// forged key (the checksum is public: anyone can make well-formed keys) is
// refused with no Redis or PostgreSQL query. It is a binary fuse filter
// (static, about 9 bits per key, false positives about 0.4 %) built from
// the store, plus the exact set of hashes heard of since that build began:
// every key creation and roll publishes the new key's hash on the bus.
//
// Its "no" is never trusted on its own. The Cache refuses a key on it only
// when
//   - the filter was built after the bus's last loss event (a new
//     subscription, a probe that did not come back), so every key created
//     after the build's snapshot was heard of on the bus, or the loss is
//     known;
//   - the replica is not fenced; and
//   - the bus has handled every message published before the request
//     arrived (Bus.Covered), so a key created just before it was heard of.
//
// Otherwise the lookup goes on as without a filter. A key whose creation was
// never published (its creator could not reach Redis, or a row written by
// hand) is unknown to the filter until the next rebuild (FilterRefresh).
type keyFilter struct {
	state atomic.Pointer[filterState]
	// epoch counts loss events; a state built before the last one is not
	// trusted.
	epoch atomic.Uint64

	mu sync.RWMutex
	// added are the hashes heard of since the current state's build began;
	// building, those heard of since the build in progress began (nil when
	// none is).
	added, building map[Hash]struct{}

	request chan struct{} // a rebuild is wanted
}

// filterState is one build.
type filterState struct {
	fuse  *xorfilter.BinaryFuse8 // nil: the store held no key
	salt  uint64                 // random per build: a false positive is not one on the next build or replica
	epoch uint64
	keys  int
	bytes int
	built time.Time
}

func (s *filterState) has(h Hash) bool {
	return s.fuse != nil && s.fuse.Contains(binary.LittleEndian.Uint64(h[:8])^s.salt)
}

func newKeyFilter() *keyFilter {
	return &keyFilter{request: make(chan struct{}, 1), added: map[Hash]struct{}{}}
}

// heard records a hash that exists (a bus message named it, or the store
// returned it).
func (f *keyFilter) heard(h Hash) {
	f.mu.Lock()
	f.added[h] = struct{}{}
	if f.building != nil {
		f.building[h] = struct{}{}
	}
	n := len(f.added)
	f.mu.Unlock()
	if st := f.state.Load(); st != nil && n > 1024+st.keys/8 {
		f.want() // the exact set has grown: fold it into a new build
	}
}

func (f *keyFilter) heardOf(h Hash) bool {
	f.mu.RLock()
	_, ok := f.added[h]
	f.mu.RUnlock()
	return ok
}

// lost records a loss event: messages may have been missed, so the
// current filter is no longer trusted, and a new one is built.
func (f *keyFilter) lost() {
	f.epoch.Add(1)
	f.want()
}

func (f *keyFilter) want() {
	select {
	case f.request <- struct{}{}:
	default:
	}
}

// check says what the filter knows of h: vouched (it may exist), refused
// (no key has it, as of this build and what the bus said since), or
// untrusted (no filter, or built before a loss event).
type filterVerdict uint8

const (
	filterUntrusted filterVerdict = iota
	filterVouched
	filterRefused
)

func (f *keyFilter) check(h Hash) filterVerdict {
	st := f.state.Load()
	if st == nil || st.epoch != f.epoch.Load() {
		return filterUntrusted
	}
	if st.has(h) || f.heardOf(h) {
		return filterVouched
	}
	return filterRefused
}

// build reads every hash from the store and installs the new filter. The
// set of heard hashes starts before the read, so that a key committed after
// the read's snapshot, whose message arrives during the read, is kept.
func (f *keyFilter) build(ctx context.Context, store Store, timeout time.Duration) (*filterState, error) {
	f.mu.Lock()
	f.building = map[Hash]struct{}{}
	epoch := f.epoch.Load()
	f.mu.Unlock()
	abandon := func() {
		f.mu.Lock()
		f.building = nil
		f.mu.Unlock()
	}
	var salt [8]byte
	_, _ = rand.Read(salt[:])
	st := &filterState{salt: binary.LittleEndian.Uint64(salt[:]), epoch: epoch}
	var keys []uint64
	if old := f.state.Load(); old != nil {
		keys = make([]uint64, 0, old.keys+old.keys/16+1024)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := store.KeyHashes(rctx, func(h Hash) error {
		keys = append(keys, binary.LittleEndian.Uint64(h[:8])^st.salt)
		return nil
	})
	cancel()
	if err != nil {
		abandon()
		return nil, err
	}
	st.keys = len(keys)
	if len(keys) > 0 {
		if st.fuse, err = xorfilter.PopulateBinaryFuse8(keys); err != nil {
			abandon()
			return nil, fmt.Errorf("build the key filter: %w", err)
		}
		st.bytes = len(st.fuse.Fingerprints)
	}
	st.built = time.Now()
	f.mu.Lock()
	f.state.Store(st)
	f.added, f.building = f.building, nil
	f.mu.Unlock()
	return st, nil
}
