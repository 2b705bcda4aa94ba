package admin

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
)

// updateKey is PATCH /v1/keys/{id}: a user renames a key they manage,
// narrows its scopes (to some of its current ones) and sets its network
// allowlist; the operator may also set its scopes, tier, expiry and own
// rate limit (null: back to the tier's). A session's change that widens
// the allowlist is sensitive, as enabling a key is: under --admin-reverify
// it needs a recent factor, judged in the change's transaction against the
// allowlist it replaces. Like a revoke, it answers 200 only once every
// replica enforces the change; when that cannot be confirmed, 503 with the
// change stored, and the same request propagates it again.
func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req api.UpdateKeyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	u := keystore.KeyUpdate{Name: req.Name, Scopes: req.Scopes, Tier: req.Tier}
	if req.ExpiresAt.Set {
		var at time.Time // null: never
		if req.ExpiresAt.At != nil {
			if req.ExpiresAt.At.IsZero() { // year 1 is in the past; the zero time would read as "never"
				return errInvalid("expires_at", "expires_at: must be in the future")
			}
			at = *req.ExpiresAt.At
		}
		u.ExpiresAt = &at
	}
	if req.RateLimit.Set {
		rl := req.RateLimit.Limit // nil: back to the tier's
		u.RateLimit = &rl
	}
	if req.AllowedCIDRs.Set {
		cidrs, err := keystore.ParseCIDRs(req.AllowedCIDRs.CIDRs) // nil for none: any network
		if err != nil {
			return fieldError(err)
		}
		u.AllowedCIDRs = &cidrs
	}
	if u.Name == nil && u.Scopes == nil && u.Tier == nil && u.ExpiresAt == nil && u.RateLimit == nil && u.AllowedCIDRs == nil {
		return errInvalid("", "nothing to change: give name, scopes, tier, expires_at, rate_limit or allowed_cidrs")
	}
	if u.Scopes != nil {
		for _, sc := range *u.Scopes {
			if !s.scopes[sc] {
				return errInvalid("scopes", "unknown scope "+strconv.Quote(sc))
			}
		}
	}
	k, err := s.managedKey(r, c)
	if err != nil {
		return err
	}
	if !c.operator {
		switch {
		case u.Tier != nil:
			return errForbidden("only the operator can change a key's tier")
		case u.ExpiresAt != nil:
			return errForbidden("only the operator can change a key's expiry")
		case u.RateLimit != nil:
			return errForbidden("only the operator can change a key's rate limit")
		}
		u.NarrowScopesOnly = true
	}
	if u.Tier != nil { // the operator's: a user's is refused above
		if err := s.checkTier(*u.Tier); err != nil {
			return err
		}
	}
	// Without a recent enough factor (and only then: the operator, and any
	// session when --admin-reverify is off, pass), the allowlist may only
	// be narrowed; the store checks it against the allowlist it replaces.
	reverify := s.requireReverification(c, time.Now())
	if u.AllowedCIDRs != nil && reverify != nil {
		u.NarrowCIDRsOnly = true
	}
	k, err = s.opts.Manager.Update(r.Context(), c.actor(), k.ID, u)
	switch {
	case reverify != nil && errors.Is(err, keystore.ErrWiderNetworks):
		return reverify
	case errors.Is(err, keystore.ErrNotEnforced):
		return notEnforced(c, err)
	}
	if np, ok := asNotPropagated(err); ok {
		return s.writeNotPropagated(w, unconfirmedKeyUpdate, np, "Key updated, but not every replica confirmed it: the key may be accepted as it was until denied_by; repeat the request to propagate it again",
			http.MethodPatch+" /v1/keys/"+k.ID, view(k))
	}
	if err := keyChangeError(err); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, view(k))
}

// disableKey is POST /v1/keys/{id}/disable: the key is refused (401, "API
// key is disabled") until it is enabled again. Whoever may manage the key
// (its owner, an organisation admin for an organisation key, the operator)
// may disable and enable it. 200 only once every replica refuses it, as
// for a revoke.
func (s *Server) disableKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setDisabled(w, r, c, true)
}

// enableKey is POST /v1/keys/{id}/enable: a disabled key works again, on
// every replica once answered 200.
func (s *Server) enableKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	return s.setDisabled(w, r, c, false)
}

func (s *Server) setDisabled(w http.ResponseWriter, r *http.Request, c *caller, disabled bool) error {
	k, err := s.managedKey(r, c)
	if err != nil {
		return err
	}
	change, kind, verb := s.opts.Manager.Enable, unconfirmedKeyEnable, "enable"
	if disabled {
		change, kind, verb = s.opts.Manager.Disable, unconfirmedKeyDisable, "disable"
	}
	k, err = change(r.Context(), c.actor(), k.ID)
	if np, ok := asNotPropagated(err); ok {
		return s.writeNotPropagated(w, kind, np, "Key "+verb+"d, but not every replica confirmed it: it may be answered as before until denied_by; retry to propagate it again",
			retryRequest("/v1/keys/"+k.ID+"/"+verb), view(k))
	}
	if err := keyChangeError(err); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, view(k))
}

// keyChangeError is the API error of a failed key change: 409 for a
// revoked or expired key, 403 for a widening a user may not make, 400 for
// an invalid value naming the field.
func keyChangeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, keystore.ErrConflict):
		return errConflict("only an active key can be changed: " + strings.TrimPrefix(err.Error(), keystore.ErrConflict.Error()+": "))
	case errors.Is(err, keystore.ErrWider):
		return errForbidden(strings.TrimPrefix(err.Error(), keystore.ErrWider.Error()+": scopes: "))
	}
	return fieldError(err)
}
