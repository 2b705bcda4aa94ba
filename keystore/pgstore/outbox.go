package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

var _ keystore.OutboxStore = (*Store)(nil)

// enqueue writes the outbox event of ev, just written in tx, when its
// action sends a webhook: with the key as the change left it, read in tx.
func enqueue(ctx context.Context, tx pgx.Tx, ev *keystore.AuditEvent) error {
	if ev == nil {
		return nil
	}
	var key, successor *keystore.Key
	var err error
	switch ev.Action {
	case keystore.ActionKeyCreated, keystore.ActionKeyRevoked, keystore.ActionKeyRolled,
		keystore.ActionKeyUpdated, keystore.ActionKeyDisabled, keystore.ActionKeyEnabled:
		if key, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, ev.Target)); err != nil {
			return fmt.Errorf("webhook event: read key %s: %w", ev.Target, err)
		}
		if ev.Action == keystore.ActionKeyRolled && key.ReplacedBy != "" {
			if successor, err = scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = $1`, key.ReplacedBy)); err != nil {
				return fmt.Errorf("webhook event: read key %s: %w", key.ReplacedBy, err)
			}
		}
	}
	typ, payload, ok, err := keystore.OutboxMessage(ev, key, successor)
	if err != nil || !ok {
		return err
	}
	_, err = insertOutbox(ctx, tx, typ, payload, "", ev.At)
	return err
}

// insertOutbox writes one pending event due at once; with a dedupe key
// that is already there it writes nothing and reports false.
func insertOutbox(ctx context.Context, tx pgx.Tx, typ string, payload []byte, dedupe string, at time.Time) (bool, error) {
	msgID, err := keystore.NewMessageID()
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `
		INSERT INTO webhook_outbox (message_id, event_type, payload, dedupe_key, created_at, next_attempt_at)
		VALUES ($1, $2, $3, NULLIF($4, ''), $5, $5)
		ON CONFLICT (dedupe_key) DO NOTHING`,
		msgID, typ, string(payload), dedupe, at)
	if err != nil {
		return false, fmt.Errorf("write webhook event: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

func scanOutbox(row pgx.Row) (keystore.OutboxEvent, error) {
	var (
		e       keystore.OutboxEvent
		payload []byte
		last    pgtype.Timestamptz
	)
	err := row.Scan(&e.ID, &e.MessageID, &e.Type, &payload, &e.CreatedAt, &e.Status, &e.Attempts,
		&e.NextAttemptAt, &last, &e.LastStatus, &e.LastError, &e.DeliveredTo, &e.Lease)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, keystore.ErrNotFound
	}
	e.Payload = payload
	e.CreatedAt, e.NextAttemptAt, e.LastAttemptAt = e.CreatedAt.UTC(), e.NextAttemptAt.UTC(), tsValue(last)
	if e.DeliveredTo == nil {
		e.DeliveredTo = []string{}
	}
	return e, err
}

// ClaimOutbox implements keystore.OutboxStore: FOR UPDATE SKIP LOCKED
// lets concurrent claims pass each other's rows, and the lease keeps a
// claimed row from the others once the transaction commits.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]keystore.OutboxEvent, error) {
	token, err := keystore.NewMessageID()
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `
		UPDATE webhook_outbox o SET lease_owner = $1, lease_until = $2
		FROM (SELECT id FROM webhook_outbox
		      WHERE status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3)
		      ORDER BY next_attempt_at, id LIMIT $4
		      FOR UPDATE SKIP LOCKED) c
		WHERE o.id = c.id
		RETURNING `+prefixed("o.", keysql.OutboxColumns),
		"lease_"+token, now.Add(lease), now, limit)
	if err != nil {
		return nil, fmt.Errorf("claim webhook events: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.OutboxEvent, error) { return scanOutbox(row) })
	if err != nil {
		return nil, fmt.Errorf("claim webhook events: %w", err)
	}
	return out, nil
}

// FinishAttempt implements keystore.OutboxStore.
func (s *Store) FinishAttempt(ctx context.Context, id int64, lease string, r keystore.AttemptResult) (bool, error) {
	delivered := r.DeliveredTo
	if delivered == nil {
		delivered = []string{}
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE webhook_outbox SET status = $3, attempts = attempts + 1, next_attempt_at = $4,
			last_attempt_at = $5, last_status = $6, last_error = $7, delivered_to = $8,
			lease_owner = '', lease_until = NULL
		WHERE id = $1 AND lease_owner = $2 AND status = 'pending'`,
		id, lease, r.Status, nextAttempt(r), r.At, r.LastStatus, r.LastError, delivered)
	if err != nil {
		return false, fmt.Errorf("record webhook attempt %d: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// nextAttempt is the next_attempt_at an attempt leaves: the retry's time,
// or for a finished event the attempt's own.
func nextAttempt(r keystore.AttemptResult) time.Time {
	if r.Status == keystore.OutboxPending {
		return r.NextAttemptAt
	}
	return r.At
}

// ListOutbox implements keystore.OutboxStore.
func (s *Store) ListOutbox(ctx context.Context, f keystore.OutboxFilter) ([]keystore.OutboxEvent, string, error) {
	limit := keystore.PageLimit(f.Limit)
	q, args, err := keysql.ListOutbox(dialect, f, limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list webhook events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.OutboxEvent, error) { return scanOutbox(row) })
	if err != nil {
		return nil, "", fmt.Errorf("list webhook events: %w", err)
	}
	events, next := keysql.Page(events, limit, keysql.OutboxCursor)
	return events, next, nil
}

// RetryOutbox implements keystore.OutboxStore. A pending event keeps its
// lease, so a retry never hands an event held by a worker to another.
func (s *Store) RetryOutbox(ctx context.Context, id int64, now time.Time) (keystore.OutboxEvent, error) {
	var e keystore.OutboxEvent
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if e, err = scanOutbox(tx.QueryRow(ctx, `SELECT `+keysql.OutboxColumns+` FROM webhook_outbox WHERE id = $1 FOR UPDATE`, id)); err != nil {
			return err
		}
		if e.Status != keystore.OutboxPending && e.Status != keystore.OutboxFailed {
			return fmt.Errorf("%w: the event is %s", keystore.ErrConflict, e.Status)
		}
		e, err = scanOutbox(tx.QueryRow(ctx, `
			UPDATE webhook_outbox SET status = 'pending', next_attempt_at = LEAST(next_attempt_at, $2)
			WHERE id = $1 RETURNING `+keysql.OutboxColumns, id, now))
		return err
	})
	switch {
	case errors.Is(err, keystore.ErrNotFound), errors.Is(err, keystore.ErrConflict):
		return e, err
	case err != nil:
		return e, fmt.Errorf("retry webhook event %d: %w", id, err)
	}
	return e, nil
}

// OutboxBacklog implements keystore.OutboxStore.
func (s *Store) OutboxBacklog(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_outbox WHERE status = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending webhook events: %w", err)
	}
	return n, nil
}

// expiringDedupe is keystore.ExpiringDedupeKey in SQL, of a row of api_keys.
const expiringDedupe = `api_keys.id || ':' || (extract(epoch FROM api_keys.expires_at) * 1000000)::bigint`

// expiringBatch is how many keys EnqueueExpiring writes events for in one
// transaction.
const expiringBatch = 200

// EnqueueExpiring implements keystore.OutboxStore, a batch at a time; the
// dedupe key makes concurrent scans (several admin replicas) write one
// event per key and expiry.
func (s *Store) EnqueueExpiring(ctx context.Context, now time.Time, within time.Duration) (int, error) {
	total := 0
	for {
		q, args := keysql.ExpiringKeys(dialect, keyColumns, expiringDedupe, now, now.Add(within), expiringBatch)
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return total, fmt.Errorf("find expiring keys: %w", err)
		}
		keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*keystore.Key, error) { return scanKey(row) })
		if err != nil {
			return total, fmt.Errorf("find expiring keys: %w", err)
		}
		written := 0
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			for _, k := range keys {
				payload, err := keystore.ExpiringMessage(k, now)
				if err != nil {
					return err
				}
				ok, err := insertOutbox(ctx, tx, keystore.EventKeyExpiring, payload, keystore.ExpiringDedupeKey(k), now)
				if err != nil {
					return err
				}
				if ok {
					written++
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("write key.expiring events: %w", err)
		}
		total += written
		if len(keys) <= expiringBatch || written == 0 { // the rest is the next scan's
			return total, nil
		}
	}
}

// PruneOutbox implements keystore.OutboxStore.
func (s *Store) PruneOutbox(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM webhook_outbox WHERE status <> 'pending' AND created_at < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune webhook events: %w", err)
	}
	return tag.RowsAffected(), nil
}

// prefixed qualifies each of a comma-separated list of columns.
func prefixed(p, columns string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}
