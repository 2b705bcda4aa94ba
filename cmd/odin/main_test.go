package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func odin(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestKeysLifecycle(t *testing.T) {
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	t.Setenv("ODIN_DATABASE_URL", db)
	t.Setenv("ODIN_REDIS_URL", redisURL)
	t.Setenv("ODIN_REDIS_PREFIX", prefix)
	t.Setenv("ODIN_REDIS_MAC_SECRET", testenv.RedisMACSecret)
	if _, stderr, err := odin(t, "migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}

	out, stderr, err := odin(t, "keys", "create", "--name", "GitHub Actions - Production", "--owner", "user_ci", "--scopes", "scans:read,scans:write", "--tier", "pro", "--expires-in", "720h")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	key := strings.TrimSuffix(out, "\n")
	if strings.Contains(key, "\n") || !keystore.ValidKey(key) {
		t.Fatalf("create printed %q: want the key alone on stdout", out)
	}

	out, _, err = odin(t, "keys", "create", "--name", "org key", "--owner", "org_acme", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Key   string `json:"key"`
		ID    string `json:"id"`
		OrgID string `json:"org_id"`
		Hint  string `json:"hint"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || !keystore.ValidKey(created.Key) || created.OrgID != "org_acme" || !strings.HasPrefix(created.ID, "key_") {
		t.Fatalf("create --json = %s (%v)", out, err)
	}

	out, _, err = odin(t, "keys", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, keystore.KeyHint(key)) || strings.Contains(out, key) || strings.Contains(out, created.Key) {
		t.Fatalf("list must show hints, never keys:\n%s", out)
	}
	out, _, _ = odin(t, "keys", "list", "--owner", "org_acme", "--json")
	var listed struct {
		Keys []keystore.Key `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Keys) != 1 || listed.Keys[0].ID != created.ID {
		t.Fatalf("list --owner org_acme --json = %s", out)
	}

	out, _, err = odin(t, "keys", "revoke", created.ID)
	if err != nil || !strings.HasPrefix(out, "revoked "+created.ID) {
		t.Fatalf("revoke: %q %v", out, err)
	}
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 1})
	events, _, err := store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyRevoked, Target: created.ID})
	if err != nil || len(events) != 1 || events[0].Actor != "operator:cli" || events[0].Details["reason"] != keystore.RevokeReasonOperator {
		t.Fatalf("the CLI's revoke in the audit log: %+v %v, want actor operator:cli, reason operator", events, err)
	}
	out, _, _ = odin(t, "keys", "list", "--revoked", "yes")
	if !strings.Contains(out, created.ID) || !strings.Contains(out, "revoked") {
		t.Fatalf("list --revoked yes:\n%s", out)
	}
	if _, _, err := odin(t, "keys", "revoke", "key_doesnotexist"); err == nil || !strings.Contains(err.Error(), "no key with id") {
		t.Errorf("revoke unknown: %v", err)
	}

	out, _, err = odin(t, "sessions", "revoke", "sess_123", "--reason", "logout")
	if err != nil || !strings.Contains(out, "revoked session sess_123") {
		t.Fatalf("sessions revoke: %q %v", out, err)
	}
	if _, _, err := odin(t, "sessions", "revoke", "bad id with spaces"); err == nil {
		t.Error("sessions revoke accepted a bad id")
	}
}

func TestBadInput(t *testing.T) {
	t.Setenv("ODIN_DATABASE_URL", "")
	tests := []errorCase{
		{"no command", nil, nil, "no command"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"missing database url", []string{"keys", "list"}, nil, "database URL is required"},
		{"bad env duration", []string{"authz"}, map[string]string{"ODIN_CACHE_TTL": "soon"}, `ODIN_CACHE_TTL="soon": not a duration`},
		{"bad env trusted proxies", []string{"authz"}, map[string]string{"ODIN_TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.0/33"}, `--trusted-proxies (ODIN_TRUSTED_PROXIES): "10.0.0.0/33" is not a network in CIDR notation`},
		{"bad flag", []string{"keys", "create", "--nope"}, nil, "flag provided but not defined"},
		{"bad revoked filter", []string{"keys", "list", "--revoked", "maybe"}, nil, "want all, yes or no"},
		{"revoke without id", []string{"keys", "revoke"}, nil, "exactly one key id"},
		{"bad log level", []string{"migrate", "--log-level", "loud"}, nil, "--log-level"},
	}
	wantErrors(t, tests)
}

func TestKeysCreateValidation(t *testing.T) {
	t.Setenv("ODIN_DATABASE_URL", testenv.Postgres(t))
	t.Setenv("ODIN_REDIS_URL", "")
	for _, args := range [][]string{
		{"keys", "create", "--owner", "user_1"}, // no name
		{"keys", "create", "--name", "x"},       // no owner
		{"keys", "create", "--name", "x", "--owner", "user_1", "--scopes", "BAD SCOPE"},
		{"keys", "create", "--name", "x", "--owner", "user_1", "--expires-in", "-1h"},
	} {
		out, _, err := odin(t, args...)
		if err == nil || out != "" {
			t.Errorf("odin %v: out %q, err %v; want an error and nothing on stdout", args, out, err)
		}
	}
}

// Every command's -h lists its flags with their ODIN_* variables and exits 0.
func TestHelpListsEnvironment(t *testing.T) {
	for _, cmd := range [][]string{{"authz"}, {"migrate"}, {"keys", "create"}, {"keys", "list"}, {"sessions", "revoke"}} {
		_, stderr, err := odin(t, append(cmd, "-h")...)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v -h: %v, want flag.ErrHelp", cmd, err)
		}
		if !strings.Contains(stderr, "[ODIN_DATABASE_URL]") {
			t.Errorf("%v -h does not name ODIN_DATABASE_URL:\n%s", cmd, stderr)
		}
	}
	_, stderr, _ := odin(t, "authz", "-h")
	for _, env := range []string{"ODIN_GRPC_ADDR", "ODIN_HTTP_ADDR", "ODIN_OPS_ADDR", "ODIN_REDIS_URL", "ODIN_JWKS_URL", "ODIN_JWT_ISSUER", "ODIN_JWT_AUTHORIZED_PARTIES"} {
		if !strings.Contains(stderr, "["+env+"]") {
			t.Errorf("authz -h does not list %s", env)
		}
	}
	if regexp.MustCompile(`postgres://[^ ]*@127`).MatchString(stderr) && os.Getenv("ODIN_DATABASE_URL") != "" {
		t.Error("-h prints the database URL")
	}
}

// The configuration is checked before any port is bound: with every port
// busy, a missing database URL or a bad setting is what the command says.
func TestConfigErrorsBeforeBusyPorts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	addr := busy.Addr().String()
	t.Setenv("ODIN_DATABASE_URL", "")
	t.Setenv("ODIN_REDIS_URL", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"authz", "--grpc-addr", addr, "--http-addr", addr, "--ops-addr", addr}, "database URL is required"},
		{[]string{"authz", "--grpc-addr", addr, "--database-url", "postgres://127.0.0.1:1/x", "--forwarded-headers", "auto"}, "forwarded headers"},
		{[]string{"authz", "--grpc-addr", addr, "--database-url", "postgres://127.0.0.1:1/x", "--trusted-proxies", "10.0.0.0/8, 10.0.0.1/8"}, `--trusted-proxies (ODIN_TRUSTED_PROXIES): "10.0.0.1/8" has bits set after the prefix (did you mean 10.0.0.0/8?)`},
		{[]string{"authz", "--grpc-addr", addr, "--database-url", "postgres://127.0.0.1:1/x", "--trusted-proxies", "proxy.internal"}, `--trusted-proxies (ODIN_TRUSTED_PROXIES): "proxy.internal" is not a network in CIDR notation`},
		{[]string{"dev", "--http-addr", addr, "--trusted-proxies", "::ffff:10.0.0.1"}, `--trusted-proxies (ODIN_TRUSTED_PROXIES): "::ffff:10.0.0.1" is IPv4-mapped: write the IPv4 network`},
		{[]string{"admin", "--admin-addr", addr}, "database URL is required"},
		{[]string{"admin", "--admin-addr", addr, "--admin-reverify", "second_factor:90s"}, "--admin-reverify: reverification max age 1m30s: must be a whole number of minutes"},
		{[]string{"admin", "--admin-addr", addr, "--admin-reverify", "third_factor:10m"}, `--admin-reverify: unknown reverification level "third_factor"`},
	} {
		_, _, err := odin(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("odin %v with its ports busy: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// Without a JWKS, odin authz says at start that session tokens are refused.
func TestNoJWKSIsSaidAtStart(t *testing.T) {
	t.Setenv("ODIN_DATABASE_URL", testenv.Postgres(t))
	t.Setenv("ODIN_REDIS_URL", "")
	t.Setenv("ODIN_JWKS_URL", "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stderr := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"authz", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--ops-addr", "", "--log-format", "text"}, io.Discard, stderr)
	}()
	deadline := time.After(3 * time.Second)
	for {
		if strings.Contains(stderr.String(), "no JWKS configured") {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("no warning about the missing JWKS in:\n%s", stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	<-done
}

// errorCase is a command line (with environment variables) that must fail
// with an error containing want.
type errorCase struct {
	name string
	args []string
	env  map[string]string
	want string
}

// wantErrors runs each case as a subtest.
func wantErrors(t *testing.T, cases []errorCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, _, err := odin(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("odin %v: error %v, want one containing %q", tt.args, err, tt.want)
			}
		})
	}
}
