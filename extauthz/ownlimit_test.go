package extauthz_test

import (
	"testing"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/keystore"
)

// The key store accepts exactly the own limits the rate limiter does.
func TestOwnLimitBoundsAgree(t *testing.T) {
	for _, rl := range []keystore.RateLimit{
		{Rate: keystore.MaxRateLimitRate, Burst: keystore.MaxRateLimitBurst}, {Rate: 1e-9, Burst: 1},
		{Rate: keystore.MaxRateLimitRate * 1.0001, Burst: 1}, {Rate: 1, Burst: keystore.MaxRateLimitBurst + 1}, {Rate: 0, Burst: 1}, {Rate: 1, Burst: 0},
	} {
		storeErr := rl.Validate()
		limiterErr := ratelimit.Tier{Rate: rl.Rate, Burst: rl.Burst}.Validate()
		if (storeErr == nil) != (limiterErr == nil) {
			t.Errorf("%+v: the key store says %v, the limiter %v", rl, storeErr, limiterErr)
		}
	}
}

// A key's principal carries its own limit; a key without one has none.
func TestPrincipalForKeyOwnLimit(t *testing.T) {
	k := &keystore.Key{ID: "key_1", UserID: "user_1", Tier: "pro", RateLimit: &keystore.RateLimit{Rate: 2.5, Burst: 7}}
	if p := extauthz.PrincipalForKey(k); p.RateLimit == nil || *p.RateLimit != (ratelimit.Tier{Rate: 2.5, Burst: 7}) || p.Tier != "pro" {
		t.Errorf("principal of a key with its own limit: %+v", p.Identity)
	}
	k.RateLimit = nil
	if p := extauthz.PrincipalForKey(k); p.RateLimit != nil {
		t.Errorf("principal of a key on its tier: %+v", p.Identity)
	}
}
