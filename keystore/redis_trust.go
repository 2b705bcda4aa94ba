package keystore

import (
	"sync"
	"sync/atomic"
	"time"
)

// recordTrust says which Redis key records a process may answer from.
// A revoke overwrites the key's record before it publishes, so that a
// replica that drops the key reads the revoked record next; but a failover
// can lose that write (the last writes a dead master had not replicated, a
// write sent to a master its client did not yet know was replaced, a write
// that failed while the bus still worked), leaving the record that allows
// the key. So a record is not trusted when it is older than
//   - the last invalidation of its key this process received, or
//   - the floor: on a cluster, the bus's last resubscription (a failover of
//     the bus's shard may have lost messages and writes alike); with
//     Sentinel, the client's move to a new master (redisconn.Conn.MasterChanged).
//
// The key is then read from PostgreSQL: once per process and invalidated
// key, and for every key after a floor rise until the records written
// before it expire (the cache TTL). Records older versions wrote have no
// write time and count as older than anything.
type recordTrust struct {
	floor atomic.Int64 // UnixNano
	mu    sync.RWMutex
	keys  map[Hash]int64 // UnixNano of the last invalidation, kept trustKeep
}

// trustKeep is how long a key's invalidation time is kept: past it, the
// floor rises to it (records older than that rarely still live).
const (
	trustKeep    = 10 * time.Minute
	trustMaxKeys = 100_000
)

// invalidated records an invalidation of h received now.
func (t *recordTrust) invalidated(h Hash, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = map[Hash]int64{}
	}
	if len(t.keys) >= trustMaxKeys { // prune, raising the floor to the newest dropped
		cut := now.Add(-trustKeep).UnixNano()
		if len(t.keys) >= trustMaxKeys*2 {
			cut = now.UnixNano()
		}
		for k, at := range t.keys {
			if at <= cut {
				delete(t.keys, k)
				t.raise(at)
			}
		}
	}
	t.keys[h] = now.UnixNano()
}

// raise lifts the floor to at, if higher.
func (t *recordTrust) raise(at int64) {
	for {
		cur := t.floor.Load()
		if at <= cur || t.floor.CompareAndSwap(cur, at) {
			return
		}
	}
}

// trusted reports whether a record of h written at written may answer.
func (t *recordTrust) trusted(h Hash, written, masterChanged int64) bool {
	if written < t.floor.Load() || written < masterChanged {
		return false
	}
	t.mu.RLock()
	at, ok := t.keys[h]
	t.mu.RUnlock()
	return !ok || written >= at
}
