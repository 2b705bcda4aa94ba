package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// startDevIssuer serves the devissuer handler on a loopback port 0 until the
// test ends, and returns its base URL and the log it writes.
func startDevIssuer(t *testing.T, cfg devIssuerConfig) (string, *testenv.LogBuffer) {
	t.Helper()
	p, err := devissuer.New(devissuer.Options{Issuer: cfg.issuer})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serveDevIssuer(ctx, l, newDevIssuerHandler(p, cfg, logger), logger) }()
	t.Cleanup(func() {
		cancel()
		testenv.WaitStopped(t, errc, 10*time.Second, "serveDevIssuer")
	})
	return "http://" + l.Addr().String(), logs
}

func postMint(t *testing.T, base, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(base+"/mint", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// verifier checks tokens against the JWKS the dev issuer serves, as odin
// authz does (compose runs it with ODIN_JWT_PERMISSIONS_CLAIM=permissions).
func verifier(t *testing.T, base, issuer string) *jwtauth.Verifier {
	t.Helper()
	v, err := jwtauth.New(t.Context(), jwtauth.Config{
		JWKSURL: base + devissuer.JWKSPath,
		Issuer:  issuer,
		Claims:  jwtauth.ClaimsMapping{PermissionsClaim: "permissions"},
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var testDevIssuerConfig = devIssuerConfig{issuer: "http://issuer:9005", defaultTTL: 5 * time.Minute, maxTTL: time.Hour}

func TestDevIssuerMintVerifies(t *testing.T) {
	base, logs := startDevIssuer(t, testDevIssuerConfig)
	v := verifier(t, base, testDevIssuerConfig.issuer)

	for _, tc := range []struct {
		name string
		body string
		want jwtauth.Session
		ttl  time.Duration
	}{
		{
			name: "empty body: defaults",
			body: "",
			want: jwtauth.Session{Subject: devissuer.DefaultSubject, Tier: jwtauth.DefaultTier},
			ttl:  testDevIssuerConfig.defaultTTL,
		},
		{
			name: "organisation member with permissions and tier",
			body: `{"sub":"user_42","sid":"sess_fixed","org_id":"org_acme","org_role":"admin","org_slug":"acme",
				"permissions":["scans:read","scans:write"],"tier":"pro","ttl_seconds":120,"azp":"http://localhost:3000"}`,
			want: jwtauth.Session{Subject: "user_42", SessionID: "sess_fixed", AuthorizedParty: "http://localhost:3000",
				OrgID: "org_acme", OrgSlug: "acme", OrgRole: "org:admin", Permissions: []string{"scans:read", "scans:write"}, Tier: "pro"},
			ttl: 2 * time.Minute,
		},
		{
			name: "personal token: permissions from the permissions claim",
			body: `{"sub":"user_7","permissions":["scans:read"],"tier":"enterprise"}`,
			want: jwtauth.Session{Subject: "user_7", Permissions: []string{"scans:read"}, Tier: "enterprise"},
			ttl:  testDevIssuerConfig.defaultTTL,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().Truncate(time.Second)
			code, body := postMint(t, base, tc.body)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			var got mintResponse
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if !strings.HasPrefix(got.SessionID, "sess_") {
				t.Errorf("sid = %q, want sess_…", got.SessionID)
			}
			if exp := got.ExpiresAt; exp.Before(before.Add(tc.ttl)) || exp.After(time.Now().Add(tc.ttl)) {
				t.Errorf("expires_at = %s, want about now + %s", exp, tc.ttl)
			}
			s, err := v.Verify(t.Context(), got.Token)
			if err != nil {
				t.Fatalf("verify minted token: %v", err)
			}
			want := tc.want
			if want.SessionID == "" {
				want.SessionID = got.SessionID
			}
			if !s.Expiry.Equal(got.ExpiresAt) {
				t.Errorf("exp %s, answer said %s", s.Expiry, got.ExpiresAt)
			}
			if diff := cmp.Diff(want, *s, cmpopts.IgnoreFields(jwtauth.Session{}, "IssuedAt", "NotBefore", "Expiry", "SigningKey", "Factors"), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("session (-want, +got):\n%s", diff)
			}
			if strings.Contains(logs.String(), got.Token) {
				t.Error("the log contains the minted token")
			}
		})
	}
	if !strings.Contains(logs.String(), "minted session token") {
		t.Errorf("no log line per mint:\n%s", logs.String())
	}
}

func TestDevIssuerRefusesBadRequests(t *testing.T) {
	base, _ := startDevIssuer(t, testDevIssuerConfig)
	for _, tc := range []struct{ name, body, want string }{
		{"unknown field", `{"subject":"user_1"}`, "unknown field"},
		{"not JSON", `sub=user_1`, "body"},
		{"two objects", `{} {}`, "after the JSON object"},
		{"negative ttl", `{"ttl_seconds":-1}`, "negative"},
		{"ttl over the maximum", `{"ttl_seconds":3601}`, "exceeds"},
		{"role without organisation", `{"org_role":"admin"}`, "need org_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := postMint(t, base, tc.body)
			var got struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %s: %v", body, err)
			}
			if code != http.StatusBadRequest || got.Error.Code != "BAD_REQUEST" || !strings.Contains(got.Error.Message, tc.want) {
				t.Errorf("got %d %+v, want 400 BAD_REQUEST mentioning %q", code, got.Error, tc.want)
			}
		})
	}

	resp, err := http.Get(base + "/mint")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /mint: %d, want 405", resp.StatusCode)
	}
	resp, err = http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %d, want 200", resp.StatusCode)
	}
}

// TestDevIssuerCommand runs the command as the container does: flags from
// ODIN_* variables, the URL printed on stdout, a clean stop when the
// context ends.
func TestDevIssuerCommand(t *testing.T) {
	t.Setenv("ODIN_DEVISSUER_ADDR", "127.0.0.1:0")
	t.Setenv("ODIN_DEVISSUER_ISSUER", "http://issuer.test:9005")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	stderr := &testenv.LogBuffer{}
	errc := make(chan error, 1)
	go func() {
		errc <- runDevIssuer(ctx, []string{"--max-ttl", "2h"}, outW, stderr)
		outW.Close()
	}()

	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("read stdout: %v (stderr %s)", err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	m := regexp.MustCompile(`JWKS (http://127\.0\.0\.1:\d+)/\.well-known/jwks\.json`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("stdout %q does not name the JWKS URL", line)
	}
	base := m[1]
	if !strings.Contains(stderr.String(), "development identity provider") {
		t.Errorf("no start-up warning on stderr:\n%s", stderr.String())
	}

	code, body := postMint(t, base, `{"sub":"user_cmd","ttl_seconds":7200}`)
	if code != http.StatusOK {
		t.Fatalf("mint: %d %s", code, body)
	}
	var got mintResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	s, err := verifier(t, base, "http://issuer.test:9005").Verify(t.Context(), got.Token)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if s.Subject != "user_cmd" {
		t.Errorf("sub = %q", s.Subject)
	}

	cancel()
	testenv.WaitStopped(t, errc, 10*time.Second, "runDevIssuer")
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestDevIssuerFlags(t *testing.T) {
	var stderr bytes.Buffer
	err := runDevIssuer(context.Background(), []string{"-h"}, io.Discard, &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"DEVELOPMENT TOOL", "ODIN_DEVISSUER_ADDR", "ODIN_DEVISSUER_ISSUER", "generated at each start", "POST /mint"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, stderr.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--default-ttl", "2h", "--max-ttl", "1h"}, "--max-ttl"},
		{[]string{"--default-ttl", "0s"}, "--default-ttl"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--addr", "127.0.0.1:-1"}, "listen"},
	} {
		err := runDevIssuer(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}
