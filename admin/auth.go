package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/credential"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// caller is who makes an admin request: the operator, or a Clerk user
// acting for themselves and, with an admin role, for their organisation.
type caller struct {
	operator    bool
	userID      string
	orgID       string
	orgAdmin    bool
	sessionID   string
	permissions []string
	tier        string
	requestID   string
	// impersonator is the user signed in as userID through Clerk's user
	// impersonation (the token's act claim); empty for a user's own session.
	impersonator string
	// factors is what the session token says about its verified factors
	// (Clerk's fva claim), for Options.Reverify; nil for the operator and
	// for tokens without a usable fva.
	factors *jwtauth.FactorVerification
}

// kind is who the caller is, for traces: operator, org (an organisation
// session) or user.
func (c *caller) kind() string {
	switch {
	case c.operator:
		return "operator"
	case c.orgID != "":
		return "org"
	}
	return "user"
}

// actor is who the audit log names: the impersonator, when there is one,
// acting as the impersonated user.
func (c *caller) actor() keystore.Actor {
	switch {
	case c.operator:
		return keystore.Actor{ID: "operator", RequestID: c.requestID}
	case c.impersonator != "":
		return keystore.Actor{ID: c.impersonator, Impersonating: c.userID, RequestID: c.requestID}
	}
	return keystore.Actor{ID: c.userID, RequestID: c.requestID}
}

// revokeReason is the reason a revoke by the caller records: operator for
// the operator, user for anyone else (a user's own key, or an
// organisation admin's organisation key).
func (c *caller) revokeReason() string {
	if c.operator {
		return keystore.RevokeReasonOperator
	}
	return keystore.RevokeReasonUser
}

// mayMint refuses to create or roll a key from an impersonated session
// unless the operator allowed it: a key outlives the impersonation and
// would let the impersonator keep acting as the user.
func (s *Server) mayMint(c *caller) error {
	if c.impersonator != "" && !s.opts.AllowImpersonatedKeys {
		return errForbidden("keys cannot be created or rolled while impersonating a user")
	}
	return nil
}

// handler is an admin route's handler, given its authenticated caller.
type handler func(http.ResponseWriter, *http.Request, *caller) error

// reverified guards a sensitive operation (creating, rolling or enabling a
// key) with the configured step-up verification (Options.Reverify): a
// session token must show a factor verified recently enough, by the rules
// of odin authz's reverify policy option (jwtauth.Reverification), or the
// request is answered 403 with Clerk's reverification hint, which the
// dashboard's useReverification() answers by prompting the user and
// retrying. The operator token is exempt: it is not a session. Without
// the setting, h runs as is.
func (s *Server) reverified(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, c *caller) error {
		if err := s.requireReverification(c, time.Now()); err != nil {
			return err
		}
		return h(w, r, c)
	}
}

// requireReverification is the check of reverified, for a handler that
// must make it itself.
func (s *Server) requireReverification(c *caller, now time.Time) error {
	rv := s.opts.Reverify
	if rv == nil || c.operator || rv.Satisfied(c.factors, now) {
		return nil
	}
	return &apiError{code: denial.Forbidden, message: denial.MessageReverify + ": " + rv.Requirement(), reverify: rv}
}

// canManage reports whether the caller may see and change k: the operator
// any key; a user their personal keys; an organisation admin the keys of
// their active organisation. Anything else is answered 404, as if the key
// did not exist.
func (c *caller) canManage(k *keystore.Key) bool {
	switch {
	case c.operator:
		return true
	case k.OrgID != "":
		return c.orgAdmin && k.OrgID == c.orgID
	default:
		return k.UserID == c.userID
	}
}

// owners are the audit-log tenants the caller may read.
func (c *caller) owners() []string {
	o := []string{c.userID}
	if c.orgAdmin {
		o = append(o, c.orgID)
	}
	return o
}

// authError is a refused authentication with the fixed reason it is
// logged with (never the credential).
type authError struct {
	*apiError
	reason string
}

func (e *authError) Error() string { return e.apiError.Error() + " (reason " + e.reason + ")" }
func (e *authError) Unwrap() error { return e.apiError }

func refused(reason string) error     { return &authError{errUnauthorized(), reason} }
func unavailable(reason string) error { return &authError{errUnavailable(), reason} }

// authenticate resolves the caller from `Authorization: Bearer` (read as
// odin authz reads it, credential.ParseBearer): the operator token
// (compared in constant time, on digests so the length does not leak
// either), or a Clerk session token verified and admitted by the same rule
// as odin authz (credential.Admission).
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	token, reason := credential.ParseBearer(r.Header.Get("Authorization"))
	if reason != "" {
		return nil, refused(reason)
	}
	if s.opts.OperatorToken != "" {
		got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.opts.OperatorToken))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return &caller{operator: true}, nil
		}
	}
	if s.opts.Verifier == nil || !jwtauth.LooksLikeJWT(token) {
		return nil, refused("unknown_token")
	}
	sess, v, reason := credential.Verify(r.Context(), s.opts.Verifier, token)
	if v == credential.Admitted {
		admission := credential.Admission{Revoked: s.opts.Revoked, AllowNoSessionID: s.opts.AllowNoSessionID}
		v, reason = admission.Admit(r.Context(), sess, time.Now())
	}
	switch v {
	case credential.Refused:
		return nil, refused(reason)
	case credential.Unavailable:
		return nil, unavailable(reason)
	}
	c := &caller{userID: sess.Subject, orgID: sess.OrgID, sessionID: sess.SessionID, permissions: sess.Permissions, tier: sess.Tier, impersonator: sess.Actor, factors: sess.Factors}
	c.orgAdmin = c.orgID != "" && slices.Contains(s.opts.OrgAdminRoles, sess.OrgRole)
	return c, nil
}

// grants reports whether the caller's own scopes cover scope: exact, or a
// granted "prefix:*" or "*". Clerk organisation permissions are compared
// without their "org:" prefix (org:scans:read grants scans:read). A caller
// whose token carries no permissions has the configured user scopes.
func (s *Server) grants(c *caller, scope string) bool {
	if c.operator {
		return true
	}
	own := c.permissions
	if len(own) == 0 {
		own = s.opts.UserScopes
	}
	for _, g := range own {
		g = strings.TrimPrefix(g, "org:")
		if g == scope || g == "*" || (strings.HasSuffix(g, ":*") && strings.HasPrefix(scope, strings.TrimSuffix(g, "*"))) {
			return true
		}
	}
	return false
}
