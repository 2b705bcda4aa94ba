package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/internal/keysql"
)

// appendAudit writes ev (when not nil) for target in tx.
func appendAudit(ctx context.Context, tx pgx.Tx, ev *keystore.AuditEvent, target, owner string) error {
	if ev == nil {
		return nil
	}
	details := ev.Prepare(target, owner)
	return tx.QueryRow(ctx, `
		INSERT INTO audit_events (actor, action, target, owner, request_id, details)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, at`,
		ev.Actor, ev.Action, ev.Target, ev.Owner, ev.RequestID, details).Scan(&ev.ID, &ev.At)
}

// appendAuditAndEvent is appendAudit for the event of a change, with its
// webhook event in the outbox, in the same transaction. (Store.AppendAudit
// writes an audit event alone, with no webhook.)
func appendAuditAndEvent(ctx context.Context, tx pgx.Tx, ev *keystore.AuditEvent, target, owner string) error {
	if err := appendAudit(ctx, tx, ev, target, owner); err != nil {
		return err
	}
	return enqueue(ctx, tx, ev)
}

// RevokeSession implements keystore.Store. Revoking twice keeps the first
// revocation time and the later expiry.
func (s *Store) RevokeSession(ctx context.Context, r keystore.RevokedSession, ev *keystore.AuditEvent) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO revoked_sessions (session_id, revoked_at, expires_at, reason)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (session_id) DO UPDATE
			SET expires_at = GREATEST(revoked_sessions.expires_at, EXCLUDED.expires_at)`,
			r.SessionID, r.RevokedAt, r.ExpiresAt, r.Reason); err != nil {
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
	rows, err := s.pool.Query(ctx, `
		SELECT session_id, revoked_at, expires_at, reason FROM revoked_sessions
		WHERE revoked_at >= $1 AND expires_at > $2`, since, now)
	if err != nil {
		return nil, fmt.Errorf("load revoked sessions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.RevokedSession, error) {
		var r keystore.RevokedSession
		err := row.Scan(&r.SessionID, &r.RevokedAt, &r.ExpiresAt, &r.Reason)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("load revoked sessions: %w", err)
	}
	return out, nil
}

// PruneRevokedSessions implements keystore.Store.
func (s *Store) PruneRevokedSessions(ctx context.Context, now time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM revoked_sessions WHERE expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("prune revoked sessions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// AppendAudit implements keystore.Store.
func (s *Store) AppendAudit(ctx context.Context, ev keystore.AuditEvent) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return appendAudit(ctx, tx, &ev, ev.Target, ev.Owner) })
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
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keystore.AuditEvent, error) {
		var e keystore.AuditEvent
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.Owner, &e.RequestID, &e.Details)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	events, next := keysql.Page(events, limit, keysql.AuditCursor)
	return events, next, nil
}

// ForgetDelivery implements keystore.Store.
func (s *Store) ForgetDelivery(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE id = $1`, id); err != nil {
		return fmt.Errorf("forget webhook delivery: %w", err)
	}
	return nil
}

// FirstDelivery implements keystore.Store.
func (s *Store) FirstDelivery(ctx context.Context, id string, keep time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO webhook_deliveries (id) VALUES ($1) ON CONFLICT (id) DO NOTHING`, id)
	if err != nil {
		return false, fmt.Errorf("record webhook delivery: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM webhook_deliveries WHERE received_at < $1`, time.Now().Add(-keep)); err != nil {
		return false, fmt.Errorf("prune webhook deliveries: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}
