package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin/api"
	"github.com/odin-scan/odin-authz/keystore"
)

// odin webhooks lists deliveries and retries them, on the database and
// through the admin API alike.
func TestWebhooksCLI(t *testing.T) {
	a := startAdminAPI(t)
	ctx := context.Background()
	m := keystore.NewManager(a.store, nil, keystore.ManagerOptions{})
	if _, _, err := m.Create(ctx, cliActor, keystore.NewKey{UserID: "user_wh", Name: "CI"}); err != nil {
		t.Fatal(err)
	}
	// The admin service has no endpoint: its worker marks the event skipped.
	deadline := time.Now().Add(10 * time.Second)
	for {
		events, _, err := a.store.ListOutbox(ctx, keystore.OutboxFilter{Status: keystore.OutboxSkipped})
		if err != nil {
			t.Fatal(err)
		}
		if len(events) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the key.created event was never skipped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for name, use := range map[string]func(){
		"database":  func() { useDatabase(t, a.db) },
		"admin API": func() { useAPI(t, a.url, testAdminToken) },
	} {
		t.Run(name, func(t *testing.T) {
			use()
			out := mustCLI(t, "webhooks", "deliveries")
			if !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "key.created") || !strings.Contains(out, "skipped") {
				t.Errorf("deliveries:\n%s", out)
			}
			page := decodeJSON[api.WebhookDeliveryPage](t, mustCLI(t, "webhooks", "deliveries", "--status", "skipped", "--type", "key.created", "--json"))
			if len(page.Deliveries) != 1 || !strings.HasPrefix(page.Deliveries[0].MessageID, "msg_") {
				t.Fatalf("deliveries --json = %+v", page)
			}
			if _, _, err := cli(t, "webhooks", "retry", "424242"); err == nil || !strings.Contains(err.Error(), "no ") {
				t.Errorf("retry of no delivery: %v", err)
			}
			if _, _, err := cli(t, "webhooks", "retry", "1"); err == nil || !strings.Contains(err.Error(), "skipped") {
				t.Errorf("retry of a skipped delivery: %v", err)
			}
			if _, _, err := cli(t, "webhooks", "deliveries", "--status", "lost"); err == nil || !strings.Contains(err.Error(), "status") {
				t.Errorf("--status lost: %v", err)
			}
		})
	}
}

// The endpoints come from the flags or a file; a bad one is an error that
// never quotes its secret.
func TestOutgoingWebhookFlags(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	file := filepath.Join(t.TempDir(), "hooks.json")
	if err := os.WriteFile(file, []byte(`[{"name":"dash","url":"https://dash.example/hooks","secret":"`+secret+`","types":["key.revoked"]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	o := outgoingWebhookFlags{url: "https://x.example/h", secret: secret, file: file, maxAttempts: 8, timeout: time.Second, conc: 4, expiringDays: 7}
	opts, err := o.options()
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Endpoints) != 2 || opts.Endpoints[0].Name != "dash" || opts.Endpoints[1].Name != "default" || opts.ExpiringWithin != 7*24*time.Hour {
		t.Errorf("options = %+v", opts)
	}
	for _, bad := range []outgoingWebhookFlags{
		{url: "https://x.example/h", maxAttempts: 8, timeout: time.Second, conc: 1},
		{url: "https://x.example/h", secret: "whsec_bad" + secret[6:20], maxAttempts: 8, timeout: time.Second, conc: 1},
		{maxAttempts: 0, timeout: time.Second, conc: 1},
		{maxAttempts: 1, timeout: time.Second, conc: 1, expiringDays: 31},
	} {
		if _, err := bad.options(); err == nil || strings.Contains(err.Error(), secret[6:20]) {
			t.Errorf("%+v: error %v", bad, err)
		}
	}
}
