package admin

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
)

// view is a key as the API shows it now (api.Key): hints, never the key or
// its hash.
func view(k *keystore.Key) api.Key { return api.NewKey(k, time.Now()) }

// createKey is POST /v1/keys.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.mayMint(c); err != nil {
		return err
	}
	var req api.CreateKeyRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	n := keystore.NewKey{Name: req.Name, Scopes: req.Scopes, Tier: req.Tier, RateLimit: req.RateLimit}
	if req.ExpiresAt != nil {
		if req.ExpiresAt.IsZero() { // year 1 is in the past, and a zero expiry would read as "never"
			return errInvalid("expires_at", "expires_at: must be in the future")
		}
		n.ExpiresAt = *req.ExpiresAt
	}
	if req.Scopes == nil {
		return errInvalid("scopes", "scopes is required (a list; empty for none)")
	}
	for _, sc := range req.Scopes {
		if !s.scopes[sc] {
			return errInvalid("scopes", "unknown scope "+strconv.Quote(sc))
		}
	}
	if req.AllowedCIDRs != nil {
		cidrs, err := keystore.ParseCIDRs(req.AllowedCIDRs)
		if err != nil {
			return fieldError(err)
		}
		n.AllowedCIDRs = cidrs
	}
	switch {
	case c.operator:
		if req.UserID == "" && req.OrgID == "" {
			return errInvalid("user_id", "the operator must name the owner: user_id or org_id")
		}
		if req.Tier != "" { // a user's is their own (below)
			if err := s.checkTier(req.Tier); err != nil {
				return err
			}
		}
		n.UserID, n.OrgID = req.UserID, req.OrgID
	default:
		if req.RateLimit != nil {
			return errForbidden("only the operator can give a key its own rate limit")
		}
		if req.UserID != "" && req.UserID != c.userID {
			return errForbidden("keys can only be created for yourself or your organisation")
		}
		n.UserID = c.userID
		if req.OrgID != "" {
			if req.OrgID != c.orgID || !c.orgAdmin {
				return errForbidden("creating an organisation key needs the admin role in that organisation")
			}
			n.OrgID = req.OrgID
		}
		for _, sc := range req.Scopes {
			if !s.grants(c, sc) {
				return errForbidden("scope " + strconv.Quote(sc) + " is wider than your own")
			}
		}
		if n.Tier == "" {
			n.Tier = c.tier
		}
		if n.Tier != c.tier && c.tier != "" {
			return errForbidden("a key's tier cannot differ from your own (" + c.tier + ")")
		}
	}
	plaintext, k, err := s.opts.Manager.Create(r.Context(), c.actor(), n)
	switch {
	case errors.Is(err, keystore.ErrNotEnforced):
		return notEnforced(c, err)
	case err != nil && !errors.Is(err, keystore.ErrNotPropagated):
		return fieldError(err)
	}
	return writeJSON(w, http.StatusCreated, api.CreatedKey{Plaintext: plaintext, Key: view(k)})
}

// notEnforced is the 409 of giving a key a network allowlist while an odin
// authz replica that would not enforce it (an older release, mid-upgrade)
// is on the bus: it would accept the key from any network. The operator
// is told which replicas; anyone else, that an upgrade is under way (the
// replicas' names are the deployment's business).
func notEnforced(c *caller, err error) error {
	if c.operator {
		return errConflict(err.Error())
	}
	return errConflict("network allowlists are not yet enforced by every odin authz replica (an upgrade is under way): try again once it is done")
}

// fieldError turns a store validation error ("invalid request: name:
// ...") into a 400 naming the field.
func fieldError(err error) error {
	if !errors.Is(err, keystore.ErrInvalid) {
		return err
	}
	msg := err.Error()
	const prefix = "invalid request: "
	if len(msg) > len(prefix) {
		msg = msg[len(prefix):]
	}
	field := ""
	for i := 0; i < len(msg); i++ {
		if msg[i] == ':' {
			field = msg[:i]
			break
		}
	}
	return errInvalid(field, msg)
}

// listKeys is GET /v1/keys?owner=me|org&revoked=true|false&unused_for=&expires_within=&limit=&cursor=.
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query()
	opts := keystore.ListKeysOptions{Cursor: q.Get("cursor")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errInvalid("limit", "limit must be an integer between 1 and 1000")
		}
		opts.Limit = n
	}
	switch v := q.Get("revoked"); v {
	case "":
	case "true", "false":
		b := v == "true"
		opts.Revoked = &b
	default:
		return errInvalid("revoked", "revoked must be true or false")
	}
	now := time.Now()
	if v := q.Get("unused_for"); v != "" {
		d, err := keystore.ParseAge(v)
		if err != nil {
			return errInvalid("unused_for", "unused_for: "+err.Error())
		}
		opts.UnusedSince = now.Add(-d)
	}
	if v := q.Get("expires_within"); v != "" {
		d, err := keystore.ParseAge(v)
		if err != nil {
			return errInvalid("expires_within", "expires_within: "+err.Error())
		}
		opts.ExpiresFrom, opts.ExpiresBefore = now, now.Add(d)
	}
	switch {
	case c.operator:
		opts.UserID, opts.OrgID = q.Get("user_id"), q.Get("org_id")
	case q.Get("owner") == "org":
		if !c.orgAdmin {
			return errForbidden("listing organisation keys needs the admin role in that organisation")
		}
		opts.OrgID = c.orgID
	case q.Get("owner") == "" || q.Get("owner") == "me":
		opts.UserID, opts.PersonalOnly = c.userID, true
	default:
		return errInvalid("owner", "owner must be me or org")
	}
	keys, next, err := s.opts.Store.ListKeys(r.Context(), opts)
	if err != nil {
		return fieldError(err)
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	totals, err := s.opts.Store.KeyUsageTotals(r.Context(), ids, now)
	if err != nil {
		return err
	}
	out := api.KeyPage{Keys: make([]api.Key, 0, len(keys)), NextCursor: next}
	for _, k := range keys {
		out.Keys = append(out.Keys, api.NewKey(k, now).WithUsage(totals))
	}
	return writeJSON(w, http.StatusOK, out)
}

// managedKey loads a key the caller may manage; anyone else's is a 404.
func (s *Server) managedKey(r *http.Request, c *caller) (*keystore.Key, error) {
	k, err := s.opts.Store.Key(r.Context(), r.PathValue("id"))
	if errors.Is(err, keystore.ErrNotFound) || (err == nil && !c.canManage(k)) {
		return nil, errNotFound("no such key")
	}
	return k, err
}

// getKey is GET /v1/keys/{id}, with its usage totals and the last 7 days
// of hourly usage.
func (s *Server) getKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := s.managedKey(r, c)
	if err != nil {
		return err
	}
	now := time.Now()
	usage, err := s.opts.Store.KeyUsage(r.Context(), k.ID, now.Add(-7*24*time.Hour).Truncate(time.Hour))
	if err != nil {
		return err
	}
	totals, err := s.opts.Store.KeyUsageTotals(r.Context(), []string{k.ID}, now)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.KeyDetail{Key: api.NewKey(k, now).WithUsage(totals), Usage: usage})
}

// revokeKey is POST /v1/keys/{id}/revoke. It answers 200 only once no
// replica can allow the key any more; when that cannot be confirmed, 503
// with the revocation stored and the time by which every replica denies it.
// Revoking a revoked key answers the same record and propagates it again,
// so the retry of a 503 answers 200 once it is confirmed.
func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := s.managedKey(r, c)
	if err != nil {
		return err
	}
	k, err = s.opts.Manager.RevokeWithReason(r.Context(), c.actor(), k.ID, c.revokeReason(), nil)
	if np, ok := asNotPropagated(err); ok {
		return s.writeNotPropagated(w, unconfirmedKeyRevoke, np, "Key revoked, but not every replica confirmed it: it may be accepted until denied_by; retry to propagate it again",
			retryRequest("/v1/keys/"+k.ID+"/revoke"), view(k))
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, view(k))
}

// rollKey is POST /v1/keys/{id}/roll: a new key now, the old one expiring
// after the grace period (default 0: at once).
func (s *Server) rollKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := s.mayMint(c); err != nil {
		return err
	}
	var req api.RollKeyRequest
	if err := decodeOptional(r, &req); err != nil {
		return err
	}
	grace := 0
	if req.GraceSeconds != nil {
		grace = *req.GraceSeconds
	}
	// Compare in seconds: multiplying first could overflow into a small grace.
	if grace < 0 || grace > int(keystore.MaxRollGrace/time.Second) {
		return errInvalid("grace_seconds", "grace_seconds must be between 0 and "+strconv.Itoa(int(keystore.MaxRollGrace.Seconds())))
	}
	k, err := s.managedKey(r, c)
	if err != nil {
		return err
	}
	plaintext, old, rolled, err := s.opts.Manager.Roll(r.Context(), c.actor(), k.ID, time.Duration(grace)*time.Second)
	var already *keystore.AlreadyRolledError
	np, unconfirmed := asNotPropagated(err)
	switch {
	case errors.As(err, &already): // in its grace period: one successor only
		return errConflict(already.Error())
	case errors.Is(err, keystore.ErrConflict):
		return errConflict("only an active key can be rolled")
	case err != nil && !unconfirmed:
		return err
	}
	result := api.RolledKey{CreatedKey: api.CreatedKey{Plaintext: plaintext, Key: view(rolled)}, Previous: view(old)}
	if unconfirmed {
		// The new key exists and its plaintext is nowhere else: it is in
		// the result. Revoking the previous key propagates again (and ends
		// its grace at once).
		return s.writeNotPropagated(w, unconfirmedKeyRoll, np, "Key rolled (the new key is in result), but not every replica confirmed the previous key's new expiry: it may be accepted until denied_by; revoke the previous key to propagate again",
			retryRequest("/v1/keys/"+old.ID+"/revoke"), result)
	}
	return writeJSON(w, http.StatusCreated, result)
}
