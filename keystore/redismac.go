package keystore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"unsafe"
)

// MinMACSecret is the shortest secret accepted for authenticating Redis
// entries, in bytes: 256 bits, HMAC-SHA256's own key size.
const MinMACSecret = 32

// macVersion is the first byte of every value written to Redis: the format
// of what follows (the MAC, then the payload) and of the MAC's input. A
// future format gets a new byte; a value with another byte is refused.
const macVersion byte = 1

// macSize is the length of the MAC after the version byte.
const macSize = sha256.Size

// ErrMACSecret reports a missing or too short secret for Redis entries.
var ErrMACSecret = errors.New("a Redis MAC secret of at least 32 bytes is required with Redis")

// entryMAC authenticates the values this process writes to Redis and reads
// back: every cached key record (including "unknown key" entries), every
// cached verified session, every revoked-session marker. Whoever can write
// Redis without the secret can no longer make a string an identity, copy an
// entry under another key's name, or mark a real key unknown or a session
// revoked: such an entry fails to verify and is treated as absent.
//
// A sealed value is
//
//	version (1 byte) | HMAC-SHA256(secret, version | len(name) (4 bytes, big endian) | name | payload) | payload
//
// where name is the entry's full Redis key name, prefix included: the MAC
// binds the value to the name it is stored under. Values are sealed with
// the current secret and accepted under the current or the previous one,
// so the secret can be rotated without a flush (docs/OPERATIONS.md).
type entryMAC struct {
	current, previous *macKey // previous may be nil
}

// macKey is one secret, with a pool of keyed HMAC states: keying HMAC costs
// two SHA-256 blocks and an allocation, resetting a pooled state does not.
type macKey struct {
	pool sync.Pool // of *macState
}

// macState is a keyed HMAC with scratch space, so that computing a MAC
// allocates nothing.
type macState struct {
	h   hash.Hash
	hdr [5]byte
	sum [macSize]byte
}

func newMACKey(secret string) *macKey {
	k := &macKey{}
	key := []byte(secret)
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return k
}

// newEntryMAC checks the secrets and prepares them. previous may be empty.
func newEntryMAC(current, previous string) (*entryMAC, error) {
	if len(current) < MinMACSecret {
		return nil, ErrMACSecret
	}
	m := &entryMAC{current: newMACKey(current)}
	if previous != "" {
		if len(previous) < MinMACSecret {
			return nil, errors.New("the previous Redis MAC secret, when set, must be at least 32 bytes")
		}
		if previous != current {
			m.previous = newMACKey(previous)
		}
	}
	return m, nil
}

// compute computes the MAC of name and payload under k into st.sum.
func (k *macKey) compute(st *macState, name string, payload []byte) {
	st.h.Reset()
	st.hdr[0] = macVersion
	binary.BigEndian.PutUint32(st.hdr[1:], uint32(len(name)))
	st.h.Write(st.hdr[:])
	st.h.Write(unsafe.Slice(unsafe.StringData(name), len(name))) // read only: no copy
	st.h.Write(payload)
	st.h.Sum(st.sum[:0])
}

// sum appends the MAC of name and payload under k to dst.
func (k *macKey) sum(dst []byte, name string, payload []byte) []byte {
	st := k.pool.Get().(*macState)
	k.compute(st, name, payload)
	dst = append(dst, st.sum[:]...)
	k.pool.Put(st)
	return dst
}

// verify reports, in constant time, whether mac is that of name and payload
// under k.
func (k *macKey) verify(mac []byte, name string, payload []byte) bool {
	st := k.pool.Get().(*macState)
	k.compute(st, name, payload)
	ok := hmac.Equal(mac, st.sum[:])
	k.pool.Put(st)
	return ok
}

// seal returns the value to store under name for payload.
func (m *entryMAC) seal(name string, payload []byte) []byte {
	out := make([]byte, 1, 1+macSize+len(payload))
	out[0] = macVersion
	out = m.current.sum(out, name, payload)
	return append(out, payload...)
}

// open returns the payload of a value read under name, and false when the
// value was not sealed for that name with the current or previous secret.
func (m *entryMAC) open(name string, raw []byte) ([]byte, bool) {
	if len(raw) < 1+macSize || raw[0] != macVersion {
		return nil, false
	}
	mac, payload := raw[1:1+macSize], raw[1+macSize:]
	if m.current.verify(mac, name, payload) || (m.previous != nil && m.previous.verify(mac, name, payload)) {
		return payload, true
	}
	return nil, false
}
