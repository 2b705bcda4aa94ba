package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

// appendAudit writes ev (when not nil) for target in tx, and fills in its
// id and time as pgstore does.
func appendAudit(ctx context.Context, tx *sql.Tx, ev *keystore.AuditEvent, target, owner string) error {
	if ev == nil {
		return nil
	}
	details := ev.Prepare(target, owner)
	js, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("audit details: %w", err)
	}
	at := timestamp()
	if err := tx.QueryRowContext(ctx, `
		INSERT INTO audit_events (at, actor, action, target, owner, request_id, details)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		micros(at), ev.Actor, ev.Action, ev.Target, ev.Owner, ev.RequestID, string(js)).Scan(&ev.ID); err != nil {
		return err
	}
	ev.At = at
	return nil
}

// AppendAudit implements keystore.Store.
func (s *Store) AppendAudit(ctx context.Context, ev keystore.AuditEvent) error {
	err := s.write(ctx, func(tx *sql.Tx) error { return appendAudit(ctx, tx, &ev, ev.Target, ev.Owner) })
	if err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return nil
}

// ListAudit implements keystore.Store with keyset pagination on id.
func (s *Store) ListAudit(ctx context.Context, f keystore.AuditFilter) ([]keystore.AuditEvent, string, error) {
	limit := keystore.PageLimit(f.Limit)
	q, args, err := keysql.ListAudit(dialect, f, limit)
	if err != nil {
		return nil, "", err
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	defer rows.Close()
	events, err := keysql.AppendRows(nil, rows, func() (keystore.AuditEvent, error) {
		var (
			e       keystore.AuditEvent
			at      int64
			details string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Owner, &e.RequestID, &details); err != nil {
			return e, err
		}
		if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
			return e, fmt.Errorf("event %d details: %w", e.ID, err)
		}
		e.At = fromMicros(at)
		return e, nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	events, next := keysql.Page(events, limit, keysql.AuditCursor)
	return events, next, nil
}

// RevokeSession implements keystore.Store. Revoking twice keeps the first
// revocation time and the later expiry.
func (s *Store) RevokeSession(ctx context.Context, r keystore.RevokedSession, ev *keystore.AuditEvent) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO revoked_sessions (session_id, revoked_at, expires_at, reason)
			VALUES (?, ?, ?, ?)
			ON CONFLICT (session_id) DO UPDATE
			SET expires_at = MAX(revoked_sessions.expires_at, excluded.expires_at)`,
			r.SessionID, micros(r.RevokedAt), micros(r.ExpiresAt), r.Reason); err != nil {
			return err
		}
		return appendAuditAndEvent(ctx, tx, ev, r.SessionID, "")
	})
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// RevokedSessions implements keystore.Store.
func (s *Store) RevokedSessions(ctx context.Context, since, now time.Time) ([]keystore.RevokedSession, error) {
	rows, err := s.reader.QueryContext(ctx, `
		SELECT session_id, revoked_at, expires_at, reason FROM revoked_sessions
		WHERE revoked_at >= ? AND expires_at > ?`, micros(since), micros(now))
	if err != nil {
		return nil, fmt.Errorf("load revoked sessions: %w", err)
	}
	defer rows.Close()
	var out []keystore.RevokedSession
	for rows.Next() {
		var (
			r                  keystore.RevokedSession
			revoked, expiresAt int64
		)
		if err := rows.Scan(&r.SessionID, &revoked, &expiresAt, &r.Reason); err != nil {
			return nil, fmt.Errorf("load revoked sessions: %w", err)
		}
		r.RevokedAt, r.ExpiresAt = fromMicros(revoked), fromMicros(expiresAt)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load revoked sessions: %w", err)
	}
	return out, nil
}

// PruneRevokedSessions implements keystore.Store.
func (s *Store) PruneRevokedSessions(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM revoked_sessions WHERE expires_at <= ?`, micros(now))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune revoked sessions: %w", err)
	}
	return n, nil
}

// ForgetDelivery implements keystore.Store.
func (s *Store) ForgetDelivery(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("forget webhook delivery: %w", err)
	}
	return nil
}

// FirstDelivery implements keystore.Store.
func (s *Store) FirstDelivery(ctx context.Context, id string, keep time.Duration) (bool, error) {
	var first bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		at := timestamp()
		res, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, id, micros(at))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		first = n == 1
		_, err = tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE received_at < ?`, micros(time.Now().Add(-keep)))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("record webhook delivery: %w", err)
	}
	return first, nil
}
