package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// odin keys update, disable and enable, on the database and through the
// admin API alike: the same output, the same refusals, audited.
func TestKeyChangesFromCLI(t *testing.T) {
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
			created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "before", "--owner", "user_cli", "--scopes", "scans:read,scans:write", "--json"))
			id := created.ID

			out := mustCLI(t, "keys", "update", id, "--name", "after", "--scopes", "scans:read", "--tier", "pro", "--expires-in", "48h")
			if !strings.HasPrefix(out, "updated "+id) || !strings.Contains(out, `name "after", scopes scans:read, tier pro, expires 20`) {
				t.Errorf("update printed %q", out)
			}
			k := decodeJSON[keyRecord](t, mustCLI(t, "keys", "update", id, "--no-expiry", "--scopes", "", "--json"))
			if !k.ExpiresAt.IsZero() || len(k.Scopes) != 0 || k.Name != "after" || k.Tier != "pro" {
				t.Errorf("update --no-expiry --scopes '' --json = %+v", k)
			}
			for _, args := range [][]string{
				{"keys", "update", id},
				{"keys", "update", id, "--no-expiry", "--expires-in", "1h"},
				{"keys", "update", id, "--expires-in", "-1h"},
				{"keys", "update", "--name", "x"},
				{"keys", "update", id, "--tier", "Pro!"},
				{"keys", "update", "key_doesnotexist", "--name", "x"},
			} {
				if _, _, err := cli(t, args...); err == nil {
					t.Errorf("odin %v: no error", args)
				}
			}

			out = mustCLI(t, "keys", "disable", id)
			if !strings.HasPrefix(out, "disabled "+id+" ("+created.Hint+") since 20") {
				t.Errorf("disable printed %q", out)
			}
			if out := mustCLI(t, "keys", "get", id); !strings.Contains(out, "disabled") {
				t.Errorf("keys get of a disabled key:\n%s", out)
			}
			if k := decodeJSON[keyRecord](t, mustCLI(t, "keys", "enable", id, "--json")); k.Disabled || !k.DisabledAt.IsZero() {
				t.Errorf("enable --json = %+v", k)
			}
			mustCLI(t, "keys", "revoke", id)
			for _, verb := range []string{"disable", "enable"} {
				if _, _, err := cli(t, "keys", verb, id); err == nil || !strings.Contains(strings.ToLower(err.Error()), "only an active key can be changed") {
					t.Errorf("keys %s of a revoked key: %v", verb, err)
				}
			}
		})
	}
	for _, action := range []string{keystore.ActionKeyUpdated, keystore.ActionKeyDisabled, keystore.ActionKeyEnabled} {
		events, _, err := api.store.ListAudit(context.Background(), keystore.AuditFilter{Action: action, Since: time.Now().Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		actors := map[string]bool{}
		for _, ev := range events {
			actors[ev.Actor] = true
		}
		if !actors["operator"] || !actors["operator:cli"] {
			t.Errorf("%s events by %v, want by operator (admin API) and operator:cli (database)", action, actors)
		}
	}
}
