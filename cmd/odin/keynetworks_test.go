package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// A key's network allowlist from the command line, on the database and
// through the admin API alike: set at creation (IPv4, IPv6, a bare
// address), shown by get and list, changed, kept by a roll, and removed
// (--any-network); bad entries and contradictory flags refused before
// anything is sent.
func TestKeyNetworksFromCLI(t *testing.T) {
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
			created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "office", "--owner", "user_net",
				"--allowed-cidrs", "203.0.113.0/24, 2001:db8::/32,198.51.100.7", "--json"))
			id := created.ID
			want := []string{"198.51.100.7/32", "203.0.113.0/24", "2001:db8::/32"}
			if got := keystore.CIDRStrings(created.AllowedCIDRs); !cmp.Equal(got, want) {
				t.Errorf("created with allowed_cidrs %v, want %v", got, want)
			}
			if out := mustCLI(t, "keys", "get", id); !strings.Contains(out, "198.51.100.7/32,203.0.113.0/24,2001:db8::/32") {
				t.Errorf("keys get:\n%s", out)
			}
			if out := mustCLI(t, "keys", "list", "--owner", "user_net"); !strings.Contains(out, "NETWORKS") || !strings.Contains(out, "198.51.100.7/32,203.0.113.0/24,2001:db8::/32") {
				t.Errorf("keys list:\n%s", out)
			}
			if out := mustCLI(t, "keys", "update", id, "--allowed-cidrs", "203.0.113.0/25"); !strings.HasSuffix(out, "networks 203.0.113.0/25\n") {
				t.Errorf("update --allowed-cidrs printed %q", out)
			}
			var rolled rolledKeyRecord
			if err := json.Unmarshal([]byte(mustCLI(t, "keys", "roll", id, "--json")), &rolled); err != nil {
				t.Fatal(err)
			}
			if got := keystore.CIDRStrings(rolled.AllowedCIDRs); !cmp.Equal(got, []string{"203.0.113.0/25"}) {
				t.Errorf("the rolled key's allowed_cidrs: %v", got)
			}
			k := decodeJSON[keyRecord](t, mustCLI(t, "keys", "update", rolled.ID, "--any-network", "--json"))
			if k.AllowedCIDRs != nil {
				t.Errorf("update --any-network = %+v", k.AllowedCIDRs)
			}
			if out := mustCLI(t, "keys", "get", rolled.ID); !strings.Contains(out, "networks") || !strings.Contains(out, "any") {
				t.Errorf("keys get of a key usable from any network:\n%s", out)
			}
			for _, args := range [][]string{
				{"keys", "update", rolled.ID, "--allowed-cidrs", "10.0.0.0/8", "--any-network"},
				{"keys", "update", rolled.ID, "--allowed-cidrs", ""},
				{"keys", "update", rolled.ID, "--allowed-cidrs", "10.0.0.1/8"},
				{"keys", "update", rolled.ID, "--allowed-cidrs", "10.0.0.0/8,example.com"},
				{"keys", "create", "--name", "bad", "--owner", "user_net", "--allowed-cidrs", "fe80::1%eth0"},
			} {
				if _, _, err := cli(t, args...); err == nil || !strings.Contains(err.Error(), "allowed-cidrs") && !strings.Contains(err.Error(), "any-network") {
					t.Errorf("odin %v: %v, want an error about --allowed-cidrs", args, err)
				}
			}
			if k, err := api.store.Key(context.Background(), rolled.ID); err != nil || k.AllowedCIDRs != nil {
				t.Errorf("after the refused changes: %v %+v", err, k)
			}
		})
	}
}
