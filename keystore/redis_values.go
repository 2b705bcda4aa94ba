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
//
// Reads of concurrent callers share round trips (groupcommit): the first
// is sent at once; those made while it is in flight go together in the
// next pipeline, each sent after its caller asked, so a read never answers
// from before the request that made it.
func (r *Redis) getRaws(ctx context.Context, names ...string) (vals [][]byte, found []bool, read bool) {
	if !r.available() {
		return make([][]byte, len(names)), make([]bool, len(names)), false
	}
	c := &rawRead{names: names}
	if !r.reads.Do(ctx, c) { // the caller gave up: that says nothing of Redis
		return make([][]byte, len(names)), make([]bool, len(names)), false
	}
	return c.vals, c.found, c.read
}

// rawRead is one getRaws call and its answer.
type rawRead struct {
	names []string
	vals  [][]byte
	found []bool
	read  bool
}

// maxReadBatch bounds one pipeline of reads (calls, each of a few GETs).
const maxReadBatch = 128

// readBatch reads every call's names in one pipeline, with a deadline of
// its own (opTimeout), not any one caller's.
func (r *Redis) readBatch(batch []*rawRead) {
	n := 0
	for _, c := range batch {
		c.vals, c.found = make([][]byte, len(c.names)), make([]bool, len(c.names))
		n += len(c.names)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opTimeout)
	defer cancel()
	pipe := r.client.Pipeline()
	cmds := make([]*redis.StringCmd, 0, n)
	for _, c := range batch {
		for _, name := range c.names {
			cmds = append(cmds, pipe.Get(ctx, r.prefix+name))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.fail("get", err)
		return
	}
	r.ok()
	i := 0
	for _, c := range batch {
		c.read = true
		for j, name := range c.names {
			cmd := cmds[i]
			i++
			raw, err := cmd.Bytes()
			if err != nil { // redis.Nil: absent
				continue
			}
			if c.vals[j], c.found[j] = r.mac.open(r.prefix+name, raw); !c.found[j] {
				r.m.redisErrors.WithLabelValues("mac").Inc()
			}
		}
	}
}
