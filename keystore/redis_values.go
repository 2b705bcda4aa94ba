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

// getRaws reads several values SetRaw wrote, in one round trip: pipelined
// GETs, which a cluster client splits by node (MGET would refuse names of
// different slots). found[i] and vals[i] are what GetRaw(names[i]) would
// give; read is false when Redis was unavailable or failed, and then
// nothing was found.
func (r *Redis) getRaws(ctx context.Context, names ...string) (vals [][]byte, found []bool, read bool) {
	vals, found = make([][]byte, len(names)), make([]bool, len(names))
	if !r.available() {
		return vals, found, false
	}
	ctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	pipe := r.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(names))
	for i, name := range names {
		cmds[i] = pipe.Get(ctx, r.prefix+name)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.fail("get", err)
		return vals, found, false
	}
	r.ok()
	for i, cmd := range cmds {
		raw, err := cmd.Bytes()
		if err != nil { // redis.Nil: absent
			continue
		}
		if vals[i], found[i] = r.mac.open(r.prefix+names[i], raw); !found[i] {
			r.m.redisErrors.WithLabelValues("mac").Inc()
		}
	}
	return vals, found, true
}
