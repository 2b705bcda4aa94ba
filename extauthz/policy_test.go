package extauthz_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

const testPolicy = `
rules:
  - name: health
    path: /healthz
    public: true
  - name: scans read
    methods: [GET, HEAD]
    prefix: /v1/scans
    scopes: {all_of: [scans:read]}
  - name: scans write
    methods: [POST, PUT, PATCH, DELETE]
    prefix: /v1/scans
    scopes: {all_of: [scans:write]}
default:
  scopes: {all_of: [admin]}
`

// Route scopes: 403 names the missing scope, for keys and for JWTs; public
// routes need no credential; the policy reloads on SIGHUP.
func TestRoutePolicy(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := authztest.JWTConfig(f, is)
	cfg.PolicyFile = file
	r := authztest.StartReplica(t, cfg)
	readOnly, _ := f.CreateKey(t, keystore.NewKey{Scopes: []string{"scans:read"}})
	writer, _ := f.CreateKey(t, keystore.NewKey{Scopes: []string{"scans:write"}})
	jwtRead := is.Token(t, devissuer.Claims{AuthorizedParty: "https://app.odin.test", Org: &devissuer.Org{ID: "org_a", Role: "member", Permissions: []string{"scans:read"}}})

	check := func(method, path string, headers map[string]string) (int, string) {
		t.Helper()
		resp, err := r.Client.Check(t.Context(), authztest.EnvoyRequest(method, path, headers))
		if err != nil {
			t.Fatal(err)
		}
		return authztest.HTTPStatus(resp), resp.GetDeniedResponse().GetBody()
	}
	tests := []struct {
		name         string
		method, path string
		headers      map[string]string
		status       int
		message      string
	}{
		{"read-only key GET", "GET", "/v1/scans/42?x=1", map[string]string{"api-key": readOnly}, 200, ""},
		{"read-only key POST", "POST", "/v1/scans", map[string]string{"api-key": readOnly}, 403, "missing scope scans:write"},
		{"writer key POST", "POST", "/v1/scans", map[string]string{"api-key": writer}, 200, ""},
		{"writer key GET (write implies read)", "GET", "/v1/scans", map[string]string{"api-key": writer}, 200, ""},
		{"default rule", "GET", "/v1/billing", map[string]string{"api-key": writer}, 403, "missing scope admin"},
		{"JWT without the permission", "DELETE", "/v1/scans/1", map[string]string{"authorization": "Bearer " + jwtRead}, 403, "missing scope scans:write"},
		{"JWT with the permission", "GET", "/v1/scans/1", map[string]string{"authorization": "Bearer " + jwtRead}, 200, ""},
		{"public route, no credential", "GET", "/healthz", nil, 200, ""},
		{"public route, spoofed identity removed", "GET", "/healthz", map[string]string{"x-odin-subject": "user_mallory"}, 200, ""},
		{"not canonical path", "GET", "/v1/scans/../billing", map[string]string{"api-key": readOnly}, 403, "canonical"},
		{"no credential, protected route", "GET", "/v1/scans", nil, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, body := check(tt.method, tt.path, tt.headers)
			if got != tt.status || !strings.Contains(body, tt.message) {
				t.Fatalf("%d %s, want %d with %q", got, body, tt.status, tt.message)
			}
			if tt.status == 403 && !strings.Contains(body, `"code":"FORBIDDEN"`) {
				t.Errorf("403 body %s", body)
			}
		})
	}
	resp := r.Check(t, map[string]string{"x-odin-subject": "user_mallory"})
	_ = resp
	pub, _ := r.Client.Check(t.Context(), authztest.EnvoyRequest("GET", "/healthz", map[string]string{"x-odin-subject": "user_mallory"}))
	if !contains(pub.GetOkResponse().GetHeadersToRemove(), "x-odin-subject") {
		t.Errorf("public route kept a spoofed identity header: %v", pub.GetOkResponse())
	}

	// Reload on SIGHUP: /v1/billing becomes public; a broken file keeps it.
	if err := os.WriteFile(file, []byte(testPolicy+"  # v2\n"+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	updated := strings.Replace(testPolicy, "path: /healthz", "path: /v1/billing", 1)
	if err := os.WriteFile(file, []byte(updated), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := check("GET", "/v1/billing", nil); got == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("policy change not picked up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(file, []byte("rules: [ {name: broken, path: /x, public: true, scopes: {all_of: [a]}} ]"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	time.Sleep(2500 * time.Millisecond)
	if got, _ := check("GET", "/v1/billing", nil); got != 200 {
		t.Fatalf("a bad reload replaced the policy: %d", got)
	}
}
