package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

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

func (c *caller) actor() keystore.Actor {
	if c.operator {
		return keystore.Actor{ID: "operator", RequestID: c.requestID}
	}
	return keystore.Actor{ID: c.userID, RequestID: c.requestID}
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

// authenticate resolves the caller from `Authorization: Bearer`: the
// operator token (compared in constant time, on digests so the length does
// not leak either), or a Clerk session token verified like odin authz does,
// whose session must not be logged out.
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	v := strings.TrimSpace(r.Header.Get("Authorization"))
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return nil, errUnauthorized()
	}
	token := strings.TrimSpace(v[len(scheme):])
	if s.opts.OperatorToken != "" {
		got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(s.opts.OperatorToken))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			return &caller{operator: true}, nil
		}
	}
	if s.opts.Verifier == nil || !jwtauth.LooksLikeJWT(token) {
		return nil, errUnauthorized()
	}
	sess, err := s.opts.Verifier.Verify(r.Context(), token)
	switch {
	case errors.Is(err, jwtauth.ErrInvalidToken):
		return nil, errUnauthorized()
	case err != nil:
		return nil, errUnavailable()
	}
	if sess.Expiry.Sub(sess.IssuedAt) > s.opts.Revoked.Retention() {
		return nil, errUnauthorized()
	}
	revoked, err := s.opts.Revoked.IsRevoked(sess.SessionID, time.Now())
	switch {
	case err != nil:
		return nil, errUnavailable()
	case revoked:
		return nil, errUnauthorized()
	}
	c := &caller{userID: sess.Subject, orgID: sess.OrgID, sessionID: sess.SessionID, permissions: sess.Permissions, tier: sess.Tier}
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
