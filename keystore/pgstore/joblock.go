package pgstore

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/odin-scan/odin-authz/keystore"
)

var _ keystore.JobLocker = (*Store)(nil)

// advisoryKey is the PostgreSQL advisory lock key of a job name: a 64-bit
// FNV-1a hash, in a space of its own (goose's migration lock uses one
// fixed key).
func advisoryKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("odin-job:" + name))
	return int64(h.Sum64())
}

// TryJobLock implements keystore.JobLocker with a session-level advisory
// lock held on a connection of its own until release: a replica that dies
// mid-job closes the connection, and PostgreSQL releases the lock.
func (s *Store) TryJobLock(ctx context.Context, name string) (func(), bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("lock job %s: %w", name, err)
	}
	key := advisoryKey(name)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("lock job %s: %w", name, err)
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return func() {
		// A failed unlock leaves the lock on the connection: drop the
		// connection rather than return it to the pool holding the lock.
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
	}, true, nil
}
