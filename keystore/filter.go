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
// refused with no lookup of its own. It is a binary fuse filter (static,
// about 9 bits per key, false positives about 0.4 %) built from the store,
// plus the exact set of hashes learnt since that build began: from the bus
// (every key creation and roll publishes the new key's hash) and from
// catch-up reads of the keys created recently.
//
// Its "no" is never trusted on its own: before a key is refused, a
// catch-up read that began after the request arrived must have completed
// (confirm). It reads the keys created since a minute before the previous
// one began, so it sees every key committed before it began, published on
// the bus or not (a key created by a process without Redis, or a row
// written by hand with a current created_at). Concurrent refusals share
// one read, and reads are at least catchUpSpacing apart: however many
// forged keys arrive, a replica makes at most 1/catchUpSpacing of them per
// second, and a forged key waits about that long for its 401.
type keyFilter struct {
	state atomic.Pointer[filterState]

	mu sync.RWMutex
	// added are the hashes learnt since the current state's build began;
	// building, those learnt since the build in progress began (nil when
	// none is).
	added, building map[Hash]struct{}

	request chan struct{} // a rebuild is wanted

	// The catch-up reads. covered is when the last successful one (or the
	// last build) began: every key committed before then is known.
	cmu     sync.Mutex
	covered time.Time
	round   *catchUpRound // the read in progress, nil when none
	last    time.Time     // when the last read began
}

// catchUpRound is one catch-up read that callers of confirm wait for.
type catchUpRound struct {
	start time.Time
	done  chan struct{}
}

const (
	// catchUpSpacing is the least time between two catch-up reads.
	catchUpSpacing = 50 * time.Millisecond
	// catchUpMargin is how far before the previous read's start a catch-up
	// read reaches back: it covers a creation whose transaction began
	// (stamping created_at) before that read and committed after it, and
	// clock skew between the replica and the store.
	catchUpMargin = time.Minute
)

// filterState is one build.
type filterState struct {
	fuse  *xorfilter.BinaryFuse8 // nil: the store held no key
	salt  uint64                 // random per build: a false positive is not one on the next build or replica
	keys  int
	bytes int
	start time.Time // when the build's read began
	built time.Time
}

func (s *filterState) has(h Hash) bool {
	return s.fuse != nil && s.fuse.Contains(binary.LittleEndian.Uint64(h[:8])^s.salt)
}

func newKeyFilter() *keyFilter {
	return &keyFilter{request: make(chan struct{}, 1), added: map[Hash]struct{}{}}
}

// heard records a hash that exists (a bus message named it, a catch-up read
// or a lookup found it).
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

func (f *keyFilter) want() {
	select {
	case f.request <- struct{}{}:
	default:
	}
}

// filterVerdict is what the filter knows of a hash: vouched (it may exist),
// refused (no key has it, as of the build and what was learnt since), or
// untrusted (no filter built yet, or the refusal could not be confirmed).
type filterVerdict uint8

const (
	filterUntrusted filterVerdict = iota
	filterVouched
	filterRefused
)

func (f *keyFilter) check(h Hash) filterVerdict {
	st := f.state.Load()
	if st == nil {
		return filterUntrusted
	}
	if st.has(h) || f.heardOf(h) {
		return filterVouched
	}
	return filterRefused
}

// confirm waits until a catch-up read that began at or after t has
// completed, starting one when none is under way, so that every key
// committed before t is known. False when that fails or ctx ends first.
func (f *keyFilter) confirm(ctx context.Context, store Store, t time.Time, timeout time.Duration) bool {
	for {
		f.cmu.Lock()
		if !f.covered.Before(t) {
			f.cmu.Unlock()
			return true
		}
		r := f.round
		if r == nil {
			start := time.Now()
			if next := f.last.Add(catchUpSpacing); next.After(start) {
				start = next
			}
			r = &catchUpRound{start: start, done: make(chan struct{})}
			f.round, f.last = r, r.start
			go f.catchUp(context.WithoutCancel(ctx), store, r, timeout)
		}
		f.cmu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return false
		}
		if !r.start.Before(t) { // it began after t: covered, or it failed
			f.cmu.Lock()
			ok := !f.covered.Before(t)
			f.cmu.Unlock()
			return ok
		}
	}
}

// catchUp runs one catch-up read at r.start.
func (f *keyFilter) catchUp(ctx context.Context, store Store, r *catchUpRound, timeout time.Duration) {
	defer func() {
		f.cmu.Lock()
		f.round = nil
		f.cmu.Unlock()
		close(r.done)
	}()
	if wait := time.Until(r.start); wait > 0 {
		time.Sleep(wait)
	}
	f.cmu.Lock()
	covered := f.covered
	f.cmu.Unlock()
	if covered.IsZero() { // no build yet: nothing to catch up from
		return
	}
	since := covered.Add(-catchUpMargin)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := store.KeyHashes(rctx, since, func(h Hash) error {
		if st := f.state.Load(); st == nil || !st.has(h) {
			f.heard(h)
		}
		return nil
	}); err != nil {
		return
	}
	f.cmu.Lock()
	if f.covered.Before(r.start) {
		f.covered = r.start
	}
	f.cmu.Unlock()
}

// build reads every hash from the store and installs the new filter. The
// set of learnt hashes starts before the read, so that a key committed
// after the read's snapshot, learnt during the read, is kept.
func (f *keyFilter) build(ctx context.Context, store Store, timeout time.Duration) (*filterState, error) {
	f.mu.Lock()
	f.building = map[Hash]struct{}{}
	f.mu.Unlock()
	abandon := func() {
		f.mu.Lock()
		f.building = nil
		f.mu.Unlock()
	}
	var salt [8]byte
	_, _ = rand.Read(salt[:])
	st := &filterState{salt: binary.LittleEndian.Uint64(salt[:]), start: time.Now()}
	var keys []uint64
	if old := f.state.Load(); old != nil {
		keys = make([]uint64, 0, old.keys+old.keys/16+1024)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := store.KeyHashes(rctx, time.Time{}, func(h Hash) error {
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
	f.cmu.Lock()
	if f.covered.Before(st.start) {
		f.covered = st.start
	}
	f.cmu.Unlock()
	return st, nil
}
