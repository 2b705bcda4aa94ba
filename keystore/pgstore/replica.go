package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/odin-scan/odin-authz/keystore"
)

// replica is the read replica's pool: it answers KeyByHash when the
// watermark allows, and nothing else.
type replica struct {
	pool *pgxpool.Pool
	wm   *keystore.Watermark
	// downUntil (UnixNano) skips the replica for a moment after it failed,
	// so a dead replica costs one timeout per backoff, not one per lookup.
	downUntil atomic.Int64
}

const (
	// replicaBackoff is how long lookups skip the replica after it failed.
	replicaBackoff = time.Second
	// replicaTimeout bounds a replica read when the caller set no deadline;
	// with one, the replica gets half of what is left, so the primary still
	// has time to answer when the replica hangs.
	replicaTimeout = 250 * time.Millisecond
)

var errNotStandby = errors.New("the read database is not a standby (pg_last_wal_replay_lsn() is NULL)")

func openReplica(ctx context.Context, opts Options) (*replica, error) {
	if opts.Watermark == nil {
		return nil, errors.New("open read replica: a read URL needs a watermark")
	}
	cfg, err := poolConfig(opts.ReadURL, opts)
	if err != nil {
		return nil, errors.New("parse database read url: invalid PostgreSQL connection string")
	}
	// The replay position read before the row bounds what the row's
	// snapshot holds only if the row's statement takes a snapshot of its
	// own, after the position: READ COMMITTED, whatever the server default.
	cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "read committed"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open read replica pool: %w", err)
	}
	return &replica{pool: pool, wm: opts.Watermark}, nil
}

// keyByHashRouted reads a key from the replica when the watermark allows
// and the replica had replayed the key's last known change when it read
// the row; otherwise, or when the replica fails, from the primary. A
// replica's "not found" is trusted like its rows: a key created on the
// primary is announced on the bus with its position, so its lookups go to
// the primary until the replica has it; without the bus such an answer is
// cached for the negative TTL only.
func (s *Store) keyByHashRouted(ctx context.Context, h keystore.Hash) (*keystore.Key, error) {
	r := s.rep
	route := r.wm.Route(h, time.Now())
	if route.Reason == "" {
		if down := r.downUntil.Load(); down != 0 && time.Now().UnixNano() < down {
			route.Reason = keystore.FallbackReplicaError
		} else {
			k, replayed, err := r.keyByHash(ctx, h)
			switch {
			case err != nil && !errors.Is(err, keystore.ErrNotFound):
				if ctx.Err() != nil { // the caller gave up: not the replica's fault
					return nil, fmt.Errorf("look up key by hash: %w", err)
				}
				r.downUntil.Store(time.Now().Add(replicaBackoff).UnixNano())
				r.wm.ReplicaFailed(err)
				route.Reason = keystore.FallbackReplicaError
			case r.wm.Accept(h, replayed):
				return k, err
			default:
				route.Reason = keystore.FallbackLag
			}
		}
	}
	r.wm.Fallback(route.Reason)
	k, at, err := s.keyByHashAt(ctx, h)
	if err == nil || errors.Is(err, keystore.ErrNotFound) {
		r.wm.Primary(h, at, route)
	}
	return k, err
}

// keyByHash reads the replica's replay position, then the key, in one round
// trip: two statements, each with its own snapshot, so the row reflects at
// least everything replayed up to the position.
func (r *replica) keyByHash(ctx context.Context, h keystore.Hash) (*keystore.Key, keystore.LSN, error) {
	d := replicaTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl) / 2
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_last_wal_replay_lsn()::text`)
	b.Queue(`SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, h[:])
	br := r.pool.SendBatch(ctx, b)
	var (
		pos pgtype.Text
		k   *keystore.Key
	)
	err := br.QueryRow().Scan(&pos)
	if err == nil {
		k, err = scanKey(br.QueryRow())
	}
	if cerr := br.Close(); cerr != nil && (err == nil || errors.Is(err, keystore.ErrNotFound)) {
		err = cerr
	}
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("read replica: %w", err)
	}
	if !pos.Valid {
		return nil, 0, errNotStandby
	}
	at, perr := keystore.ParseLSN(pos.String)
	if perr != nil {
		return nil, 0, fmt.Errorf("read replica: %w", perr)
	}
	return k, at, err
}

// keyByHashAt reads a key from the primary, then the primary's WAL insert
// position, in one round trip. The position is read after the row, so it
// is at or past every change the row reflects, committed synchronously or
// not. It is zero when it cannot be read (a primary URL that points at a
// standby during a failover): the row is still the answer.
func (s *Store) keyByHashAt(ctx context.Context, h keystore.Hash) (*keystore.Key, keystore.LSN, error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT `+keyColumns+` FROM api_keys WHERE key_hash = $1`, h[:])
	b.Queue(`SELECT pg_current_wal_insert_lsn()::text`)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	k, err := scanKey(br.QueryRow())
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("look up key by hash: %w", err)
	}
	var pos pgtype.Text
	if br.QueryRow().Scan(&pos) != nil || !pos.Valid {
		return k, 0, err
	}
	at, perr := keystore.ParseLSN(pos.String)
	if perr != nil {
		return k, 0, err
	}
	return k, at, err
}

// WALPosition implements keystore.WALPositioner: the primary's WAL insert
// position, at or past the end of every transaction already committed.
func (s *Store) WALPosition(ctx context.Context) (keystore.LSN, error) {
	var pos string
	if err := s.pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read WAL position: %w", err)
	}
	return keystore.ParseLSN(pos)
}

// HasReplica reports whether a read replica is configured.
func (s *Store) HasReplica() bool { return s.rep != nil }

// PingReplica reports whether the read replica answers and is a standby.
func (s *Store) PingReplica(ctx context.Context) error {
	if s.rep == nil {
		return errors.New("no read replica configured")
	}
	var standby bool
	if err := s.rep.pool.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&standby); err != nil {
		return fmt.Errorf("ping read replica: %w", err)
	}
	if !standby {
		return errNotStandby
	}
	return nil
}

var _ keystore.WALPositioner = (*Store)(nil)
