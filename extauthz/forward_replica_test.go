package extauthz_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// The forward-auth port gives the same decision as Check, reading the
// original request the way the configured mode says the proxy sends it.
func TestForwardAuth(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	replicas := map[string]*authztest.Replica{} // by --forwarded-headers
	for _, mode := range []string{"", "original", "forwarded"} {
		cfg := f.Config()
		cfg.ForwardedHeaders = mode
		replicas[mode] = authztest.StartReplica(t, cfg)
	}
	key, k := f.CreateKey(t, keystore.NewKey{UserID: "user_bob", Scopes: []string{"scans:read", "scans:write"}})
	readOnly, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_ro", Scopes: []string{"scans:read"}})

	tests := []struct {
		name    string
		mode    string
		method  string
		path    string
		headers map[string]string
		status  int
	}{
		{"envoy http_service", "", "POST", "/v1/scans?x=1", map[string]string{"Authorization": "Bearer " + key}, 200},
		{"nginx auth_request", "original", "GET", "/auth", map[string]string{"X-Original-URI": "/v1/scans", "X-Original-Method": "DELETE", "api-key": key}, 200},
		{"caddy/traefik forward_auth", "forwarded", "GET", "/", map[string]string{"X-Forwarded-Method": "PUT", "X-Forwarded-Uri": "/v1/scans/1", "X-Forwarded-Host": "api.odin.test", "Authorization": "bearer " + key}, 200},
		{"missing", "", "GET", "/", nil, 401},
		{"forged", "", "GET", "/", map[string]string{"api-key": key[:len(key)-3] + "000"}, 401},
		{"64 KiB header", "", "GET", "/", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 64<<10)}, 401},
		// A client's X-Forwarded-* or X-Original-* never turn a POST with a
		// read-only key into a GET: in the default mode they are a
		// misconfiguration (500), in the others they are not read.
		{"read-only key, POST", "", "POST", "/v1/scans", map[string]string{"api-key": readOnly}, 403},
		{"read-only key, POST, spoofed X-Forwarded-Method", "", "POST", "/v1/scans", map[string]string{"X-Forwarded-Method": "GET", "api-key": readOnly}, 500},
		{"read-only key, POST, spoofed X-Original-Method", "", "POST", "/v1/scans", map[string]string{"X-Original-Method": "GET", "api-key": readOnly}, 500},
		{"nginx, read-only key, POST, spoofed X-Forwarded-Method", "original", "GET", "/auth", map[string]string{"X-Original-URI": "/v1/scans", "X-Original-Method": "POST", "X-Forwarded-Method": "GET", "api-key": readOnly}, 403},
		{"caddy, read-only key, POST, spoofed X-Original-Method", "forwarded", "GET", "/", map[string]string{"X-Forwarded-Uri": "/v1/scans", "X-Forwarded-Method": "POST", "X-Original-Method": "GET", "api-key": readOnly}, 403},
		{"nginx, no X-Original-Method", "original", "GET", "/auth", map[string]string{"X-Original-URI": "/v1/scans", "api-key": readOnly}, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := replicas[tt.mode]
			req, _ := http.NewRequest(tt.method, r.HTTPURL+tt.path, nil)
			req.Header.Set("X-Request-Id", "req-fwd-1")
			req.Header.Set("X-Odin-Subject", "user_mallory")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
			}
			if tt.status == 200 {
				if got := resp.Header.Get("X-Odin-Subject"); got != "user_bob" {
					t.Errorf("x-odin-subject = %q, want user_bob", got)
				}
				if got := resp.Header.Get("X-Odin-Key-Id"); got != k.ID {
					t.Errorf("x-odin-key-id = %q, want %s", got, k.ID)
				}
				remove := resp.Header.Get("X-Envoy-Auth-Headers-To-Remove")
				if !strings.Contains(remove, "x-odin-org-id") || !(strings.Contains(remove, "authorization") || strings.Contains(remove, "api-key")) {
					t.Errorf("x-envoy-auth-headers-to-remove = %q", remove)
				}
				return
			}
			code := map[int]string{401: "UNAUTHORIZED", 403: "FORBIDDEN", 500: "INTERNAL"}[tt.status]
			var b authztest.ErrorBody
			if err := json.Unmarshal(body, &b); err != nil || b.Error.Code != code || b.RequestID != "req-fwd-1" {
				t.Errorf("denial body %s (%v), want code %s", body, err, code)
			}
			if resp.Header.Get("Content-Type") != "application/json" || (resp.Header.Get("Www-Authenticate") != "") != (tt.status == 401) {
				t.Errorf("denial headers %v", resp.Header)
			}
		})
	}
}

// A replica refuses to start with the former default "auto", naming the
// modes that replace it, and with a path prefix where the path comes from a
// header.
func TestForwardedHeadersAtStart(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	for _, tt := range []struct{ mode, prefix, mention string }{
		{"auto", "", "none (Envoy http_service"},
		{"auto", "", "original (NGINX auth_request"},
		{"auto", "", "forwarded (Caddy forward_auth, Traefik ForwardAuth"},
		{"original", "/authz", "path prefix"},
		{"none", "authz", "path prefix"},
	} {
		cfg := f.Config()
		cfg.ForwardedHeaders, cfg.HTTPPathPrefix = tt.mode, tt.prefix
		ctx, cancel := context.WithCancel(t.Context())
		_, err := authzsvc.New(ctx, cfg, authztest.DiscardLogger()) // the check comes before any store is opened
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), "--forwarded-headers") {
			t.Errorf("mode %q, prefix %q: New = %v, want an error naming --forwarded-headers and %q", tt.mode, tt.prefix, err, tt.mention)
		}
	}
}
