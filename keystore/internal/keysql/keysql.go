// Package keysql writes the queries both key stores (pgstore, sqlitestore)
// page through keys and audit events with: which rows a
// keystore.ListKeysOptions or keystore.AuditFilter selects, in which order,
// and where a page ends. Each store keeps its own placeholders, time
// encoding and cursor format (a Dialect), and scans the rows itself.
package keysql

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// Dialect is how a store writes query arguments.
type Dialect struct {
	// Placeholder is the placeholder of the n-th argument (from 1): $n or ?.
	Placeholder func(n int) string
	// Time is a time as the store keeps it.
	Time func(time.Time) any
}

// query is a statement being written and its arguments.
type query struct {
	d     Dialect
	where []string
	args  []any
}

// arg adds v as an argument and returns its placeholder.
func (q *query) arg(v any) string {
	q.args = append(q.args, v)
	return q.d.Placeholder(len(q.args))
}

func (q *query) and(cond string) { q.where = append(q.where, cond) }

// sql is the SELECT of columns from table with the conditions, ordered by
// orderBy, limit+1 rows: the one more says that there is a next page.
func (q *query) sql(columns, table, orderBy string, limit int) (string, []any) {
	s := `SELECT ` + columns + ` FROM ` + table
	if len(q.where) > 0 {
		s += " WHERE " + strings.Join(q.where, " AND ")
	}
	s += " ORDER BY " + orderBy + " LIMIT " + q.arg(limit+1)
	return s, q.args
}

// ListKeys is the query of a page of the keys opts selects, of at most limit
// keys, newest first (by created_at, then id). after, when not nil, is the
// created_at and id of the last key of the previous page, as the store
// keeps them; opts.Cursor is the store's to decode.
func ListKeys(d Dialect, columns string, opts keystore.ListKeysOptions, after []any, limit int) (string, []any) {
	q := &query{d: d}
	if opts.UserID != "" {
		q.and("user_id = " + q.arg(opts.UserID))
	}
	if opts.OrgID != "" {
		q.and("org_id = " + q.arg(opts.OrgID))
	}
	if opts.PersonalOnly {
		q.and("org_id = ''")
	}
	if opts.Revoked != nil {
		if *opts.Revoked {
			q.and("revoked_at IS NOT NULL")
		} else {
			q.and("revoked_at IS NULL")
		}
	}
	if !opts.UnusedSince.IsZero() {
		q.and("COALESCE(last_used_at, created_at) < " + q.arg(d.Time(opts.UnusedSince)))
	}
	if !opts.ExpiresBefore.IsZero() {
		q.and("expires_at IS NOT NULL AND expires_at >= " + q.arg(d.Time(opts.ExpiresFrom)) + " AND expires_at < " + q.arg(d.Time(opts.ExpiresBefore)))
	}
	if after != nil {
		q.and(fmt.Sprintf("(created_at, id) < (%s, %s)", q.arg(after[0]), q.arg(after[1])))
	}
	return q.sql(columns, "api_keys", "created_at DESC, id DESC", limit)
}

// UsageTotals is the query of the keystore.UsageTotals of the keys with
// these ids (at least one) at now: rows of key id, the 24-hour total and
// the 30-day total, one aggregate over the (key_id, hour) primary key.
func UsageTotals(d Dialect, ids []string, now time.Time) (string, []any) {
	day, month := keystore.UsageWindows(now)
	q := &query{d: d}
	dayArg := q.arg(d.Time(day))
	ps := make([]string, len(ids))
	for i, id := range ids {
		ps[i] = q.arg(id)
	}
	s := `SELECT key_id, COALESCE(SUM(CASE WHEN hour >= ` + dayArg + ` THEN count ELSE 0 END), 0), COALESCE(SUM(count), 0)
		FROM key_usage_hourly WHERE key_id IN (` + strings.Join(ps, ", ") + `) AND hour >= ` + q.arg(d.Time(month)) + `
		GROUP BY key_id`
	return s, q.args
}

// AuditColumns are the columns ListAudit selects, in this order.
const AuditColumns = `id, at, actor, action, target, owner, request_id, details`

// ListAudit is the query of a page of the audit events f selects, of at
// most limit events, newest first (by id), each row the AuditColumns. Its
// cursor is the id of the last event of the previous page; another is
// ErrInvalid.
func ListAudit(d Dialect, f keystore.AuditFilter, limit int) (string, []any, error) {
	q := &query{d: d}
	if len(f.Owners) > 0 {
		ps := make([]string, len(f.Owners))
		for i, o := range f.Owners {
			ps[i] = q.arg(o)
		}
		q.and("owner IN (" + strings.Join(ps, ", ") + ")")
	}
	for _, c := range []struct{ col, v string }{{"actor", f.Actor}, {"action", f.Action}, {"target", f.Target}} {
		if c.v != "" {
			q.and(c.col + " = " + q.arg(c.v))
		}
	}
	if !f.Since.IsZero() {
		q.and("at >= " + q.arg(d.Time(f.Since)))
	}
	if !f.Until.IsZero() {
		q.and("at < " + q.arg(d.Time(f.Until)))
	}
	if f.Cursor != "" {
		id, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || id <= 0 {
			return "", nil, fmt.Errorf("%w: cursor: not a cursor returned by this API", keystore.ErrInvalid)
		}
		q.and("id < " + q.arg(id))
	}
	s, args := q.sql(AuditColumns, "audit_events", "id DESC", limit)
	return s, args, nil
}

// AuditCursor is the cursor of the page after ev.
func AuditCursor(ev keystore.AuditEvent) string { return strconv.FormatInt(ev.ID, 10) }

// Rows is what both drivers' result sets (pgx.Rows, *sql.Rows) have for
// AppendRows; each store closes its own.
type Rows interface {
	Next() bool
	Err() error
}

// AppendRows appends to out every row of rows, as scan (which reads the
// current row) makes it; on an error it returns nil and the error.
func AppendRows[T any](out []T, rows Rows, scan func() (T, error)) ([]T, error) {
	for rows.Next() {
		v, err := scan()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// ScanRows is Rows that can also be read, as both drivers' are.
type ScanRows interface {
	Rows
	Scan(dest ...any) error
}

// ReadUsageTotals reads the rows of the UsageTotals query into a map by
// key id; n is how many ids were asked for.
func ReadUsageTotals(rows ScanRows, n int) (map[string]keystore.UsageTotals, error) {
	out := make(map[string]keystore.UsageTotals, n)
	for rows.Next() {
		var (
			id string
			t  keystore.UsageTotals
		)
		if err := rows.Scan(&id, &t.Last24h, &t.Last30d); err != nil {
			return nil, err
		}
		out[id] = t
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Page cuts the rows of a query for limit (limit+1 rows at most) to a page
// and returns the cursor of the next: cursor of the page's last row when
// the query found one more, else "".
func Page[T any](rows []T, limit int, cursor func(T) string) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, cursor(rows[limit-1])
}

// OutboxColumns are the columns ListOutbox and the outbox's other reads
// select, in this order.
const OutboxColumns = `id, message_id, event_type, payload, created_at, status, attempts, next_attempt_at, last_attempt_at, last_status, last_error, delivered_to, lease_owner`

// ListOutbox is the query of a page of the outbox events f selects, of at
// most limit events, newest first (by id), each row the OutboxColumns. Its
// cursor is the id of the last event of the previous page; another, or an
// unknown status or type, is ErrInvalid.
func ListOutbox(d Dialect, f keystore.OutboxFilter, limit int) (string, []any, error) {
	q := &query{d: d}
	if f.Status != "" {
		if !contains(keystore.OutboxStatuses, f.Status) {
			return "", nil, fmt.Errorf("%w: status: one of %s", keystore.ErrInvalid, strings.Join(keystore.OutboxStatuses, ", "))
		}
		q.and("status = " + q.arg(f.Status))
	}
	if f.Type != "" {
		if !contains(keystore.EventTypes, f.Type) {
			return "", nil, fmt.Errorf("%w: type: one of %s", keystore.ErrInvalid, strings.Join(keystore.EventTypes, ", "))
		}
		q.and("event_type = " + q.arg(f.Type))
	}
	if f.Cursor != "" {
		id, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || id <= 0 {
			return "", nil, fmt.Errorf("%w: cursor: not a cursor returned by this API", keystore.ErrInvalid)
		}
		q.and("id < " + q.arg(id))
	}
	s, args := q.sql(OutboxColumns, "webhook_outbox", "id DESC", limit)
	return s, args, nil
}

// OutboxCursor is the cursor of the page after ev.
func OutboxCursor(ev keystore.OutboxEvent) string { return strconv.FormatInt(ev.ID, 10) }

// ExpiringKeys is the query of the keys that need a key.expiring event at
// now: neither revoked nor rolled, expiring after now and by until, with no
// event for their current expiry yet (dedupe, a SQL expression of a row of
// api_keys, is keystore.ExpiringDedupeKey of it). At most limit keys, the
// soonest to expire first.
func ExpiringKeys(d Dialect, columns, dedupe string, now, until time.Time, limit int) (string, []any) {
	q := &query{d: d}
	q.and("revoked_at IS NULL")
	q.and("replaced_by = ''")
	q.and("expires_at > " + q.arg(d.Time(now)))
	q.and("expires_at <= " + q.arg(d.Time(until)))
	q.and("NOT EXISTS (SELECT 1 FROM webhook_outbox o WHERE o.dedupe_key = " + dedupe + ")")
	return q.sql(columns, "api_keys", "expires_at, id", limit)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
