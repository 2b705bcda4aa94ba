package keystore

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// The outbox holds the events of outgoing webhooks (admin/webhooks): each
// store writes an event in the same transaction as the change and its audit
// event (OutboxMessage, from the store's appendAudit), so a committed change
// always has its event and a rolled-back one never does; `odin admin`
// delivers them.

// EventKeyExpiring is the webhook event sent some days before a key
// expires. The other event types are the audit actions (ActionKeyCreated,
// ActionKeyRevoked, ActionKeyRolled, ActionKeyUpdated, ActionKeyDisabled,
// ActionKeyEnabled, ActionSessionRevoked).
const EventKeyExpiring = "key.expiring"

// EventTypes are the types of the webhook events, in the order the
// documentation lists them.
var EventTypes = []string{ActionKeyCreated, ActionKeyRevoked, ActionKeyRolled, ActionKeyUpdated, ActionKeyDisabled, ActionKeyEnabled,
	EventKeyExpiring, ActionSessionRevoked}

// The states of an outbox event.
const (
	// OutboxPending: not yet delivered to every endpoint it is for; it is
	// attempted at its NextAttemptAt.
	OutboxPending = "pending"
	// OutboxDelivered: every endpoint it is for answered 2xx.
	OutboxDelivered = "delivered"
	// OutboxFailed: the attempts ran out; an operator may retry it.
	OutboxFailed = "failed"
	// OutboxSkipped: no configured endpoint takes its type.
	OutboxSkipped = "skipped"
)

// OutboxStatuses are the states of an outbox event.
var OutboxStatuses = []string{OutboxPending, OutboxDelivered, OutboxFailed, OutboxSkipped}

// OutboxEvent is one outgoing webhook event and the state of its delivery.
type OutboxEvent struct {
	// ID is the row id: the delivery's id in the admin API.
	ID int64
	// MessageID is the webhook-id header, the same on every attempt, for
	// receivers to drop duplicates by.
	MessageID string
	Type      string
	// Payload is the body, {"type", "timestamp", "data"}, as sent.
	Payload       json.RawMessage
	CreatedAt     time.Time
	Status        string
	Attempts      int
	NextAttemptAt time.Time
	// LastAttemptAt is zero before the first attempt.
	LastAttemptAt time.Time
	// LastStatus is the HTTP status of the last failed endpoint's answer
	// (0: none, the request failed); LastError says what failed.
	LastStatus int
	LastError  string
	// DeliveredTo are the names of the endpoints that answered 2xx: a
	// retry goes only to the others.
	DeliveredTo []string
	// Lease is the claim of the worker that holds the event (ClaimOutbox):
	// only that claim may record the attempt.
	Lease string
}

// AttemptResult is what one delivery attempt of an event came to.
type AttemptResult struct {
	Status        string // OutboxPending (to retry), OutboxDelivered, OutboxFailed or OutboxSkipped
	At            time.Time
	NextAttemptAt time.Time // when Status is OutboxPending
	LastStatus    int
	LastError     string
	DeliveredTo   []string
}

// OutboxFilter selects outbox events. Empty fields match everything.
type OutboxFilter struct {
	Status string
	Type   string
	Limit  int    // 1..1000, default 50
	Cursor string // from the previous page
}

// OutboxStore is the outbox both stores keep beside keys. Times are the
// caller's clock, so that a worker's schedule is its own.
type OutboxStore interface {
	// ClaimOutbox leases up to limit pending events due at now to the
	// caller until now+lease, oldest due first, and returns them with their
	// Lease. An event leased to another claim is not returned until that
	// lease has passed: concurrent workers never hold one event at once.
	ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]OutboxEvent, error)
	// FinishAttempt records an attempt of the event claimed as lease and
	// ends the lease. It reports false, recording nothing, when the lease
	// was lost (it passed and another worker claimed the event).
	FinishAttempt(ctx context.Context, id int64, lease string, r AttemptResult) (bool, error)
	// ListOutbox returns a page of events, newest first.
	ListOutbox(ctx context.Context, f OutboxFilter) ([]OutboxEvent, string, error)
	// RetryOutbox makes a pending or failed event due at now, and returns
	// it; ErrNotFound when there is none, ErrConflict when it was
	// delivered or skipped. A failed event gets one more attempt.
	RetryOutbox(ctx context.Context, id int64, now time.Time) (OutboxEvent, error)
	// OutboxBacklog counts the pending events.
	OutboxBacklog(ctx context.Context) (int64, error)
	// EnqueueExpiring writes a key.expiring event for every key neither
	// revoked nor rolled that expires after now and at most within after
	// it, once per key and expiry, and returns how many it wrote.
	EnqueueExpiring(ctx context.Context, now time.Time, within time.Duration) (int, error)
	// PruneOutbox deletes the delivered, failed and skipped events created
	// before the given time.
	PruneOutbox(ctx context.Context, before time.Time) (int64, error)
}

// OutboxMessage is the outbox entry of audit event ev, written in its
// transaction: its type and body. key is the key ev is about as the
// change left it, successor the key a roll made; both nil for a session
// event. ok is false for an action that sends no webhook.
func OutboxMessage(ev *AuditEvent, key, successor *Key) (typ string, payload []byte, ok bool, err error) {
	var data any
	switch ev.Action {
	case ActionKeyCreated:
		data = keyEventData{Key: webhookKeyOf(key)}
	case ActionKeyRolled:
		data = keyEventData{Key: webhookKeyOf(key), Successor: webhookKeyOf(successor)}
	case ActionKeyRevoked:
		data = keyEventData{Key: webhookKeyOf(key), Reason: RevokeReason(ev, key)}
	case ActionKeyUpdated:
		changes, _ := ev.Details["changes"].(map[string]any)
		data = keyEventData{Key: webhookKeyOf(key), Changes: changes}
	case ActionKeyDisabled, ActionKeyEnabled:
		data = keyEventData{Key: webhookKeyOf(key)}
	case ActionSessionRevoked:
		reason, _ := ev.Details["reason"].(string)
		data = sessionEventData{Session: webhookSession{ID: ev.Target, RevokedAt: ev.At.UTC(), Reason: reason}}
	default:
		return "", nil, false, nil
	}
	if key == nil && ev.Action != ActionSessionRevoked {
		return "", nil, false, fmt.Errorf("%s event of %s: no key", ev.Action, ev.Target)
	}
	payload, err = marshalEvent(ev.Action, ev.At, data)
	return ev.Action, payload, err == nil, err
}

// ExpiringMessage is the body of the key.expiring event of k, at now.
func ExpiringMessage(k *Key, now time.Time) ([]byte, error) {
	return marshalEvent(EventKeyExpiring, now, keyEventData{Key: webhookKeyOf(k)})
}

// ExpiringDedupeKey names the key.expiring event of k's current expiry:
// the outbox holds at most one event per name.
func ExpiringDedupeKey(k *Key) string {
	return fmt.Sprintf("%s:%d", k.ID, k.ExpiresAt.UnixMicro())
}

// RevokeReason is the reason of a key.revoked event: the "reason" detail
// of its audit event when there is one, else who revoked it: an operator
// (the operator token, the CLI, the Clerk webhook) or a user.
func RevokeReason(ev *AuditEvent, key *Key) string {
	if r, _ := ev.Details["reason"].(string); r != "" {
		return r
	}
	if ev.Actor == "operator" || strings.HasPrefix(ev.Actor, "operator:") || ev.Actor == "clerk-webhook" {
		return RevokeReasonOperator
	}
	return RevokeReasonUser
}

// NewMessageID returns a webhook message id: msg_ and 24 base62 characters.
func NewMessageID() (string, error) {
	const n = 24
	buf := make([]byte, 0, 4+n)
	buf = append(buf, "msg_"...)
	var rnd [32]byte
	for len(buf) < cap(buf) {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", err
		}
		for _, b := range rnd {
			if b < 248 && len(buf) < cap(buf) {
				buf = append(buf, base62Alphabet[b%62])
			}
		}
	}
	return string(buf), nil
}

// webhookEvent is a body in the Standard Webhooks shape.
type webhookEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      any       `json:"data"`
}

func marshalEvent(typ string, at time.Time, data any) ([]byte, error) {
	b, err := json.Marshal(webhookEvent{Type: typ, Timestamp: at.UTC(), Data: data})
	if err != nil {
		return nil, fmt.Errorf("%s event: %w", typ, err)
	}
	return b, nil
}

type keyEventData struct {
	Key       *webhookKey `json:"key"`
	Successor *webhookKey `json:"successor,omitempty"`
	Reason    string      `json:"reason,omitempty"`
	// Changes are a key.updated event's changed fields, each with its
	// "from" and "to".
	Changes map[string]any `json:"changes,omitempty"`
}

// webhookKey is a key as the events show it: never the key or its hash.
type webhookKey struct {
	ID         string     `json:"id"`
	Owner      string     `json:"owner"`
	UserID     string     `json:"user_id,omitempty"`
	OrgID      string     `json:"org_id,omitempty"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	Scopes     []string   `json:"scopes"`
	Tier       string     `json:"tier"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at,omitzero"`
	RevokedAt  time.Time  `json:"revoked_at,omitzero"`
	ReplacedBy string     `json:"replaced_by,omitempty"`
	DisabledAt time.Time  `json:"disabled_at,omitzero"`
	RateLimit  *RateLimit `json:"rate_limit,omitempty"`
	// AllowedCIDRs: absent for any network.
	AllowedCIDRs []netip.Prefix `json:"allowed_cidrs,omitempty"`
}

func webhookKeyOf(k *Key) *webhookKey {
	if k == nil {
		return nil
	}
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return &webhookKey{ID: k.ID, Owner: k.Owner(), UserID: k.UserID, OrgID: k.OrgID, Name: k.Name, Hint: k.Hint,
		Scopes: scopes, Tier: k.Tier, CreatedAt: k.CreatedAt.UTC(), ExpiresAt: k.ExpiresAt.UTC(),
		RevokedAt: k.RevokedAt.UTC(), ReplacedBy: k.ReplacedBy, DisabledAt: k.DisabledAt.UTC(), RateLimit: k.RateLimit,
		AllowedCIDRs: k.AllowedCIDRs}
}

type sessionEventData struct {
	Session webhookSession `json:"session"`
}

type webhookSession struct {
	ID        string    `json:"id"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}
