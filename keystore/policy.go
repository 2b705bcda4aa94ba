package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The operator's key policy: how long a key may live (MaxLifetime) and how
// long it may go unused before `odin admin` revokes it (RevokeUnused).

// MaxLifetime is the longest a key may live; zero or less: no limit.
type MaxLifetime time.Duration

// KeyLifetimes is the maximum key lifetime policy: the operator's default
// and organisations' own, each of which replaces the default for the
// organisation's keys (shorter or longer).
type KeyLifetimes struct {
	Default MaxLifetime
	Orgs    map[string]MaxLifetime
}

// For is the maximum lifetime of a key of organisation orgID ("" for a
// personal key).
func (p KeyLifetimes) For(orgID string) MaxLifetime {
	if m, ok := p.Orgs[orgID]; ok && orgID != "" {
		return m
	}
	return p.Default
}

// keyPolicyFile is the JSON of a key policy file: per organisation, its
// maximum key lifetime as ParseAge reads it.
type keyPolicyFile struct {
	Organisations map[string]struct {
		MaxKeyLifetime string `json:"max_key_lifetime"`
	} `json:"organisations"`
}

// ParseKeyPolicy reads a key policy file (docs/ADMIN.md, key policy):
// {"organisations": {"org_...": {"max_key_lifetime": "30d"}}}. Unknown
// fields, a malformed organisation id and a bad lifetime are errors naming
// them.
func ParseKeyPolicy(data []byte) (map[string]MaxLifetime, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f keyPolicyFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("key policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("key policy: more than one JSON value")
	}
	out := make(map[string]MaxLifetime, len(f.Organisations))
	for org, p := range f.Organisations {
		if !ownerPattern.MatchString(org) {
			return nil, fmt.Errorf("key policy: organisation %q: not a valid id", org)
		}
		d, err := ParseAge(p.MaxKeyLifetime)
		if err != nil {
			return nil, fmt.Errorf("key policy: organisation %s: max_key_lifetime: %w", org, err)
		}
		out[org] = MaxLifetime(d)
	}
	return out, nil
}

// maxLifetimeSlack is how much later than now+max an asked-for expiry may
// be: a client that computed "max from now" on its own clock, a moment
// before the server did, is not refused for it.
const maxLifetimeSlack = time.Minute

// apply gives n, created at now, its maximum lifetime: an expiry when it
// has none, and an error (ErrInvalid, naming expires_at) when it asks for a
// later one.
func (p KeyLifetimes) apply(n *NewKey, now time.Time) error {
	m := p.For(n.OrgID)
	if m <= 0 {
		return nil
	}
	limit := now.Add(time.Duration(m))
	if n.ExpiresAt.IsZero() {
		n.ExpiresAt = limit
		return nil
	}
	if n.ExpiresAt.After(limit.Add(maxLifetimeSlack)) {
		whose := "the maximum key lifetime"
		if _, ok := p.Orgs[n.OrgID]; ok && n.OrgID != "" {
			whose += " of organisation " + n.OrgID
		}
		return fmt.Errorf("%w: expires_at: at most %s after creation (%s)", ErrInvalid, FormatAge(time.Duration(m)), whose)
	}
	return nil
}

// AllowsExpiry refuses (ErrInvalid, naming expires_at) a change of k's
// expiry to expiry (zero: never) that lets k live longer than its maximum
// lifetime from its creation. Bringing the expiry forward, or giving a key
// that never expired an expiry, is always allowed: it narrows the key, and
// a key made before the policy may be older than the maximum already.
func (p KeyLifetimes) AllowsExpiry(k *Key, expiry time.Time) error {
	m := p.For(k.OrgID)
	if m <= 0 {
		return nil
	}
	later := expiry.IsZero() || (!k.ExpiresAt.IsZero() && expiry.After(k.ExpiresAt))
	limit := k.CreatedAt.Add(time.Duration(m))
	if !later || (!expiry.IsZero() && !expiry.After(limit.Add(maxLifetimeSlack))) {
		return nil
	}
	whose := "the maximum key lifetime"
	if _, ok := p.Orgs[k.OrgID]; ok && k.OrgID != "" {
		whose += " of organisation " + k.OrgID
	}
	if expiry.IsZero() {
		return fmt.Errorf("%w: expires_at: a key cannot be made never to expire under %s (%s)", ErrInvalid, whose, FormatAge(time.Duration(m)))
	}
	return fmt.Errorf("%w: expires_at: at most %s after the key's creation (%s)", ErrInvalid, FormatAge(time.Duration(m)), whose)
}

// clamp is expiry (zero: never) brought forward to at most max after now.
func (m MaxLifetime) clamp(expiry, now time.Time) time.Time {
	if m <= 0 {
		return expiry
	}
	limit := now.Add(time.Duration(m))
	if expiry.IsZero() || expiry.After(limit) {
		return limit
	}
	return expiry
}

// maxAge bounds what ParseAge accepts: a hundred years, far past any
// useful policy and far from overflowing a time.Duration.
const maxAge = 100 * 365 * 24 * time.Hour

// ParseAge reads a positive length of time as the key policy settings and
// the unused_for filter take it: whole days ("90d") or a Go duration
// ("36h", "90m", "1h30m"). The error says what is accepted.
func ParseAge(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a length of time: want days (90d) or a duration (36h, 90m)", s)
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > int64(maxAge/(24*time.Hour)) {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 || d > maxAge {
		return 0, fmt.Errorf("%q: must be positive and at most 100 years", s)
	}
	return d, nil
}

// FormatAge writes d as ParseAge reads it: whole days as "90d", else a Go
// duration.
func FormatAge(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// UnusedSince reports whether k has gone unused since cutoff: it was last
// used before cutoff, or never used and created before cutoff. Its last use
// is as the usage recorder last flushed it (keystore.UsageRecorder), so up
// to a flush interval behind the checks.
func (k *Key) UnusedSince(cutoff time.Time) bool {
	if k.LastUsedAt.IsZero() {
		return k.CreatedAt.Before(cutoff)
	}
	return k.LastUsedAt.Before(cutoff)
}

// UsageTotals are a key's checks over the last 24 hours and the last 30
// days, counted by whole hours: the current hour and the 23 (719) before
// it. Like the last use, they are as the usage recorder last flushed them.
type UsageTotals struct {
	Last24h int64 `json:"last_24h"`
	Last30d int64 `json:"last_30d"`
}

// UsageWindows are the first hours of UsageTotals' windows at now: the
// 24-hour one and the 30-day one.
func UsageWindows(now time.Time) (day, month time.Time) {
	hour := now.UTC().Truncate(time.Hour)
	return hour.Add(-23 * time.Hour), hour.Add(-(30*24 - 1) * time.Hour)
}

// JobLocker is what a store shared by several processes offers their
// background jobs: a lock by name that one process at a time holds
// (pgstore: a PostgreSQL advisory lock). The embedded store, one process's
// own, has none.
type JobLocker interface {
	// TryJobLock takes the lock name when no other holder has it, and
	// returns its release; ok is false, with nothing to release, when
	// another holds it. A holder that dies loses the lock.
	TryJobLock(ctx context.Context, name string) (release func(), ok bool, err error)
}

// ErrUsed is RevokeUnused's answer for a key that was used since the
// cutoff, or that is no longer active (revoked or expired): it is left as
// it is.
var ErrUsed = fmt.Errorf("%w: the key is in use or no longer active", ErrConflict)

// RevokeUnused revokes key id for the unused-keys policy when it is still
// active and unused since cutoff, checked on the key as it is locked for
// the revoke: a use recorded (flushed) after the key was picked keeps it,
// and of several policy jobs racing for one key, one revokes it and the
// others get ErrUsed. The revoke is RevokeWithReason's, with the reason
// RevokeReasonExpiredByPolicy and details (the policy's settings): nil only
// once every replica denies the key, else a *NotPropagatedError with the
// revocation standing.
func (m *Manager) RevokeUnused(ctx context.Context, by Actor, id string, cutoff time.Time, details map[string]any) (*Key, error) {
	return m.revokeIf(ctx, by, id, withReason(details, RevokeReasonExpiredByPolicy), func(cur *Key) error {
		if cur.Usable(time.Now()) != nil || !cur.UnusedSince(cutoff) {
			return ErrUsed
		}
		return nil
	})
}
