package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/odin-scan/odin-authz/credential"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/jwtauth"
)

// Principal is an authenticated admin caller as a console session keeps
// it: who signed in, resolved once by Authenticate. It holds no
// credential.
type Principal struct {
	Operator     bool
	UserID       string
	OrgID        string
	OrgAdmin     bool
	SessionID    string
	Permissions  []string
	Tier         string
	Impersonator string
	// Factors is the signed-in token's fva claim with the iat it counts
	// from, so a console session ages out of a step-up requirement
	// (--admin-reverify) as the token itself would; nil without one.
	Factors *jwtauth.FactorVerification
}

func (c *caller) principal() Principal {
	return Principal{Operator: c.operator, UserID: c.userID, OrgID: c.orgID, OrgAdmin: c.orgAdmin,
		SessionID: c.sessionID, Permissions: c.permissions, Tier: c.tier, Impersonator: c.impersonator, Factors: c.factors}
}

func (p Principal) caller() *caller {
	return &caller{operator: p.Operator, userID: p.UserID, orgID: p.OrgID, orgAdmin: p.OrgAdmin,
		sessionID: p.SessionID, permissions: p.Permissions, tier: p.Tier, impersonator: p.Impersonator, factors: p.Factors}
}

// OperatorPrincipal is the operator, for a sign-in the process grants
// itself (odin dev's one-time console link).
func OperatorPrincipal() Principal { return Principal{Operator: true} }

// Authentication errors of Authenticate, for the console to tell apart.
var (
	// ErrUnauthorized: the token is not the operator token nor an
	// admitted session token.
	ErrUnauthorized = errors.New("admin: unauthorized")
	// ErrThrottled: too many failed authentications from this client.
	ErrThrottled = errors.New("admin: too many failed authentication attempts")
	// ErrUnavailable: the token could not be judged now (JWKS or the
	// revoked sessions unavailable).
	ErrUnavailable = errors.New("admin: authentication unavailable")
)

// Authenticate resolves the caller of r from its `Authorization: Bearer`
// header by the API's own rule (the operator token, or a Clerk session
// token verified and admitted as odin authz does), with the API's
// failed-authentication throttle. The error is one of ErrUnauthorized,
// ErrThrottled and ErrUnavailable; the token is never in it.
func (s *Server) Authenticate(r *http.Request) (Principal, error) {
	c, err := s.authenticate(r)
	if err == nil {
		return c.principal(), nil
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.code == denial.Unauthorized {
		if throttled, _ := s.authFail.failed(s.clientAddr.of(r)); throttled {
			return Principal{}, ErrThrottled
		}
		return Principal{}, ErrUnauthorized
	}
	return Principal{}, ErrUnavailable
}

// Recheck reports whether p may still act: a Clerk session logged out since
// p signed in (POST /v1/sessions/{sid}/revoke, a Clerk session.ended
// webhook) is ErrUnauthorized from then on; the operator always may.
func (s *Server) Recheck(p Principal) error {
	if p.Operator || p.SessionID == "" {
		return nil
	}
	a := credential.Admission{Revoked: s.opts.Revoked, AllowNoSessionID: s.opts.AllowNoSessionID}
	switch v, _ := a.Recheck(p.SessionID, time.Now()); v {
	case credential.Refused:
		return ErrUnauthorized
	case credential.Unavailable:
		return ErrUnavailable
	}
	return nil
}

// Scopes are the scopes a key may carry.
func (s *Server) Scopes() []string { return append([]string(nil), s.opts.Scopes...) }

// inProcessKey carries the caller of a request made by Do. Only code in
// this process can set a context value: no HTTP request can claim one.
type inProcessKey struct{}

// Do serves one API request for p in process, through the same routes,
// handlers, authorization rules, audit log and metrics as a request over
// HTTP; p stands in for the Authorization header. target is the path with
// its query (/v1/keys?owner=org); body is JSON or nil. It answers the
// status, the body (JSON, an error body when the status is not 2xx) and
// the request id the audit log records. A principal whose session was
// logged out since it signed in gets 401 as its token would.
func (s *Server) Do(ctx context.Context, p Principal, method, target string, body []byte, requestID string) (int, []byte) {
	r, err := http.NewRequestWithContext(context.WithValue(ctx, inProcessKey{}, p.caller()), method, target, bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, nil
	}
	r.RemoteAddr = "in-process"
	if requestID != "" {
		r.Header.Set("X-Request-Id", requestID)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
	if err := s.Recheck(p); err != nil {
		writeError(w, requestID, map[error]error{ErrUnauthorized: errUnauthorized(), ErrUnavailable: errUnavailable()}[err])
	} else {
		s.Handler().ServeHTTP(w, r)
	}
	return w.status, w.body.Bytes()
}

// inProcessCaller is the caller Do put in r's context, if any.
func inProcessCaller(r *http.Request) (*caller, bool) {
	c, ok := r.Context().Value(inProcessKey{}).(*caller)
	if !ok {
		return nil, false
	}
	cc := *c // each request its own copy: wrap sets its request id
	return &cc, true
}

// bufferedResponse is the http.ResponseWriter of Do.
type bufferedResponse struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }
func (b *bufferedResponse) WriteHeader(code int) {
	if !b.wrote {
		b.status, b.wrote = code, true
	}
}
func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.wrote = true
	return b.body.Write(p)
}

var _ io.Writer = (*bufferedResponse)(nil)

// callerOf is the caller of a request: the one Do made it for, else the one
// its Authorization header authenticates.
func (s *Server) callerOf(r *http.Request) (*caller, error) {
	if c, ok := inProcessCaller(r); ok {
		return c, nil
	}
	return s.authenticate(r)
}
