package keystore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ErrWider wraps a change refused because it would widen what a key may do
// when only narrowing was allowed (KeyUpdate.NarrowScopesOnly).
var ErrWider = errors.New("change widens the key")

// ErrWiderNetworks is the ErrWider of an allowlist that allows an address
// the key's current one does not, when only narrowing it was allowed
// (KeyUpdate.NarrowCIDRsOnly).
var ErrWiderNetworks = fmt.Errorf("%w: allowed_cidrs", ErrWider)

// KeyUpdate is a change of a key's name, scopes, tier, expiry, own rate
// limit or network allowlist. Nil fields are left as they are.
type KeyUpdate struct {
	Name   *string
	Scopes *[]string
	Tier   *string
	// ExpiresAt is the new expiry; a pointer to the zero time removes it
	// (the key never expires).
	ExpiresAt *time.Time
	// RateLimit is the key's new own rate limit; a pointer to nil removes
	// it (the key goes back to its tier's).
	RateLimit **RateLimit
	// AllowedCIDRs is the key's new allowlist; a pointer to nil or an
	// empty list removes it (any network). It is made canonical.
	AllowedCIDRs *[]netip.Prefix
	// NarrowScopesOnly refuses scopes that are not all among the key's
	// current ones (ErrWider): a user's change. It is checked in the
	// change's transaction, so a concurrent change cannot be undone by one
	// that read the key before it.
	NarrowScopesOnly bool
	// NarrowCIDRsOnly refuses an allowlist that allows an address the
	// key's current one does not (CoversCIDRs; ErrWiderNetworks): the
	// change of a session without the step-up verification a widening
	// needs. Checked in the change's transaction, as NarrowScopesOnly is.
	NarrowCIDRsOnly bool
	// Lifetimes is the maximum key lifetime policy: an expiry change that
	// lets the key live longer than its maximum from its creation is
	// ErrInvalid (bringing the expiry forward is always allowed). Update
	// sets it from the manager's policy.
	Lifetimes KeyLifetimes
}

// Update changes a key's name, scopes, tier or expiry. Like Revoke, it
// returns nil only once the change is committed and every replica applies
// it (propagateAndWait): a narrowed key passes no check it no longer allows
// after the call returns. When that cannot be confirmed the change still
// stands and the error is a *NotPropagatedError; making the same change
// again changes nothing, writes no event, and propagates again.
func (m *Manager) Update(ctx context.Context, by Actor, id string, u KeyUpdate) (*Key, error) {
	at := time.Now()
	u.Lifetimes = m.opts.MaxKeyLifetime
	if u.AllowedCIDRs != nil && len(*u.AllowedCIDRs) > 0 {
		if err := m.allowlistsEnforced(ctx); err != nil {
			return nil, err
		}
	}
	k, err := ModifyKey(ctx, m.store, id, u, at, by)
	if err != nil {
		return nil, err
	}
	return k, m.keyNotPropagated(at, m.propagateAndWait(ctx, k, m.position(ctx)))
}

// Disable disables a key: it is refused (401, "disabled") until enabled
// again. The guarantee is Revoke's: nil only once no replica allows the key,
// else a *NotPropagatedError with the change standing. Disabling a disabled
// key keeps its first disabling time and propagates it again.
func (m *Manager) Disable(ctx context.Context, by Actor, id string) (*Key, error) {
	k, err := SetKeyDisabled(ctx, m.store, id, true, time.Now(), by)
	if err != nil {
		return nil, err
	}
	return k, m.keyNotPropagated(k.DisabledAt, m.propagateAndWait(ctx, k, m.position(ctx)))
}

// Enable enables a disabled key again. It waits as Disable does, so that
// once it returns nil every replica accepts the key; enabling an enabled
// key propagates it again.
func (m *Manager) Enable(ctx context.Context, by Actor, id string) (*Key, error) {
	at := time.Now()
	k, err := SetKeyDisabled(ctx, m.store, id, false, at, by)
	if err != nil {
		return nil, err
	}
	return k, m.keyNotPropagated(at, m.propagateAndWait(ctx, k, m.position(ctx)))
}

// ModifyKey applies u to key id in s at now, in one transaction
// (Store.UpdateKey), with a key.updated event by whom in the audit log
// whose "changes" detail holds each changed field's "from" and "to". A
// revoked or expired key is refused (ErrConflict); invalid values are
// ErrInvalid (an expiry must be in the future); with NarrowScopesOnly,
// scopes not all among the current ones are ErrWider, and with
// NarrowCIDRsOnly an allowlist wider than the current one is
// ErrWiderNetworks. A change that changes nothing writes nothing. Update
// is ModifyKey with the change propagated; the conformance suite
// (storetest) runs ModifyKey on each store.
func ModifyKey(ctx context.Context, s Store, id string, u KeyUpdate, now time.Time, by Actor) (*Key, error) {
	var k *Key
	err := s.UpdateKey(ctx, id, func(ctx context.Context, tx KeyTx, cur *Key) error {
		if err := changeable(cur, now); err != nil {
			return err
		}
		st := stateOf(cur)
		changes := map[string]any{}
		if u.Name != nil && *u.Name != cur.Name {
			changes["name"] = fromTo(cur.Name, *u.Name)
			st.Name = *u.Name
		}
		if u.Scopes != nil {
			scopes := uniqueScopes(*u.Scopes)
			u.Scopes = &scopes
		}
		if u.Scopes != nil && !slices.Equal(*u.Scopes, cur.Scopes) {
			if u.NarrowScopesOnly {
				for _, sc := range *u.Scopes {
					if !slices.Contains(cur.Scopes, sc) {
						return fmt.Errorf("%w: scopes: %q is not among the key's scopes (they can only be narrowed)", ErrWider, sc)
					}
				}
			}
			st.Scopes = slices.Clone(*u.Scopes)
			if st.Scopes == nil {
				st.Scopes = []string{}
			}
			changes["scopes"] = fromTo(cur.Scopes, st.Scopes)
		}
		if u.Tier != nil && *u.Tier != cur.Tier {
			changes["tier"] = fromTo(cur.Tier, *u.Tier)
			st.Tier = *u.Tier
		}
		if u.ExpiresAt != nil && !u.ExpiresAt.Equal(cur.ExpiresAt) {
			if err := u.Lifetimes.AllowsExpiry(cur, *u.ExpiresAt); err != nil {
				return err
			}
			changes["expires_at"] = fromTo(timeOrNil(cur.ExpiresAt), timeOrNil(*u.ExpiresAt))
			st.ExpiresAt = *u.ExpiresAt
		}
		if u.RateLimit != nil && !(*u.RateLimit).Equal(cur.RateLimit) {
			st.RateLimit = *u.RateLimit
			if st.RateLimit != nil {
				cp := *st.RateLimit
				st.RateLimit = &cp
			}
			changes["rate_limit"] = fromTo(rateLimitOrNil(cur.RateLimit), rateLimitOrNil(st.RateLimit))
		}
		if u.AllowedCIDRs != nil {
			cidrs, err := CanonicalCIDRs(*u.AllowedCIDRs)
			if err != nil {
				return err
			}
			if !slices.Equal(cidrs, cur.AllowedCIDRs) {
				if u.NarrowCIDRsOnly && !CoversCIDRs(cur.AllowedCIDRs, cidrs) {
					return fmt.Errorf("%w: the new allowlist allows addresses the current one does not", ErrWiderNetworks)
				}
				changes["allowed_cidrs"] = fromTo(cidrsOrNil(cur.AllowedCIDRs), cidrsOrNil(cidrs))
				st.AllowedCIDRs = cidrs
			}
		}
		if err := st.Validate(now); err != nil {
			return err
		}
		if len(changes) == 0 {
			k = cur
			return nil
		}
		var err error
		if k, err = tx.SetState(ctx, st); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, by.event(ActionKeyUpdated, map[string]any{"changes": changes}), k.ID, k.Owner())
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict), errors.Is(err, ErrInvalid), errors.Is(err, ErrWider):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("update key %s: %w", id, err)
	}
	return k, nil
}

// SetKeyDisabled disables (disabled true, at now) or enables key id in s,
// in one transaction, with a key.disabled or key.enabled event by whom. A
// revoked key is refused (ErrConflict); a key already in the state asked
// for is returned as it is (a disabled key keeps its first disabling time)
// and no event is written. Disable and Enable are SetKeyDisabled with the
// change propagated.
func SetKeyDisabled(ctx context.Context, s Store, id string, disabled bool, now time.Time, by Actor) (*Key, error) {
	var k *Key
	err := s.UpdateKey(ctx, id, func(ctx context.Context, tx KeyTx, cur *Key) error {
		if !cur.RevokedAt.IsZero() {
			return fmt.Errorf("%w: key is revoked", ErrConflict)
		}
		if disabled == !cur.DisabledAt.IsZero() {
			k = cur
			return nil
		}
		st, action := stateOf(cur), ActionKeyEnabled
		st.DisabledAt = time.Time{}
		if disabled {
			st.DisabledAt, action = now, ActionKeyDisabled
		}
		var err error
		if k, err = tx.SetState(ctx, st); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, by.event(action, nil), k.ID, k.Owner())
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("set key %s disabled=%t: %w", id, disabled, err)
	}
	return k, nil
}

// changeable refuses to change a key that is revoked or expired at now.
func changeable(k *Key, now time.Time) error {
	switch err := k.Usable(now); {
	case errors.Is(err, ErrRevoked):
		return fmt.Errorf("%w: key is revoked", ErrConflict)
	case errors.Is(err, ErrExpired):
		return fmt.Errorf("%w: key is expired", ErrConflict)
	}
	return nil
}

func stateOf(k *Key) KeyState {
	return KeyState{Name: k.Name, Scopes: k.Scopes, Tier: k.Tier, ExpiresAt: k.ExpiresAt, DisabledAt: k.DisabledAt, RateLimit: k.RateLimit,
		AllowedCIDRs: k.AllowedCIDRs}
}

// fromTo is one field of a key.updated event's "changes".
func fromTo(from, to any) map[string]any { return map[string]any{"from": from, "to": to} }

// timeOrNil is an expiry as an event shows it: null for never.
func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// rateLimitOrNil is a rate limit as an event shows it: {"rate", "burst"},
// or null for the tier's.
func rateLimitOrNil(r *RateLimit) any {
	if r == nil {
		return nil
	}
	return map[string]any{"rate": r.Rate, "burst": r.Burst}
}
