package api

import (
	"encoding/json"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// WebhookDelivery is one outgoing webhook event and the state of its
// delivery, as GET /v1/webhooks/deliveries lists it.
type WebhookDelivery struct {
	ID int64 `json:"id"`
	// MessageID is the webhook-id header, the same on every attempt.
	MessageID string `json:"message_id"`
	Type      string `json:"type"`
	// Status is pending, delivered, failed or skipped.
	Status   string    `json:"status"`
	Attempts int       `json:"attempts"`
	Created  time.Time `json:"created_at"`
	// NextAttemptAt is when a pending event is attempted next.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	// LastStatus is the HTTP status of the last failed answer; LastError
	// says, per endpoint, what failed.
	LastStatus  int      `json:"last_status,omitempty"`
	LastError   string   `json:"last_error,omitempty"`
	DeliveredTo []string `json:"delivered_to"`
	// Payload is the body sent.
	Payload json.RawMessage `json:"payload"`
}

// NewWebhookDelivery is e as the admin API shows it.
func NewWebhookDelivery(e keystore.OutboxEvent) WebhookDelivery {
	d := WebhookDelivery{ID: e.ID, MessageID: e.MessageID, Type: e.Type, Status: e.Status, Attempts: e.Attempts,
		Created: e.CreatedAt, LastAttemptAt: e.LastAttemptAt, LastStatus: e.LastStatus, LastError: e.LastError,
		DeliveredTo: e.DeliveredTo, Payload: e.Payload}
	if e.Status == keystore.OutboxPending {
		d.NextAttemptAt = e.NextAttemptAt
	}
	if d.DeliveredTo == nil {
		d.DeliveredTo = []string{}
	}
	return d
}

// WebhookDeliveryPage is a page of GET /v1/webhooks/deliveries.
type WebhookDeliveryPage struct {
	Deliveries []WebhookDelivery `json:"deliveries"`
	// NextCursor is the cursor of the next page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}
