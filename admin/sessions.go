package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// revokeSession is POST /v1/sessions/{sid}/revoke: the operator may log any
// session out; a user their own current session (we cannot know which
// other sessions are theirs, so any other id is a 404).
func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request, c *caller) error {
	sid := r.PathValue("sid")
	if !keystore.ValidSessionID(sid) {
		return errInvalid("sid", "not a valid session id")
	}
	if !c.operator && sid != c.sessionID {
		return errNotFound("no such session")
	}
	rev, err := s.opts.Manager.RevokeSession(r.Context(), c.actor(), sid, "admin_api")
	if err != nil && !errors.Is(err, keystore.ErrNotPropagated) {
		return err
	}
	return writeJSON(w, http.StatusOK, rev)
}

// clerkEvent is the part of a Clerk webhook payload we read.
type clerkEvent struct {
	Type string `json:"type"`
	Data struct {
		ID string `json:"id"`
	} `json:"data"`
}

// webhookTolerance is Svix's timestamp tolerance; a delivery id is
// remembered at least this long, so a replay is either stale or known.
const webhookTolerance = 5 * time.Minute

// clerkWebhook is POST /v1/webhooks/clerk. The Svix signature (HMAC-SHA256
// over id.timestamp.body, timestamps at most 5 minutes off) is verified by
// Svix's own library; a bad, missing or stale signature is a 401 and
// changes nothing; a replayed delivery id is acknowledged and ignored.
// session.ended, session.removed and session.revoked log the session out;
// user.deleted revokes every key the user owns.
func (s *Server) clerkWebhook(w http.ResponseWriter, r *http.Request, _ *caller) error {
	if s.webhook == nil {
		return errNotFound("webhooks are not configured")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return errInvalid("", "request body too large")
	}
	if err := s.webhook.Verify(body, r.Header); err != nil {
		return errUnauthorized()
	}
	var ev clerkEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type == "" {
		return errInvalid("type", "not a Clerk event")
	}
	first, err := s.opts.Store.FirstDelivery(r.Context(), signedDeliveryID(r.Header), 2*webhookTolerance)
	if err != nil {
		return err
	}
	if !first {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "duplicate"})
	}
	by := keystore.Actor{ID: "clerk-webhook", RequestID: signedDeliveryID(r.Header)}
	switch ev.Type {
	case "session.ended", "session.removed", "session.revoked":
		if !keystore.ValidSessionID(ev.Data.ID) {
			return errInvalid("data.id", "not a valid session id")
		}
		if _, err := s.opts.Manager.RevokeSession(r.Context(), by, ev.Data.ID, ev.Type); err != nil && !errors.Is(err, keystore.ErrNotPropagated) {
			return err
		}
	case "user.deleted":
		n, err := s.revokeUserKeys(r, by, ev.Data.ID)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]string{"status": "processed", "revoked_keys": strconv.Itoa(n)})
	default:
		return writeJSON(w, http.StatusOK, map[string]string{"status": "ignored"})
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "processed"})
}

// signedDeliveryID is the delivery id the signature covered: Svix's library
// reads the svix-* headers when all three are present, else the webhook-*
// ones. Replays are detected on that same id, so a second delivery cannot
// hide behind a different header set.
func signedDeliveryID(h http.Header) string {
	if h.Get("svix-id") != "" && h.Get("svix-signature") != "" && h.Get("svix-timestamp") != "" {
		return "svix:" + h.Get("svix-id")
	}
	return "svix:" + h.Get("webhook-id")
}

// revokeUserKeys revokes every active key a user owns or created.
func (s *Server) revokeUserKeys(r *http.Request, by keystore.Actor, userID string) (int, error) {
	if userID == "" {
		return 0, errInvalid("data.id", "user id missing")
	}
	active, n, cursor := false, 0, ""
	for {
		keys, next, err := s.opts.Store.ListKeys(r.Context(), keystore.ListKeysOptions{UserID: userID, Revoked: &active, Limit: 1000, Cursor: cursor})
		if err != nil {
			return n, err
		}
		for _, k := range keys {
			if _, err := s.opts.Manager.Revoke(r.Context(), by, k.ID); err != nil && !errors.Is(err, keystore.ErrNotPropagated) {
				return n, err
			}
			n++
		}
		if next == "" {
			return n, nil
		}
		cursor = next
	}
}

// auditLog is GET /v1/audit-log?action=&actor=&target=&since=&until=&limit=&cursor=.
// Users see events of their own keys and, as organisation admins, of the
// organisation's; the operator sees everything (optionally ?owner=).
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query()
	f := keystore.AuditFilter{Action: q.Get("action"), Actor: q.Get("actor"), Target: q.Get("target"), Cursor: q.Get("cursor")}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return errInvalid(name, name+" must be an RFC 3339 time")
			}
			*dst = t
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "limit must be an integer between 1 and 1000")
		}
		f.Limit = n
	}
	if c.operator {
		if o := q.Get("owner"); o != "" {
			f.Owners = []string{o}
		}
	} else {
		f.Owners = c.owners()
	}
	events, next, err := s.opts.Store.ListAudit(r.Context(), f)
	if err != nil {
		return fieldError(err)
	}
	if events == nil {
		events = []keystore.AuditEvent{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Events     []keystore.AuditEvent `json:"events"`
		NextCursor string                `json:"next_cursor,omitempty"`
	}{events, next})
}
