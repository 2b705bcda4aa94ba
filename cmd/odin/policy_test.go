package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// odin keys list --unused-for keeps the keys unused that long, on the
// database and over the admin API, and shows the last use and usage totals;
// a bad value is refused before anything is read.
func TestKeysListUnusedFor(t *testing.T) {
	api := startAdminAPI(t)
	for _, backend := range []string{"database", "admin API"} {
		t.Run(backend, func(t *testing.T) {
			if backend == "database" {
				useDatabase(t, api.db)
			} else {
				useAPI(t, api.url, testAdminToken)
			}
			owner := "user_" + strings.ReplaceAll(backend, " ", "_")
			idle := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "idle", "--owner", owner, "--json"))
			busy := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "busy", "--owner", owner, "--json"))
			long := time.Now().Add(-100 * 24 * time.Hour)
			now := time.Now()
			if err := api.store.RecordUsage(context.Background(), []keystore.Usage{
				{KeyID: idle.ID, Hour: long.UTC().Truncate(time.Hour), Count: 3, LastUsed: long},
				{KeyID: busy.ID, Hour: now.UTC().Truncate(time.Hour), Count: 4, LastUsed: now},
			}); err != nil {
				t.Fatal(err)
			}
			page := decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", owner, "--unused-for", "90d", "--json"))
			if len(page.Keys) != 1 || page.Keys[0].ID != idle.ID || page.Keys[0].UsageTotals == nil || page.Keys[0].LastUsedAt.IsZero() {
				t.Fatalf("--unused-for 90d: %+v, want only %s, with its usage", page.Keys, idle.ID)
			}
			page = decodeJSON[keyPage](t, mustCLI(t, "keys", "list", "--owner", owner, "--json"))
			for _, k := range page.Keys {
				if k.ID == busy.ID && (k.UsageTotals == nil || *k.UsageTotals != (keystore.UsageTotals{Last24h: 4, Last30d: 4})) {
					t.Errorf("busy key's usage totals: %+v", k.UsageTotals)
				}
			}
			out := mustCLI(t, "keys", "list", "--owner", owner, "--unused-for", "1h")
			if !strings.Contains(out, "LAST USED") || !strings.Contains(out, "CHECKS 30D") || !strings.Contains(out, idle.ID) || strings.Contains(out, busy.ID) {
				t.Errorf("table of --unused-for 1h:\n%s", out)
			}
			out = mustCLI(t, "keys", "get", busy.ID)
			if !strings.Contains(out, "checks, 24 hours") || !strings.Contains(out, "checks, 30 days") {
				t.Errorf("keys get shows no usage totals:\n%s", out)
			}
			for _, bad := range []string{"soon", "0d", "-1h"} {
				if _, _, err := cli(t, "keys", "list", "--unused-for", bad); err == nil || !strings.Contains(err.Error(), "--unused-for") {
					t.Errorf("--unused-for %s: %v, want an error naming the flag", bad, err)
				}
			}
		})
	}
}

// odin keys create and roll on the database apply --max-key-lifetime.
func TestKeysMaxLifetimeOnDatabase(t *testing.T) {
	useDatabase(t, testenv.Postgres(t))
	redisURL, prefix := testenv.Redis(t) // a roll is confirmed through the bus
	t.Setenv("ODIN_REDIS_URL", redisURL)
	t.Setenv("ODIN_REDIS_PREFIX", prefix)
	t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
	if _, stderr, err := odin(t, "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	k := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "CI", "--owner", "user_1", "--max-key-lifetime", "30d", "--json"))
	if d := k.ExpiresAt.Sub(k.CreatedAt); d < 30*24*time.Hour-time.Second || d > 30*24*time.Hour+time.Second {
		t.Errorf("expires %v after creation, want 30 days", d)
	}
	if _, _, err := cli(t, "keys", "create", "--name", "CI", "--owner", "user_1", "--max-key-lifetime", "30d", "--expires-in", "1000h"); err == nil || !strings.Contains(err.Error(), "maximum key lifetime") {
		t.Errorf("--expires-in past the maximum: %v", err)
	}
	if _, _, err := cli(t, "keys", "create", "--name", "CI", "--owner", "user_1", "--max-key-lifetime", "forever"); err == nil || !strings.Contains(err.Error(), "--max-key-lifetime") {
		t.Errorf("bad --max-key-lifetime: %v", err)
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"organisations": {"org_acme": {"max_key_lifetime": "7d"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	k = decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "deploy", "--owner", "org_acme", "--max-key-lifetime", "30d", "--key-policy-file", policy, "--json"))
	if d := k.ExpiresAt.Sub(k.CreatedAt); d.Round(time.Hour) != 7*24*time.Hour {
		t.Errorf("organisation key expires %v after creation, want 7 days (its own maximum)", d)
	}
	if _, _, err := cli(t, "keys", "create", "--name", "CI", "--owner", "user_1", "--key-policy-file", filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "--key-policy-file") {
		t.Errorf("missing --key-policy-file: %v", err)
	}
	forever := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "old", "--owner", "user_1", "--json"))
	rolled := decodeJSON[rolledKeyRecord](t, mustCLI(t, "keys", "roll", forever.ID, "--max-key-lifetime", "7d", "--json"))
	if d := time.Until(rolled.ExpiresAt); rolled.ExpiresAt.IsZero() || d > 7*24*time.Hour || d < 7*24*time.Hour-time.Minute {
		t.Errorf("rolled key expires %v, want in 7 days", rolled.ExpiresAt)
	}
}

// odin admin refuses a bad key policy before it opens anything.
func TestAdminKeyPolicyFlags(t *testing.T) {
	t.Setenv("ODIN_DATABASE_URL", "")
	wantErrors(t, []errorCase{
		{"bad unused period", []string{"admin", "--revoke-unused-after", "ninety days"}, nil, "--revoke-unused-after"},
		{"zero unused period", []string{"admin", "--revoke-unused-after", "0d"}, nil, "--revoke-unused-after"},
		{"dry run alone", []string{"admin", "--revoke-unused-dry-run"}, nil, "--revoke-unused-dry-run needs --revoke-unused-after"},
		{"bad interval", []string{"admin", "--revoke-unused-after", "90d", "--revoke-unused-interval", "0s"}, nil, "--revoke-unused-interval"},
		{"bad lifetime", []string{"admin"}, map[string]string{"ODIN_MAX_KEY_LIFETIME": "1y"}, "--max-key-lifetime"},
		{"bad policy file", []string{"admin", "--key-policy-file", "/nonexistent/policy.json"}, nil, "--key-policy-file"},
	})
}
