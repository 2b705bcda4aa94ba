package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/odin-scan/odin-authz/admin/adminclient"
	"github.com/odin-scan/odin-authz/admin/api"
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

// adminClient is keyAdmin over the admin API (docs/CONTRACT.md, admin API): the operator CLI
// for a deployment whose database it cannot or should not reach.
type adminClient struct {
	api *adminclient.Client
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
	return &adminClient{api: adminclient.New(adminclient.Options{
		BaseURL: u.String(), Token: a.token, Timeout: a.timeout, UserAgent: "odin-cli",
	})}, nil
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

// cliError is an error of the admin client as the CLI reports it: an
// answer that is not the admin API's suggests a wrong --admin-url, and a
// change committed but not confirmed is an *unconfirmedError (exit 3).
func cliError(err error) error {
	var ae *adminclient.Error
	if errors.As(err, &ae) && ae.Code == "" {
		return fmt.Errorf("%w: is --admin-url right?", err)
	}
	var ue *adminclient.UnconfirmedError
	if errors.As(err, &ue) {
		return &unconfirmedError{deniedBy: ue.DeniedBy, retry: "admin API: " + ue.Retry + " [request " + ue.RequestID + "]"}
	}
	return err
}

// CreateKey implements keyAdmin with POST /v1/keys.
func (c *adminClient) CreateKey(ctx context.Context, req createKeyRequest) (createdKeyRecord, error) {
	out, err := c.api.CreateKey(ctx, req)
	return out, cliError(err)
}

// ListKeys implements keyAdmin with GET /v1/keys.
func (c *adminClient) ListKeys(ctx context.Context, q listKeysQuery) (keyPage, error) {
	out, err := c.api.ListKeys(ctx, adminclient.ListKeysQuery{
		Owner: q.owner, UserID: q.userID, OrgID: q.orgID, Revoked: q.revoked, UnusedFor: q.unusedFor, Limit: q.limit, Cursor: q.cursor,
	})
	return out, cliError(err)
}

// Key implements keyAdmin with GET /v1/keys/{id}.
func (c *adminClient) Key(ctx context.Context, id string) (keyRecord, error) {
	out, err := c.api.Key(ctx, id)
	return out, cliError(err)
}

// RevokeKey implements keyAdmin with POST /v1/keys/{id}/revoke.
func (c *adminClient) RevokeKey(ctx context.Context, id string) (api.Key, error) {
	out, err := c.api.RevokeKey(ctx, id)
	return out, cliError(err)
}

// RollKey implements keyAdmin with POST /v1/keys/{id}/roll.
func (c *adminClient) RollKey(ctx context.Context, id string, grace time.Duration) (rolledKeyRecord, error) {
	out, err := c.api.RollKey(ctx, id, grace)
	return out, cliError(err)
}

// RevokeSession implements keyAdmin with POST /v1/sessions/{sid}/revoke.
// The API records its own reason ("admin_api").
func (c *adminClient) RevokeSession(ctx context.Context, sid, _ string) (keystore.RevokedSession, error) {
	out, err := c.api.RevokeSession(ctx, sid)
	return out, cliError(err)
}
