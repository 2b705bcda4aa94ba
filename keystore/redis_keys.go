package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// errCacheMiss reports that Redis holds nothing for a hash.
var errCacheMiss = errors.New("not cached")

func (r *Redis) keyName(h Hash) string { return r.prefix + "key:" + h.String() }

// record is what the tier holds for a key hash: the key (nil: no key has
// the hash) and the time it stops answering.
type record struct {
	key   *Key
	until time.Time
}

// cachedKey is the Redis form of a record: the key record (absent for a
// negative entry), the time it stops answering, and when it was written
// (absent from records older versions wrote).
type cachedKey struct {
	Key     *Key  `json:"k,omitempty"`
	Until   int64 `json:"u"`
	Written int64 `json:"w,omitempty"`
}

// get returns the record for h, errCacheMiss, or a Redis error.
func (r *Redis) get(ctx context.Context, h Hash) (*record, error) {
	if !r.available() {
		return nil, errCacheMiss
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	name := r.keyName(h)
	raw, err := r.client.Get(ctx, name).Bytes()
	if errors.Is(err, redis.Nil) {
		r.ok()
		return nil, errCacheMiss
	}
	if err != nil {
		r.fail("get", err)
		return nil, err
	}
	r.ok()
	payload, ok := r.mac.open(name, raw)
	if !ok {
		// Not written by a process holding the secret, or copied from
		// another key's name: a miss, so PostgreSQL says.
		r.m.redisErrors.WithLabelValues("mac").Inc()
		return nil, errCacheMiss
	}
	var c cachedKey
	if err := json.Unmarshal(payload, &c); err != nil || (c.Key != nil && c.Key.ID == "") {
		r.m.redisErrors.WithLabelValues("decode").Inc()
		return nil, errCacheMiss
	}
	if !r.trust.trusted(h, c.Written, r.conn.MasterChanged()) {
		// Older than an invalidation of the key or than this process's
		// move to a new master: it may be a record a revoke overwrote in a
		// write that a failover lost. PostgreSQL says.
		r.m.redisErrors.WithLabelValues("untrusted").Inc()
		return nil, errCacheMiss
	}
	if c.Key != nil {
		c.Key.Hash = h
	}
	return &record{key: c.Key, until: time.Unix(0, c.Until)}, nil
}

// set writes e for h with a TTL that ends when the record does. With onlyNew
// it uses SET NX: a filler that read PostgreSQL before a concurrent revoke
// must not overwrite the revoked record the revoker wrote.
//
// An overwrite (a revoker's) that fails or is skipped is remembered: the
// Publish or PublishAndWait of the key's invalidation that follows retries
// it, and reports its failure (see retryOverwrite).
func (r *Redis) set(ctx context.Context, h Hash, e *record, onlyNew bool) {
	if !r.available() {
		if !onlyNew {
			r.overwriteFailed(h, e)
		}
		return
	}
	if err := r.write(ctx, h, e, onlyNew); err != nil {
		r.fail("set", err)
		if !onlyNew {
			r.overwriteFailed(h, e)
		}
		return
	}
	r.ok()
	if !onlyNew {
		r.pendingMu.Lock()
		delete(r.pending, h)
		r.pendingMu.Unlock()
	}
}

// write stores e for h, stamped with the time of writing.
func (r *Redis) write(ctx context.Context, h Hash, e *record, onlyNew bool) error {
	ttl := time.Until(e.until)
	if ttl <= time.Millisecond {
		return nil
	}
	payload, err := json.Marshal(cachedKey{Key: e.key, Until: e.until.UnixNano(), Written: time.Now().UnixNano()})
	if err != nil {
		return err
	}
	name := r.keyName(h)
	raw := r.mac.seal(name, payload)
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	if onlyNew {
		err = r.client.SetArgs(ctx, name, raw, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
		if errors.Is(err, redis.Nil) { // NX refused: somebody wrote first, which is fine
			err = nil
		}
		return err
	}
	return r.client.Set(ctx, name, raw, ttl).Err()
}

// overwriteFailed remembers a revoker's overwrite that did not happen.
func (r *Redis) overwriteFailed(h Hash, e *record) {
	r.pendingMu.Lock()
	defer r.pendingMu.Unlock()
	if r.pending == nil {
		r.pending = map[Hash]*record{}
	}
	for k, p := range r.pending { // drop the expired, so the map stays small
		if !time.Now().Before(p.until) {
			delete(r.pending, k)
		}
	}
	r.pending[h] = e
}

// retryOverwrite retries a failed overwrite of h's record, Redis' backoff
// notwithstanding, before its invalidation is published. The write a
// revoke makes before it publishes is what a replica that drops the key
// reads next; when it failed (the key's master died, or the client was
// still sending to a master a failover replaced), the record left may allow
// the key, and a replica that missed the message reads it after a
// failover. By the time of the publish the client has often found the new
// master. An error means the record could not be written: the change is
// not final everywhere until the cache TTL.
func (r *Redis) retryOverwrite(ctx context.Context, h Hash) error {
	r.pendingMu.Lock()
	e := r.pending[h]
	r.pendingMu.Unlock()
	if e == nil {
		return nil
	}
	if err := r.write(ctx, h, e, false); err != nil {
		r.m.redisErrors.WithLabelValues("set").Inc()
		return fmt.Errorf("write the key's record to Redis: %w", err)
	}
	r.pendingMu.Lock()
	if r.pending[h] == e {
		delete(r.pending, h)
	}
	r.pendingMu.Unlock()
	return nil
}
