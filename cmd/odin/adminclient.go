package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// adminFlags choose the admin API over the database for the keys and
// sessions commands.
type adminFlags struct {
	url, token string
	timeout    time.Duration
}

func (a *adminFlags) bind(f *flags) {
	f.String(&a.url, "admin-url", "ODIN_ADMIN_URL", "", "admin API base URL, e.g. https://odin-admin.internal:9004; when set, act through it (no database URL needed) instead of on the database")
	f.Secret(&a.token, "admin-token", "ODIN_ADMIN_TOKEN", "bearer token for --admin-url: the operator token, or a Clerk session token to act as that user")
	f.Duration(&a.timeout, "admin-timeout", "ODIN_ADMIN_TIMEOUT", 30*time.Second, "deadline of one admin API request")
}

// maxAnswerBytes bounds what the CLI reads of an answer: a page of 1000
// keys is well under 1 MiB.
const maxAnswerBytes = 16 << 20

// adminClient is keyAdmin over the admin API (docs/CONTRACT.md, admin API): the operator CLI
// for a deployment whose database it cannot or should not reach.
type adminClient struct {
	base  string // scheme://host[/prefix], no trailing slash
	token string
	http  *http.Client
}

var _ keyAdmin = (*adminClient)(nil)

// newAdminClient checks the flags and returns a client. It warns on stderr
// when the token would cross the network in clear text.
func newAdminClient(a adminFlags, stderr io.Writer) (*adminClient, error) {
	u, err := url.Parse(a.url)
	if err != nil {
		return nil, errors.New("--admin-url is not a URL: want http(s)://host[:port][/prefix]")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("--admin-url %q: want http(s)://host[:port][/prefix]", u.Redacted())
	}
	if a.token == "" {
		return nil, errors.New("an admin token is required with --admin-url (--admin-token or ODIN_ADMIN_TOKEN)")
	}
	if a.timeout <= 0 {
		return nil, errors.New("--admin-timeout must be positive")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(stderr, "odin: warning: sending the admin token to %s over plain http\n", u.Host)
	}
	return &adminClient{
		base:  strings.TrimSuffix(u.String(), "/"),
		token: a.token,
		http: &http.Client{
			Timeout: a.timeout,
			// A redirect is not part of the API; following it could send
			// the token elsewhere or turn a POST into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close implements keyAdmin; the client holds nothing open.
func (c *adminClient) Close() {}

// adminAPIError is an error answer of the admin API, with its error code
// and message; without a code, the answer was not the admin API's own (a
// proxy's error page, a wrong --admin-url).
type adminAPIError struct {
	status                          int
	code, message, field, requestID string
}

func (e *adminAPIError) Error() string {
	if e.code == "" {
		return fmt.Sprintf("admin API: HTTP %d %s, and not an admin API answer: is --admin-url right?", e.status, http.StatusText(e.status))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "admin API: %s: %s", e.code, e.message)
	if e.field != "" {
		fmt.Fprintf(&b, " (field %s)", e.field)
	}
	fmt.Fprintf(&b, " [HTTP %d", e.status)
	if e.requestID != "" {
		fmt.Fprintf(&b, ", request %s", e.requestID)
	}
	b.WriteString("]")
	return b.String()
}

// do sends one request and decodes a 2xx JSON answer into out; any other
// answer is an *adminAPIError.
func (c *adminClient) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
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
	req.Header.Set("User-Agent", "odin-cli")
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
		return answerError(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API: %s %s answered %d with something that is not the expected JSON: %w", method, path, resp.StatusCode, err)
	}
	return nil
}

// unconfirmedAnswer reads a 503 that says the change is committed but not
// confirmed on every replica: the result goes into out, and the error is an
// *unconfirmedError. Any other answer: nil.
func unconfirmedAnswer(raw []byte, out any) error {
	var b struct {
		Committed bool            `json:"committed"`
		DeniedBy  time.Time       `json:"denied_by"`
		Retry     string          `json:"retry"`
		Result    json.RawMessage `json:"result"`
		Error     struct{ Message string }
		RequestID string `json:"requestId"`
	}
	if json.Unmarshal(raw, &b) != nil || !b.Committed {
		return nil
	}
	if out != nil && len(b.Result) > 0 {
		if err := json.Unmarshal(b.Result, out); err != nil {
			return fmt.Errorf("admin API: a 503 with a result that is not the expected JSON: %w", err)
		}
	}
	return &unconfirmedError{deniedBy: b.DeniedBy, retry: "admin API: " + b.Retry + " [request " + b.RequestID + "]"}
}

// answerError reads the error body of a failed answer; a body that is
// not one (a proxy's error page) is reported by its HTTP status alone.
func answerError(resp *http.Response, raw []byte) error {
	var b struct {
		Error struct {
			Code, Message, Field string
		} `json:"error"`
		RequestID string `json:"requestId"`
	}
	if json.Unmarshal(raw, &b) != nil || b.Error.Code == "" {
		return &adminAPIError{status: resp.StatusCode}
	}
	return &adminAPIError{status: resp.StatusCode, code: b.Error.Code, message: b.Error.Message, field: b.Error.Field, requestID: b.RequestID}
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

// CreateKey implements keyAdmin with POST /v1/keys.
func (c *adminClient) CreateKey(ctx context.Context, req createKeyRequest) (createdKeyRecord, error) {
	if req.Scopes == nil {
		req.Scopes = []string{} // the API wants the list, even empty
	}
	var out createdKeyRecord
	return out, c.do(ctx, http.MethodPost, "/v1/keys", nil, req, &out)
}

// ListKeys implements keyAdmin with GET /v1/keys.
func (c *adminClient) ListKeys(ctx context.Context, q listKeysQuery) (keyPage, error) {
	v := url.Values{}
	for name, val := range map[string]string{"owner": q.owner, "user_id": q.userID, "org_id": q.orgID, "cursor": q.cursor} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if q.revoked != nil {
		v.Set("revoked", strconv.FormatBool(*q.revoked))
	}
	if q.limit > 0 {
		v.Set("limit", strconv.Itoa(q.limit))
	}
	var out keyPage
	return out, c.do(ctx, http.MethodGet, "/v1/keys", v, nil, &out)
}

// Key implements keyAdmin with GET /v1/keys/{id}.
func (c *adminClient) Key(ctx context.Context, id string) (keyRecord, error) {
	var out keyRecord
	p, err := keyPath(id, "")
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodGet, p, nil, nil, &out)
}

// RevokeKey implements keyAdmin with POST /v1/keys/{id}/revoke.
func (c *adminClient) RevokeKey(ctx context.Context, id string) (keyRecord, error) {
	var out keyRecord
	p, err := keyPath(id, "revoke")
	if err != nil {
		return out, err
	}
	return out, c.do(ctx, http.MethodPost, p, nil, nil, &out)
}

// RollKey implements keyAdmin with POST /v1/keys/{id}/roll.
func (c *adminClient) RollKey(ctx context.Context, id string, grace time.Duration) (rolledKeyRecord, error) {
	var out rolledKeyRecord
	p, err := keyPath(id, "roll")
	if err != nil {
		return out, err
	}
	body := struct {
		GraceSeconds int `json:"grace_seconds"`
	}{int(grace / time.Second)}
	return out, c.do(ctx, http.MethodPost, p, nil, body, &out)
}

// RevokeSession implements keyAdmin with POST /v1/sessions/{sid}/revoke.
// The API records its own reason ("admin_api").
func (c *adminClient) RevokeSession(ctx context.Context, sid, _ string) (keystore.RevokedSession, error) {
	var out keystore.RevokedSession
	if sid == "" || sid == "." || sid == ".." {
		return out, fmt.Errorf("%q is not a session id", sid)
	}
	return out, c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(sid)+"/revoke", nil, nil, &out)
}
