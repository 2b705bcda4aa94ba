package main

import (
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// A key's own rate limit from the command line, on the database and
// through the admin API alike: set at creation, shown by get and list,
// changed, and taken away (--tier-rate-limit); bad limits refused.
func TestKeyRateLimitFromCLI(t *testing.T) {
	api := startAdminAPI(t)
	redisURL, prefix := testenv.Redis(t)
	for _, via := range []string{"database", "admin API"} {
		t.Run(via, func(t *testing.T) {
			if via == "database" {
				useDatabase(t, api.db)
				t.Setenv("ODIN_REDIS_URL", redisURL)
				t.Setenv("ODIN_REDIS_PREFIX", prefix)
				t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
			} else {
				useAPI(t, api.url, testAdminToken)
			}
			created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "limited", "--owner", "user_rl", "--tier", "pro", "--rate-limit", "600/m:50", "--json"))
			id := created.ID
			if want := (&keystore.RateLimit{Rate: 10, Burst: 50}); !want.Equal(created.RateLimit) {
				t.Errorf("created with rate limit %+v, want %+v", created.RateLimit, want)
			}
			if out := mustCLI(t, "keys", "get", id); !strings.Contains(out, "10/s:50") {
				t.Errorf("keys get:\n%s", out)
			}
			if out := mustCLI(t, "keys", "list", "--owner", "user_rl"); !strings.Contains(out, "RATE LIMIT") || !strings.Contains(out, "10/s:50") {
				t.Errorf("keys list:\n%s", out)
			}
			if out := mustCLI(t, "keys", "update", id, "--rate-limit", "0.5/s:3"); !strings.HasSuffix(out, "rate limit 0.5/s:3, networks any\n") {
				t.Errorf("update --rate-limit printed %q", out)
			}
			k := decodeJSON[keyRecord](t, mustCLI(t, "keys", "update", id, "--tier-rate-limit", "--json"))
			if k.RateLimit != nil || k.Tier != "pro" {
				t.Errorf("update --tier-rate-limit = %+v", k)
			}
			if out := mustCLI(t, "keys", "get", id); !strings.Contains(out, "rate limit") {
				t.Errorf("keys get of a key on its tier:\n%s", out)
			}
			for _, args := range [][]string{
				{"keys", "update", id, "--rate-limit", "10/s:20", "--tier-rate-limit"},
				{"keys", "update", id, "--rate-limit", "10/s"},
				{"keys", "update", id, "--rate-limit", "0/s:1"},
				{"keys", "update", id, "--rate-limit", "10/s:0"},
				{"keys", "create", "--name", "bad", "--owner", "user_rl", "--rate-limit", "fast"},
			} {
				if _, _, err := cli(t, args...); err == nil || !strings.Contains(err.Error(), "rate") {
					t.Errorf("odin %v: %v, want an error about the rate limit", args, err)
				}
			}
		})
	}
}
