package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/odin-scan/odin-authz/admin/api"
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
	if np, ok := asNotPropagated(err); ok {
		return s.writeNotPropagated(w, unconfirmedSessionRevoke, np, "Session revoked, but not every replica confirmed it: its tokens may be accepted until denied_by; retry to propagate it again",
			retryRequest("/v1/sessions/"+sid+"/revoke"), rev)
	}
	if err != nil {
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
	delivery := signedDeliveryID(r.Header)
	first, err := s.opts.Store.FirstDelivery(r.Context(), delivery, 2*webhookTolerance)
	if err != nil {
		return err
	}
	if !first {
		return writeJSON(w, http.StatusOK, map[string]string{"status": "duplicate"})
	}
	result, err := s.applyClerkEvent(r, keystore.Actor{ID: "clerk-webhook", RequestID: delivery}, ev)
	if err != nil {
		// Not done: Svix retries a delivery answered non-2xx, and that
		// retry must be processed again, not taken for a replay. Applying
		// an event twice is harmless: a revoke of a revoked session or key
		// propagates it again.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		if ferr := s.opts.Store.ForgetDelivery(fctx, delivery); ferr != nil {
			s.log.Error("forget a webhook delivery that failed: Svix's retry will be taken for a replay", "request_id", delivery, "error", ferr.Error())
		}
		cancel()
	}
	if np, ok := asNotPropagated(err); ok {
		return s.writeNotPropagated(w, unconfirmedWebhook, np, "Event applied, but not every replica confirmed it: the credentials may be accepted until denied_by; the retry of this delivery propagates it again",
			"Svix retries this delivery (the same svix-id); it is applied again", result)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, result)
}

// applyClerkEvent applies one Clerk event and returns the answer's body.
func (s *Server) applyClerkEvent(r *http.Request, by keystore.Actor, ev clerkEvent) (map[string]string, error) {
	switch ev.Type {
	case "session.ended", "session.removed", "session.revoked":
		if !keystore.ValidSessionID(ev.Data.ID) {
			return nil, errInvalid("data.id", "not a valid session id")
		}
		_, err := s.opts.Manager.RevokeSession(r.Context(), by, ev.Data.ID, ev.Type)
		return map[string]string{"status": "processed"}, err
	case "user.deleted":
		n, err := s.revokeUserKeys(r, by, ev.Data.ID)
		return map[string]string{"status": "processed", "revoked_keys": strconv.Itoa(n)}, err
	default:
		return map[string]string{"status": "ignored"}, nil
	}
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

// revokeUserKeys revokes every active key a user owns or created, and
// propagates again the user's keys revoked too recently for every replica
// to deny them without the bus: the retry of a delivery whose revokes were
// not all confirmed confirms them. It returns how many keys it revoked or
// propagated again; when some were not confirmed, a
// *keystore.NotPropagatedError covering them all.
func (s *Server) revokeUserKeys(r *http.Request, by keystore.Actor, userID string) (int, error) {
	if userID == "" {
		return 0, errInvalid("data.id", "user id missing")
	}
	var (
		mu     sync.Mutex
		n      int
		merged *keystore.NotPropagatedError
	)
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(8) // a silent replica makes each revoke wait out the fence: overlap the waits
	revoke := func(id string) error {
		// The user's account is gone: the user's doing (or their
		// organisation's), not the operator's, and no leak.
		_, err := s.opts.Manager.RevokeWithReason(ctx, by, id, keystore.RevokeReasonUser, map[string]any{"clerk_event": "user.deleted"})
		np, unconfirmed := asNotPropagated(err)
		if err != nil && !unconfirmed {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		n++
		if unconfirmed {
			if merged == nil {
				merged = &keystore.NotPropagatedError{At: np.At, DeniedBy: np.DeniedBy, Cause: np.Cause}
			}
			if np.At.Before(merged.At) {
				merged.At = np.At
			}
			if np.DeniedBy.After(merged.DeniedBy) {
				merged.DeniedBy = np.DeniedBy
			}
		}
		return nil
	}
	recent := time.Now().Add(-s.opts.Manager.KeyPropagationBound())
	cursor := ""
	for {
		keys, next, err := s.opts.Store.ListKeys(ctx, keystore.ListKeysOptions{UserID: userID, Limit: 1000, Cursor: cursor})
		if err != nil {
			_ = g.Wait()
			return n, err
		}
		for _, k := range keys {
			if k.RevokedAt.IsZero() || k.RevokedAt.After(recent) {
				g.Go(func() error { return revoke(k.ID) })
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if err := g.Wait(); err != nil {
		return n, err
	}
	if merged != nil {
		return n, merged
	}
	return n, nil
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
	return writeJSON(w, http.StatusOK, api.AuditPage{Events: events, NextCursor: next})
}
