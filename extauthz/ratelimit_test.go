package extauthz_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// limitedConfig is a replica's configuration with the free tier limited
// to 5 a second, burst 20, failing open when Redis is down.
func limitedConfig(f *authztest.Fixture) authzsvc.Config {
	cfg := f.Config()
	cfg.RateLimit = ratelimit.Options{
		Tiers: map[string]ratelimit.Tier{"free": {Rate: 5, Burst: 20}},
	}
	return cfg
}

// A burst over the tier limit across 3 replicas sharing Redis gets the 429s
// expected, with the rate-limit headers on every answer.
func TestRateLimitAcrossReplicas(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	replicas := []*authztest.Replica{authztest.StartReplica(t, limitedConfig(f)), authztest.StartReplica(t, limitedConfig(f)), authztest.StartReplica(t, limitedConfig(f))}
	key, _ := f.CreateKey(t, keystore.NewKey{Tier: "free"})
	start := time.Now()
	allowed, limited := 0, 0
	for i := range 60 {
		resp := replicas[i%3].Check(t, map[string]string{"api-key": key})
		switch authztest.HTTPStatus(resp) {
		case 200:
			allowed++
			h := authztest.HeaderMap(resp.GetOkResponse().GetResponseHeadersToAdd())
			if h["ratelimit-limit"] != "20" || h["ratelimit-remaining"] == "" || h["ratelimit-reset"] == "" {
				t.Fatalf("allow without rate-limit headers: %v", h)
			}
		case 429:
			limited++
			h := authztest.HeaderMap(resp.GetDeniedResponse().GetHeaders())
			if ra, err := strconv.Atoi(h["retry-after"]); err != nil || ra < 1 || h["ratelimit-limit"] != "20" {
				t.Fatalf("429 headers: %v", h)
			}
			if b := authztest.DeniedBody(t, resp); b.Error.Code != "RATE_LIMITED" {
				t.Fatalf("429 body %+v", b)
			}
		default:
			t.Fatalf("status %d", authztest.HTTPStatus(resp))
		}
	}
	elapsed := time.Since(start)
	// Burst 20 plus 5/s for the time taken; each replica may hold one
	// unspent lease (batch 1 for this tier), the documented overshoot.
	max := 20 + int(5*elapsed.Seconds()) + 3
	if allowed < 18 || allowed > max {
		t.Errorf("allowed %d of 60 in %v, want 18..%d", allowed, elapsed, max)
	}
	t.Logf("3 replicas, burst 20 + 5/s: %d allowed, %d limited in %v", allowed, limited, elapsed)
}

// Redis down: fail open keeps answering (each replica limits on its own);
// fail closed answers 503.
func TestRateLimitRedisDown(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		t.Run("fail closed "+strconv.FormatBool(failClosed), func(t *testing.T) {
			f := authztest.NewFixture(t, authztest.NoRedis)
			rs := testenv.StartRedis(t)
			f.RedisURL, f.Prefix = rs.URL(), "odin:"
			cfg := limitedConfig(f)
			cfg.RateLimit.FailClosed = failClosed
			r := authztest.StartReplica(t, cfg)
			key, _ := f.CreateKey(t, keystore.NewKey{Tier: "free"})
			if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 200 {
				t.Fatalf("before: %d", got)
			}
			rs.Stop()
			want := 200
			if failClosed {
				want = 503
			}
			got := 0
			for range 3 { // leased tokens may still be spent first
				if got = authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got == want {
					break
				}
			}
			if got != want {
				t.Fatalf("with Redis down: %d, want %d", got, want)
			}
		})
	}
}

// A key's own limit across 2 replicas sharing Redis, with limits counted
// by organisation: the key gets exactly its own burst (it refills one
// request per 1,000 s, and its lease is one token) with ratelimit-limit
// its burst, and neither spends its organisation's
// budget nor is refused when the organisation's is spent.
func TestOwnRateLimitAcrossReplicas(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	cfg := func() authzsvc.Config {
		cfg := limitedConfig(f)
		cfg.RateLimitBy = "org"
		return cfg
	}
	replicas := []*authztest.Replica{authztest.StartReplica(t, cfg()), authztest.StartReplica(t, cfg())}
	own, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_1", OrgID: "org_1", Tier: "free", RateLimit: &keystore.RateLimit{Rate: 0.001, Burst: 30}})
	orgKey, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_2", OrgID: "org_1", Tier: "free"})
	// Spend the organisation's free tier (burst 20) with the other key.
	for i := 0; ; i++ {
		if authztest.HTTPStatus(replicas[i%2].Check(t, map[string]string{"api-key": orgKey})) == 429 {
			break
		}
		if i > 100 {
			t.Fatal("the organisation's tier is never spent")
		}
	}
	for i := range 30 {
		resp := replicas[i%2].Check(t, map[string]string{"api-key": own})
		h := authztest.HeaderMap(resp.GetOkResponse().GetResponseHeadersToAdd())
		if got := authztest.HTTPStatus(resp); got != 200 || h["ratelimit-limit"] != "30" {
			t.Fatalf("check %d of the key with its own limit: %d, %v", i+1, got, h)
		}
	}
	for i, r := range replicas {
		resp := r.Check(t, map[string]string{"api-key": own})
		h := authztest.HeaderMap(resp.GetDeniedResponse().GetHeaders())
		if got := authztest.HTTPStatus(resp); got != 429 || h["ratelimit-limit"] != "30" || h["ratelimit-remaining"] != "0" {
			t.Errorf("replica %d after the key's burst: %d, %v; want 429 with ratelimit-limit 30", i, got, h)
		}
	}
}
