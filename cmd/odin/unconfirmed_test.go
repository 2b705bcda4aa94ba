package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
)

// A revoke that cannot be confirmed on every replica (here: Redis is down)
// is still made, printed as usual, and reported: exit 3 and a message with
// the bound and the command that propagates it again, on the database and
// through the admin API alike.
func TestUnconfirmedRevokes(t *testing.T) {
	db := testenv.Postgres(t)
	deadRedis := fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := adminsvc.New(ctx, adminsvc.Config{DatabaseURL: db, RedisURL: deadRedis, RedisMACSecret: testenv.RedisMACSecret, OperatorToken: testAdminToken}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)

	for _, via := range []string{"database", "admin API"} {
		t.Run(via, func(t *testing.T) {
			if via == "database" {
				useDatabase(t, db)
				t.Setenv("ODIN_REDIS_URL", deadRedis)
				t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
			} else {
				useAPI(t, srv.URL, testAdminToken)
			}
			created := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "u", "--owner", "user_u", "--json"))
			for _, tc := range []struct {
				args       []string
				out, retry string
			}{
				{[]string{"keys", "update", created.ID, "--name", "v"}, "updated " + created.ID, ""},
				{[]string{"keys", "disable", created.ID}, "disabled " + created.ID, created.ID},
				{[]string{"keys", "enable", created.ID}, "enabled " + created.ID, created.ID},
				{[]string{"keys", "revoke", created.ID}, "revoked " + created.ID, created.ID},
				{[]string{"keys", "revoke", created.ID}, "revoked " + created.ID, created.ID}, // the retry is unconfirmed again
				{[]string{"sessions", "revoke", "sess_unconfirmed"}, "revoked session sess_unconfirmed", "sess_unconfirmed"},
			} {
				out, _, err := cli(t, tc.args...)
				var ue *unconfirmedError
				if !errors.As(err, &ue) || ue.ExitCode() != 3 {
					t.Fatalf("odin %v: %v, want an unconfirmed error (exit 3)", tc.args, err)
				}
				if msg := err.Error(); !strings.Contains(msg, "not confirmed on every replica: it may still be accepted until ") || !strings.Contains(msg, tc.retry) {
					t.Errorf("odin %v: message %q", tc.args, msg)
				}
				if !strings.Contains(out, tc.out) {
					t.Errorf("odin %v printed %q, want the usual output", tc.args, out)
				}
			}
			other := decodeJSON[createdKeyRecord](t, mustCLI(t, "keys", "create", "--name", "r", "--owner", "user_u", "--json"))
			out, _, err := cli(t, "keys", "roll", other.ID)
			var ue *unconfirmedError
			if !errors.As(err, &ue) || !strings.HasPrefix(strings.TrimSpace(out), "odin_sk_") {
				t.Errorf("unconfirmed roll: %v, printed %q: want the new key and exit 3", err, out)
			}
		})
	}
}
