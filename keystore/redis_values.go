package keystore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// GetRaw reads a value SetRaw wrote under the prefix; ok is false when it is
// absent, fails to authenticate (counted as op "mac": not written by a
// process holding the secret, or not under this name) or Redis is
// unavailable (best-effort, like every cache read).
func (r *Redis) GetRaw(ctx context.Context, name string) ([]byte, bool) {
	if !r.available() {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	full := r.prefix + name
	raw, err := r.client.Get(ctx, full).Bytes()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			r.fail("get", err)
		}
		return nil, false
	}
	r.ok()
	val, ok := r.mac.open(full, raw)
	if !ok {
		r.m.redisErrors.WithLabelValues("mac").Inc()
		return nil, false
	}
	return val, true
}

// SetRaw writes a value under the prefix with a TTL, best-effort, sealed
// so that only GetRaw of the same name accepts it.
func (r *Redis) SetRaw(ctx context.Context, name string, val []byte, ttl time.Duration) {
	if !r.available() || ttl <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	full := r.prefix + name
	if err := r.client.Set(ctx, full, r.mac.seal(full, val), ttl).Err(); err != nil {
		r.fail("set", err)
		return
	}
	r.ok()
}

func revokedSessionKey(sid string) string { return "rsid:" + sid }
