// Package api holds the admin API's request and response bodies: the
// server (admin) writes and reads them, and the client (admin/adminclient)
// reads and writes the same types, so the two cannot drift apart. Their
// JSON fields are checked against the API's OpenAPI document
// (admin/openapi.json) by this package's tests.
package api

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/odin-scan/odin-authz/keystore"
)

// CreateKeyRequest is the body of POST /v1/keys.
type CreateKeyRequest struct {
	Name string `json:"name"`
	// Scopes is required: a list, empty for none.
	Scopes    []string   `json:"scopes"`
	Tier      string     `json:"tier,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// OrgID makes an organisation key (the caller must administer it).
	OrgID string `json:"org_id,omitempty"`
	// UserID is for the operator only: the user who owns the key.
	UserID string `json:"user_id,omitempty"`
	// RateLimit is for the operator only: the key's own rate limit,
	// instead of its tier's.
	RateLimit *keystore.RateLimit `json:"rate_limit,omitempty"`
	// AllowedCIDRs are the networks the key may be used from
	// (keystore.ParseCIDRs: "203.0.113.0/24", "2001:db8::/32" or a bare
	// address); absent or empty: any network.
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
}

// RollKeyRequest is the optional body of POST /v1/keys/{id}/roll.
type RollKeyRequest struct {
	// GraceSeconds is how long the old key keeps working; absent: 0.
	GraceSeconds *int `json:"grace_seconds,omitempty"`
}

// UpdateKeyRequest is the body of PATCH /v1/keys/{id}: the fields to
// change, absent ones left as they are. A user may rename a key, narrow
// its scopes and set its network allowlist; the operator may also set
// scopes, tier, expiry and the key's own rate limit.
type UpdateKeyRequest struct {
	Name   *string   `json:"name,omitempty"`
	Scopes *[]string `json:"scopes,omitempty"`
	Tier   *string   `json:"tier,omitempty"`
	// ExpiresAt sets the expiry; null removes it (the key never expires).
	ExpiresAt Expiry `json:"expires_at,omitzero"`
	// RateLimit sets the key's own rate limit; null removes it (the key
	// goes back to its tier's).
	RateLimit OptionalRateLimit `json:"rate_limit,omitzero"`
	// AllowedCIDRs sets the networks the key may be used from; null or an
	// empty list removes the allowlist (any network).
	AllowedCIDRs OptionalCIDRs `json:"allowed_cidrs,omitzero"`
}

// OptionalCIDRs is an optional network allowlist that may be null: absent
// (Set false) leaves the key's as it is, null or an empty list (Set, CIDRs
// empty) removes it, a list sets it. The entries are as the caller wrote
// them; keystore.ParseCIDRs reads them.
type OptionalCIDRs struct {
	Set   bool
	CIDRs []string
}

// IsZero reports whether the allowlist is absent (omitted from a body).
func (o OptionalCIDRs) IsZero() bool { return !o.Set }

// MarshalJSON writes the list, or null for none.
func (o OptionalCIDRs) MarshalJSON() ([]byte, error) { return json.Marshal(o.CIDRs) }

// UnmarshalJSON reads a list of strings, or null.
func (o *OptionalCIDRs) UnmarshalJSON(b []byte) error {
	o.Set, o.CIDRs = true, nil
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &o.CIDRs)
}

// OptionalRateLimit is an optional rate limit that may be null: absent
// (Set false) leaves the key's as it is, null (Set, Limit nil) goes back to
// the tier's, an object sets it.
type OptionalRateLimit struct {
	Set   bool
	Limit *keystore.RateLimit
}

// IsZero reports whether the rate limit is absent (omitted from a body).
func (o OptionalRateLimit) IsZero() bool { return !o.Set }

// MarshalJSON writes the limit, or null.
func (o OptionalRateLimit) MarshalJSON() ([]byte, error) { return json.Marshal(o.Limit) }

// UnmarshalJSON reads a limit, or null.
func (o *OptionalRateLimit) UnmarshalJSON(b []byte) error {
	o.Set, o.Limit = true, nil
	if string(b) == "null" {
		return nil
	}
	// Strict, as the body around it is read: an unknown field is an error.
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var l keystore.RateLimit
	if err := d.Decode(&l); err != nil {
		return err
	}
	o.Limit = &l
	return nil
}

// Expiry is an optional expiry that may be null: absent (Set false) leaves
// the key's as it is, null (Set, At nil) removes it, a time sets it.
type Expiry struct {
	Set bool
	At  *time.Time
}

// IsZero reports whether the expiry is absent (omitted from a body).
func (e Expiry) IsZero() bool { return !e.Set }

// MarshalJSON writes the time, or null.
func (e Expiry) MarshalJSON() ([]byte, error) { return json.Marshal(e.At) }

// UnmarshalJSON reads a time, or null.
func (e *Expiry) UnmarshalJSON(b []byte) error {
	e.Set, e.At = true, nil
	if string(b) == "null" {
		return nil
	}
	var t time.Time
	if err := json.Unmarshal(b, &t); err != nil {
		return err
	}
	e.At = &t
	return nil
}

// Key is a key as the API shows it: by hint, never the key or its hash,
// with its state.
type Key struct {
	*keystore.Key
	Revoked  bool `json:"revoked"`
	Expired  bool `json:"expired"`
	Disabled bool `json:"disabled"`
	// UsageTotals are the key's checks over the last 24 hours and 30 days,
	// in lists and reads of keys (absent from the answers of changes). Like
	// last_used_at, they lag the checks by up to odin authz's
	// --usage-interval.
	UsageTotals *keystore.UsageTotals `json:"usage_totals,omitempty"`
}

// WithUsage is k with its usage totals from totals (a key absent from it
// has none: zeros).
func (k Key) WithUsage(totals map[string]keystore.UsageTotals) Key {
	t := totals[k.ID]
	k.UsageTotals = &t
	return k
}

// NewKey is k as the API shows it at now.
func NewKey(k *keystore.Key, now time.Time) Key {
	return Key{Key: k, Revoked: !k.RevokedAt.IsZero(), Expired: !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt),
		Disabled: !k.DisabledAt.IsZero()}
}

// KeyDetail is the answer of GET /v1/keys/{id}: the key and its checks per
// hour over the last 7 days, oldest first.
type KeyDetail struct {
	Key
	Usage []keystore.HourlyUsage `json:"usage,omitempty"`
}

// CreatedKey is a new key with the key itself, shown this once: the answer
// of POST /v1/keys.
type CreatedKey struct {
	Plaintext string `json:"key"`
	Key
}

// RolledKey is the answer of POST /v1/keys/{id}/roll: the new key, shown
// this once, and the old one it replaces.
type RolledKey struct {
	CreatedKey
	Previous Key `json:"previous"`
}

// KeyPage is a page of GET /v1/keys.
type KeyPage struct {
	Keys []Key `json:"keys"`
	// NextCursor is the cursor of the next page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}

// AuditPage is a page of GET /v1/audit-log.
type AuditPage struct {
	Events []keystore.AuditEvent `json:"events"`
	// NextCursor is the cursor of the next page; empty on the last one.
	NextCursor string `json:"next_cursor,omitempty"`
}
