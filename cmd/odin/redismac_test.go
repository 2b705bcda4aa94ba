package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// Every command that opens Redis refuses to start without a MAC secret of
// at least 32 bytes, and says which setting is missing; the secret never
// shows in -h.
func TestRedisMACSecretRequired(t *testing.T) {
	redisURL, prefix := testenv.Redis(t)
	t.Setenv("ODIN_DATABASE_URL", testenv.Postgres(t))
	t.Setenv("ODIN_REDIS_URL", redisURL)
	t.Setenv("ODIN_REDIS_PREFIX", prefix)
	t.Setenv("ODIN_ADMIN_TOKEN", "an-operator-token-of-at-least-32-characters")
	t.Setenv("ODIN_GRPC_ADDR", "127.0.0.1:0")
	t.Setenv("ODIN_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("ODIN_OPS_ADDR", "127.0.0.1:0")
	t.Setenv("ODIN_ADMIN_ADDR", "127.0.0.1:0")
	run := func(args ...string) error {
		// A command that wrongly starts serves until the deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var out, errOut bytes.Buffer
		return run(ctx, args, &out, &errOut)
	}
	for _, secret := range []string{"", "0123456789abcdef0123456789abcde"} { // none, 31 bytes
		t.Setenv("ODIN_REDIS_MAC_SECRET", secret)
		for _, args := range [][]string{
			{"authz"}, {"admin"}, {"keys", "list", "--owner", "user_1"}, {"sessions", "revoke", "sess_1"},
		} {
			err := run(args...)
			if err == nil || !strings.Contains(err.Error(), "--redis-mac-secret (ODIN_REDIS_MAC_SECRET)") {
				t.Errorf("odin %v with a %d-byte secret: %v; want a refusal naming --redis-mac-secret", args, len(secret), err)
			}
		}
	}
	t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
	t.Setenv("ODIN_REDIS_MAC_SECRET_PREVIOUS", "short")
	if err := run("authz"); err == nil || !strings.Contains(err.Error(), "--redis-mac-secret-previous") {
		t.Errorf("a short previous secret: %v; want a refusal naming --redis-mac-secret-previous", err)
	}
	t.Setenv("ODIN_REDIS_MAC_SECRET_PREVIOUS", "")

	// Without Redis no secret is needed.
	t.Setenv("ODIN_REDIS_URL", "")
	t.Setenv("ODIN_REDIS_MAC_SECRET", "")
	if _, stderr, err := odin(t, "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	if out, stderr, err := odin(t, "keys", "list", "--owner", "user_1"); err != nil {
		t.Errorf("keys list without Redis nor secret: %v\n%s%s", err, out, stderr)
	}

	t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
	t.Setenv("ODIN_REDIS_MAC_SECRET_PREVIOUS", "previous-"+testenv.RedisMACSecret)
	for _, cmd := range [][]string{{"authz"}, {"admin"}, {"keys", "list"}, {"sessions", "revoke"}} {
		_, stderr, _ := odin(t, append(cmd, "-h")...)
		if !strings.Contains(stderr, "[ODIN_REDIS_MAC_SECRET]") || !strings.Contains(stderr, "[ODIN_REDIS_MAC_SECRET_PREVIOUS]") {
			t.Errorf("%v -h does not list the MAC secret settings", cmd)
		}
		if strings.Contains(stderr, testenv.RedisMACSecret) {
			t.Errorf("%v -h prints the MAC secret", cmd)
		}
	}
}
