package admin

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
)

// outbox is the store's outgoing webhook outbox, for the operator's
// delivery status; both stores keep one.
func (s *Server) outbox(c *caller) (keystore.OutboxStore, error) {
	if !c.operator {
		return nil, errForbidden("webhook deliveries are for the operator")
	}
	ob, ok := s.opts.Store.(keystore.OutboxStore)
	if !ok {
		return nil, errNotFound("this store keeps no outgoing webhooks")
	}
	return ob, nil
}

// listWebhookDeliveries is GET /v1/webhooks/deliveries?status=&type=&limit=&cursor=,
// newest first.
func (s *Server) listWebhookDeliveries(w http.ResponseWriter, r *http.Request, c *caller) error {
	ob, err := s.outbox(c)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := keystore.OutboxFilter{Status: q.Get("status"), Type: q.Get("type"), Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "limit must be an integer between 1 and 1000")
		}
		f.Limit = n
	}
	events, next, err := ob.ListOutbox(r.Context(), f)
	if err != nil {
		return fieldError(err)
	}
	page := api.WebhookDeliveryPage{Deliveries: make([]api.WebhookDelivery, 0, len(events)), NextCursor: next}
	for _, e := range events {
		page.Deliveries = append(page.Deliveries, api.NewWebhookDelivery(e))
	}
	return writeJSON(w, http.StatusOK, page)
}

// retryWebhookDelivery is POST /v1/webhooks/deliveries/{id}/retry: a
// pending event is attempted at once, a failed one gets one more attempt.
func (s *Server) retryWebhookDelivery(w http.ResponseWriter, r *http.Request, c *caller) error {
	ob, err := s.outbox(c)
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return errNotFound("no such delivery")
	}
	e, err := ob.RetryOutbox(r.Context(), id, time.Now())
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return errNotFound("no such delivery")
	case errors.Is(err, keystore.ErrConflict):
		return errConflict("only a pending or failed delivery can be retried; this one is " + e.Status)
	case err != nil:
		return err
	}
	s.log.Info("webhook delivery retried by the operator", "event_id", e.ID, "type", e.Type, "request_id", c.requestID)
	return writeJSON(w, http.StatusOK, api.NewWebhookDelivery(e))
}
