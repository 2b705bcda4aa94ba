package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

var _ keystore.OutboxStore = (*Store)(nil)

// appendAuditAndEvent is appendAudit for the event of a change, with its
// webhook event in the outbox, in the same transaction. (Store.AppendAudit
// writes an audit event alone, with no webhook.)
func appendAuditAndEvent(ctx context.Context, tx *sql.Tx, ev *keystore.AuditEvent, target, owner string) error {
	if err := appendAudit(ctx, tx, ev, target, owner); err != nil {
		return err
	}
	return enqueue(ctx, tx, ev)
}

// enqueue writes the outbox event of ev, just written in tx, when its
// action sends a webhook: with the key as the change left it, read in tx.
func enqueue(ctx context.Context, tx *sql.Tx, ev *keystore.AuditEvent) error {
	if ev == nil {
		return nil
	}
	var key, successor *keystore.Key
	var err error
	switch ev.Action {
	case keystore.ActionKeyCreated, keystore.ActionKeyRevoked, keystore.ActionKeyRolled,
		keystore.ActionKeyUpdated, keystore.ActionKeyDisabled, keystore.ActionKeyEnabled:
		if key, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, ev.Target)); err != nil {
			return fmt.Errorf("webhook event: read key %s: %w", ev.Target, err)
		}
		if ev.Action == keystore.ActionKeyRolled && key.ReplacedBy != "" {
			if successor, err = scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE id = ?`, key.ReplacedBy)); err != nil {
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
func insertOutbox(ctx context.Context, tx *sql.Tx, typ string, payload []byte, dedupe string, at time.Time) (bool, error) {
	msgID, err := keystore.NewMessageID()
	if err != nil {
		return false, err
	}
	res, err := tx.ExecContext(ctx, `
		INSERT INTO webhook_outbox (message_id, event_type, payload, dedupe_key, created_at, next_attempt_at)
		VALUES (?, ?, ?, NULLIF(?, ''), ?, ?)
		ON CONFLICT (dedupe_key) DO NOTHING`,
		msgID, typ, string(payload), dedupe, micros(at), micros(at))
	if err != nil {
		return false, fmt.Errorf("write webhook event: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func scanOutbox(row scanner) (keystore.OutboxEvent, error) {
	var (
		e                  keystore.OutboxEvent
		payload, delivered string
		created, next      int64
		last               sql.NullInt64
	)
	err := row.Scan(&e.ID, &e.MessageID, &e.Type, &payload, &created, &e.Status, &e.Attempts,
		&next, &last, &e.LastStatus, &e.LastError, &delivered, &e.Lease)
	if errors.Is(err, sql.ErrNoRows) {
		return e, keystore.ErrNotFound
	}
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(delivered), &e.DeliveredTo); err != nil {
		return e, fmt.Errorf("webhook event %d delivered_to: %w", e.ID, err)
	}
	if e.DeliveredTo == nil {
		e.DeliveredTo = []string{}
	}
	e.Payload = json.RawMessage(payload)
	e.CreatedAt, e.NextAttemptAt, e.LastAttemptAt = fromMicros(created), fromMicros(next), fromNullMicros(last)
	return e, nil
}

// collectOutbox reads every row of rows, closing them.
func collectOutbox(rows *sql.Rows) ([]keystore.OutboxEvent, error) {
	defer rows.Close()
	return keysql.AppendRows(nil, rows, func() (keystore.OutboxEvent, error) { return scanOutbox(rows) })
}

// ClaimOutbox implements keystore.OutboxStore. Writes take turns on the
// writer connection, so two claims never see one row as free.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]keystore.OutboxEvent, error) {
	token, err := keystore.NewMessageID()
	if err != nil {
		return nil, err
	}
	var out []keystore.OutboxEvent
	err = s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `
			UPDATE webhook_outbox SET lease_owner = ?, lease_until = ?
			WHERE id IN (SELECT id FROM webhook_outbox
			             WHERE status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
			             ORDER BY next_attempt_at, id LIMIT ?)
			RETURNING `+keysql.OutboxColumns,
			"lease_"+token, micros(now.Add(lease)), micros(now), micros(now), limit)
		if err != nil {
			return err
		}
		out, err = collectOutbox(rows)
		return err
	})
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
	js, err := json.Marshal(delivered)
	if err != nil {
		return false, err
	}
	next := r.At
	if r.Status == keystore.OutboxPending {
		next = r.NextAttemptAt
	}
	var n int64
	err = s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `
			UPDATE webhook_outbox SET status = ?, attempts = attempts + 1, next_attempt_at = ?,
				last_attempt_at = ?, last_status = ?, last_error = ?, delivered_to = ?,
				lease_owner = '', lease_until = NULL
			WHERE id = ? AND lease_owner = ? AND status = 'pending'`,
			r.Status, micros(next), micros(r.At), r.LastStatus, r.LastError, string(js), id, lease)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record webhook attempt %d: %w", id, err)
	}
	return n == 1, nil
}

// ListOutbox implements keystore.OutboxStore.
func (s *Store) ListOutbox(ctx context.Context, f keystore.OutboxFilter) ([]keystore.OutboxEvent, string, error) {
	limit := keystore.PageLimit(f.Limit)
	q, args, err := keysql.ListOutbox(dialect, f, limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list webhook events: %w", err)
	}
	events, err := collectOutbox(rows)
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		if e, err = scanOutbox(tx.QueryRowContext(ctx, `SELECT `+keysql.OutboxColumns+` FROM webhook_outbox WHERE id = ?`, id)); err != nil {
			return err
		}
		if e.Status != keystore.OutboxPending && e.Status != keystore.OutboxFailed {
			return fmt.Errorf("%w: the event is %s", keystore.ErrConflict, e.Status)
		}
		e, err = scanOutbox(tx.QueryRowContext(ctx, `
			UPDATE webhook_outbox SET status = 'pending', next_attempt_at = MIN(next_attempt_at, ?)
			WHERE id = ? RETURNING `+keysql.OutboxColumns, micros(now), id))
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
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM webhook_outbox WHERE status = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending webhook events: %w", err)
	}
	return n, nil
}

// expiringDedupe is keystore.ExpiringDedupeKey in SQL, of a row of api_keys.
const expiringDedupe = `api_keys.id || ':' || api_keys.expires_at`

// EnqueueExpiring implements keystore.OutboxStore, in one transaction.
func (s *Store) EnqueueExpiring(ctx context.Context, now time.Time, within time.Duration) (int, error) {
	written := 0
	err := s.write(ctx, func(tx *sql.Tx) error {
		q, args := keysql.ExpiringKeys(dialect, keyColumns, expiringDedupe, now, now.Add(within), 1000)
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		keys, err := func() ([]*keystore.Key, error) {
			defer rows.Close()
			return keysql.AppendRows(nil, rows, func() (*keystore.Key, error) { return scanKey(rows) })
		}()
		if err != nil {
			return err
		}
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
		return 0, fmt.Errorf("write key.expiring events: %w", err)
	}
	return written, nil
}

// PruneOutbox implements keystore.OutboxStore.
func (s *Store) PruneOutbox(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM webhook_outbox WHERE status <> 'pending' AND created_at < ?`, micros(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune webhook events: %w", err)
	}
	return n, nil
}
