package keystore

import (
	"encoding/binary"
	"strings"
	"sync"
)

// internTable gives each distinct value (a tier, or a key's list of scopes)
// one copy and a small number, so that a million cached keys with the same
// three scopes hold one list, not a million. Values are counted: the last
// release forgets one, so the table holds only what cached keys refer to,
// however many distinct values keys have had. Numbers are reused.
//
// The compact tier's records are in memory the garbage collector does not
// scan, so they cannot hold a pointer (a unique.Handle, a string): they hold
// the number instead.
type internTable struct {
	mu   sync.RWMutex
	ids  map[string]uint32
	vals []internValue
	free []uint32
}

// internValue is one interned value: its text (the tier, or the scopes'
// encoding) and, for scopes, the list itself, shared read-only.
type internValue struct {
	key  string
	list []string
	refs int
}

func newInternTable() *internTable { return &internTable{ids: map[string]uint32{}} }

// acquire returns the number of key, interning it (with list) if new, and
// counts one more reference.
func (t *internTable) acquire(key string, list []string) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[key]; ok {
		t.vals[id].refs++
		return id
	}
	// Copies: the table must not keep the caller's record alive.
	v := internValue{key: strings.Clone(key), refs: 1}
	if list != nil {
		v.list = make([]string, len(list))
		for i, s := range list {
			v.list[i] = strings.Clone(s)
		}
	}
	var id uint32
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
		t.vals[id] = v
	} else {
		id = uint32(len(t.vals))
		t.vals = append(t.vals, v)
	}
	t.ids[v.key] = id
	return id
}

// release drops one reference to id; the last one forgets the value.
func (t *internTable) release(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := &t.vals[id]
	if v.refs--; v.refs > 0 {
		return
	}
	delete(t.ids, v.key)
	*v = internValue{}
	t.free = append(t.free, id)
}

// get returns the value of a number a caller holds a reference to.
func (t *internTable) get(id uint32) (key string, list []string) {
	t.mu.RLock()
	v := t.vals[id]
	t.mu.RUnlock()
	return v.key, v.list
}

// len is the number of distinct values held.
func (t *internTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.ids)
}

// scopesKey is the interning key of a list of scopes: each scope prefixed
// by its length, so that no two lists share one whatever they contain. A
// nil list and an empty one differ (the store may return either; the
// cache hands back what it was given).
func scopesKey(scopes []string) string {
	if scopes == nil {
		return ""
	}
	n := 1
	for _, s := range scopes {
		n += binary.MaxVarintLen64 + len(s)
	}
	b := make([]byte, 1, n)
	b[0] = '[' // not nil
	for _, s := range scopes {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return string(b)
}

// internScopes interns a key's scopes.
func (t *internTable) internScopes(scopes []string) uint32 {
	return t.acquire(scopesKey(scopes), scopes)
}
