package extauthz

import (
	"context"
	"errors"
	"time"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/internal/netallow"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/keystore"
)

// apiKeys authenticates odin_sk_ API keys: the checksum first (a mistyped
// or made-up key costs no lookup), then the key cache tiers, then the key's
// state. A hot cached key's principal was rendered once (PrincipalForKey),
// so its check allocates nothing; another cached key's is rendered from its
// compact record on its check, and kept while the key stays hot.
type apiKeys struct {
	keys  *keystore.Cache[*Principal]
	usage *keystore.UsageRecorder // may be nil
}

var _ Authenticator = (*apiKeys)(nil)

// Authenticate implements Authenticator.
func (a *apiKeys) Authenticate(ctx context.Context, key string, now time.Time) Authentication {
	h, err := keystore.ParseKey(key)
	if err != nil { // bad checksum or shape: no cache, no store
		return denied(DenyUnauthorized, "bad_checksum")
	}
	e, wait, err := a.keys.LookupWait(ctx, h, now)
	res := a.judge(e, err, now)
	res.StoreWait = wait
	return res
}

// judge is the answer for the cache's entry e (or its error err).
func (a *apiKeys) judge(e *keystore.Entry[*Principal], err error, now time.Time) Authentication {
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return denied(DenyUnauthorized, "unknown_key")
	case err != nil:
		return denied(DenyUnavailable, "store_unavailable")
	}
	switch err := e.Usable(now); {
	case errors.Is(err, keystore.ErrRevoked):
		return denied(DenyUnauthorized, "revoked_key")
	case errors.Is(err, keystore.ErrExpired):
		return denied(DenyUnauthorized, "expired_key")
	case errors.Is(err, keystore.ErrDisabled):
		return Authentication{Outcome: DenyUnauthorized, Reason: "disabled_key", Message: denial.MessageDisabled}
	}
	if a.usage != nil {
		a.usage.Record(e.ID(), now)
	}
	return allowed(e.Prepared())
}

// PrincipalForKey is the prepare of the key cache (keystore.NewCache): the
// identity of an API key, rendered when the key is loaded or, once its
// principal has left the hot tier, from its compact record. It reads only
// what that record keeps: id, user and org ids, scopes, tier and the key's
// own rate limit and network allowlist.
func PrincipalForKey(k *keystore.Key) *Principal {
	id := Identity{
		Method:  "api_key",
		Subject: k.Subject(),
		OrgID:   k.OrgID,
		KeyID:   k.ID,
		Scopes:  k.Scopes,
		Tier:    k.Tier,
	}
	if k.RateLimit != nil {
		id.RateLimit = &ratelimit.Tier{Rate: k.RateLimit.Rate, Burst: k.RateLimit.Burst}
	}
	p := NewPrincipal(id)
	// Parsed once here, for every check of the key while its principal is
	// cached; nil for a key without an allowlist, which is then never
	// asked for a client address.
	p.networks = netallow.New(k.AllowedCIDRs)
	return p
}
