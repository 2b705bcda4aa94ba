// Package adminclient is a client of the admin API (docs/CONTRACT.md,
// admin API) for the key and session operations, in the API's own types
// (admin/api). The operator CLI uses it with --admin-url.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/keystore"
)

// maxAnswerBytes bounds what the client reads of an answer: a page of 1000
// keys is well under 1 MiB.
const maxAnswerBytes = 16 << 20

// Options configure a Client.
type Options struct {
	// BaseURL is the API's http(s)://host[:port][/prefix]; a trailing slash
	// is ignored.
	BaseURL string
	// Token is the bearer token: the operator token, or a Clerk session
	// token to act as that user.
	Token string
	// Timeout is the deadline of one request; zero: none.
	Timeout time.Duration
	// UserAgent is sent with every request when set.
	UserAgent string
}

// Client calls the admin API. It holds nothing open and is safe for
// concurrent use.
type Client struct {
	base, token, userAgent string
	http                   *http.Client
}

// New returns a client of the API at opts.BaseURL.
func New(opts Options) *Client {
	return &Client{
		base:      strings.TrimSuffix(opts.BaseURL, "/"),
		token:     opts.Token,
		userAgent: opts.UserAgent,
		http: &http.Client{
			Timeout: opts.Timeout,
			// A redirect is not part of the API; following it could send
			// the token elsewhere or turn a POST into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Error is an error answer of the admin API, with its error code and
// message. Without a code, the answer was not the admin API's own (a
// proxy's error page, a wrong base URL).
type Error struct {
	Status                          int
	Code, Message, Field, RequestID string
	// Reverification is set on the 403 of a session token that must
	// verify a factor again (odin admin's --admin-reverify): the level
	// and max age of Clerk's reverification hint.
	Reverification *denial.Reverification
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("admin API: HTTP %d %s, and not an admin API answer", e.Status, http.StatusText(e.Status))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "admin API: %s: %s", e.Code, e.Message)
	if e.Field != "" {
		fmt.Fprintf(&b, " (field %s)", e.Field)
	}
	fmt.Fprintf(&b, " [HTTP %d", e.Status)
	if e.RequestID != "" {
		fmt.Fprintf(&b, ", request %s", e.RequestID)
	}
	b.WriteString("]")
	if r := e.Reverification; r != nil {
		fmt.Fprintf(&b, "; this session must verify its %s again (within %d minutes): sign in again in the dashboard, or use the operator token", r.Level, r.AfterMinutes)
	}
	return b.String()
}

// UnconfirmedError is the API's 503 for a change that narrows what a
// credential may do (a revoke, a roll, a session revoke) when the change is
// committed but not confirmed on every replica. The method that gets it
// returns the change's result beside it, as on success.
type UnconfirmedError struct {
	// DeniedBy is when every replica denies the credential at the latest.
	DeniedBy time.Time
	// Retry is the request that propagates the change again, e.g.
	// "POST /v1/keys/key_.../revoke".
	Retry     string
	RequestID string
}

func (e *UnconfirmedError) Error() string {
	return fmt.Sprintf("admin API: committed but not confirmed on every replica: it may still be accepted until %s; to propagate it again: %s [request %s]",
		e.DeniedBy.UTC().Format(time.RFC3339), e.Retry, e.RequestID)
}

// Unwrap makes it a keystore.ErrNotPropagated.
func (e *UnconfirmedError) Unwrap() error { return keystore.ErrNotPropagated }

// do sends one request and decodes a 2xx JSON answer into out; any other
// answer is an *Error, or an *UnconfirmedError with the result decoded
// into out.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("admin API: read the answer: %w", err)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		if err := unconfirmedAnswer(raw, out); err != nil {
			return err
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API: %s %s answered %d with something that is not the expected JSON: %w", method, path, resp.StatusCode, err)
	}
	return nil
}

// unconfirmedAnswer reads a 503 that says the change is committed but not
// confirmed on every replica: the result goes into out, and the error is an
// *UnconfirmedError. Any other answer: nil.
func unconfirmedAnswer(raw []byte, out any) error {
	var b struct {
		Committed bool            `json:"committed"`
		DeniedBy  time.Time       `json:"denied_by"`
		Retry     string          `json:"retry"`
		Result    json.RawMessage `json:"result"`
		RequestID string          `json:"requestId"`
	}
	if json.Unmarshal(raw, &b) != nil || !b.Committed {
		return nil
	}
	if out != nil && len(b.Result) > 0 {
		if err := json.Unmarshal(b.Result, out); err != nil {
			return fmt.Errorf("admin API: a 503 with a result that is not the expected JSON: %w", err)
		}
	}
	return &UnconfirmedError{DeniedBy: b.DeniedBy, Retry: b.Retry, RequestID: b.RequestID}
}

// answerError reads the error body of a failed answer; a body that is not
// one (a proxy's error page) is reported by its HTTP status alone.
func answerError(status int, raw []byte) error {
	var b struct {
		Error struct {
			Code, Message, Field string
		} `json:"error"`
		RequestID  string             `json:"requestId"`
		ClerkError *denial.ClerkError `json:"clerk_error"`
	}
	if json.Unmarshal(raw, &b) != nil || b.Error.Code == "" {
		return &Error{Status: status}
	}
	e := &Error{Status: status, Code: b.Error.Code, Message: b.Error.Message, Field: b.Error.Field, RequestID: b.RequestID}
	if ce := b.ClerkError; ce != nil && ce.Reason == denial.ClerkReverifyReason {
		e.Reverification = &ce.Metadata.Reverification
	}
	return e
}

// keyPath is the API path of a key, or of one of its actions.
func keyPath(id, action string) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/?#") {
		return "", fmt.Errorf("%q is not a key id", id)
	}
	p := "/v1/keys/" + url.PathEscape(id)
	if action != "" {
		p += "/" + action
	}
	return p, nil
}

// CreateKey is POST /v1/keys. Nil scopes are sent as an empty list, which
// the API requires.
func (c *Client) CreateKey(ctx context.Context, req api.CreateKeyRequest) (api.CreatedKey, error) {
	if req.Scopes == nil {
		req.Scopes = []string{}
	}
	var out api.CreatedKey
	return out, c.do(ctx, http.MethodPost, "/v1/keys", nil, req, &out)
}

// ListKeysQuery selects a page of GET /v1/keys; zero fields are not sent.
type ListKeysQuery struct {
	// Owner is "me" or "org": a session token's own keys, or its
	// organisation's.
	Owner string
	// UserID and OrgID select an owner's keys (the operator only).
	UserID, OrgID string
	// Revoked, when set, selects revoked or active keys only.
	Revoked *bool
	// UnusedFor, when positive, keeps only keys unused that long.
	UnusedFor time.Duration
	// ExpiresWithin, when positive, keeps only keys expiring that soon.
	ExpiresWithin time.Duration
	Limit         int
	Cursor        string
}

// ListKeys is GET /v1/keys.
func (c *Client) ListKeys(ctx context.Context, q ListKeysQuery) (api.KeyPage, error) {
	v := url.Values{}
	for name, val := range map[string]string{"owner": q.Owner, "user_id": q.UserID, "org_id": q.OrgID, "cursor": q.Cursor} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if q.Revoked != nil {
		v.Set("revoked", strconv.FormatBool(*q.Revoked))
	}
	if q.UnusedFor > 0 {
		v.Set("unused_for", keystore.FormatAge(q.UnusedFor))
	}
	if q.ExpiresWithin > 0 {
		v.Set("expires_within", keystore.FormatAge(q.ExpiresWithin))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out api.KeyPage
	return out, c.do(ctx, http.MethodGet, "/v1/keys", v, nil, &out)
}

// Key is GET /v1/keys/{id}: the key with its checks per hour over the last
// 7 days.
func (c *Client) Key(ctx context.Context, id string) (api.KeyDetail, error) {
	var out api.KeyDetail
	p, err := keyPath(id, "")
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodGet, p, nil, nil, &out)
}

// RevokeKey is POST /v1/keys/{id}/revoke. A revocation not confirmed on
// every replica is returned with an *UnconfirmedError.
func (c *Client) RevokeKey(ctx context.Context, id string) (api.Key, error) {
	var out api.Key
	p, err := keyPath(id, "revoke")
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodPost, p, nil, nil, &out)
}

// UpdateKey is PATCH /v1/keys/{id}: the fields of req that are set are
// changed. A change not confirmed on every replica is returned with an
// *UnconfirmedError: it stands, and the same request propagates it again.
func (c *Client) UpdateKey(ctx context.Context, id string, req api.UpdateKeyRequest) (api.Key, error) {
	var out api.Key
	p, err := keyPath(id, "")
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodPatch, p, nil, req, &out)
}

// DisableKey is POST /v1/keys/{id}/disable, and EnableKey its
// /enable. A change not confirmed on every replica is returned with an
// *UnconfirmedError.
func (c *Client) DisableKey(ctx context.Context, id string) (api.Key, error) {
	return c.keyAction(ctx, id, "disable")
}

// EnableKey is POST /v1/keys/{id}/enable (see DisableKey).
func (c *Client) EnableKey(ctx context.Context, id string) (api.Key, error) {
	return c.keyAction(ctx, id, "enable")
}

func (c *Client) keyAction(ctx context.Context, id, action string) (api.Key, error) {
	var out api.Key
	p, err := keyPath(id, action)
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodPost, p, nil, nil, &out)
}

// RollKey is POST /v1/keys/{id}/roll: the old key keeps working for grace,
// in whole seconds. A roll whose shortening of the old key's life is not
// confirmed on every replica is returned with an *UnconfirmedError: the
// new key exists.
func (c *Client) RollKey(ctx context.Context, id string, grace time.Duration) (api.RolledKey, error) {
	var out api.RolledKey
	p, err := keyPath(id, "roll")
	if err != nil {
		return out, err
	}
	seconds := int(grace / time.Second)
	return out, c.do(ctx, http.MethodPost, p, nil, api.RollKeyRequest{GraceSeconds: &seconds}, &out)
}

// RevokeSession is POST /v1/sessions/{sid}/revoke. The API records its own
// reason ("admin_api"). A revocation not confirmed on every replica is
// returned with an *UnconfirmedError.
func (c *Client) RevokeSession(ctx context.Context, sid string) (keystore.RevokedSession, error) {
	var out keystore.RevokedSession
	if sid == "" || sid == "." || sid == ".." {
		return out, fmt.Errorf("%q is not a session id", sid)
	}
	return out, c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(sid)+"/revoke", nil, nil, &out)
}

// WebhookDeliveriesQuery selects a page of GET /v1/webhooks/deliveries;
// zero fields are not sent.
type WebhookDeliveriesQuery struct {
	Status, Type string
	Limit        int
	Cursor       string
}

// WebhookDeliveries is GET /v1/webhooks/deliveries (the operator only):
// outgoing webhook events and their delivery state, newest first.
func (c *Client) WebhookDeliveries(ctx context.Context, q WebhookDeliveriesQuery) (api.WebhookDeliveryPage, error) {
	v := url.Values{}
	for name, val := range map[string]string{"status": q.Status, "type": q.Type, "cursor": q.Cursor} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out api.WebhookDeliveryPage
	return out, c.do(ctx, http.MethodGet, "/v1/webhooks/deliveries", v, nil, &out)
}

// RetryWebhookDelivery is POST /v1/webhooks/deliveries/{id}/retry (the
// operator only).
func (c *Client) RetryWebhookDelivery(ctx context.Context, id int64) (api.WebhookDelivery, error) {
	var out api.WebhookDelivery
	return out, c.do(ctx, http.MethodPost, "/v1/webhooks/deliveries/"+strconv.FormatInt(id, 10)+"/retry", nil, nil, &out)
}
