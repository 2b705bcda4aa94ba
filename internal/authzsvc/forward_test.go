package authzsvc

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/keystore"
)

// The forward-auth port gives the same decision as Check, reading the
// original request the way each proxy sends it.
func TestForwardAuth(t *testing.T) {
	f := newFixture(t, false)
	r := startReplica(t, f.config())
	key, k := f.createKey(t, keystore.NewKey{UserID: "user_bob", Scopes: []string{"scans:read", "scans:write"}})

	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		status  int
	}{
		{"envoy http_service", "POST", "/v1/scans?x=1", map[string]string{"Authorization": "Bearer " + key}, 200},
		{"nginx auth_request", "GET", "/auth", map[string]string{"X-Original-URI": "/v1/scans", "X-Original-Method": "DELETE", "api-key": key}, 200},
		{"caddy/traefik forward_auth", "GET", "/", map[string]string{"X-Forwarded-Method": "PUT", "X-Forwarded-Uri": "/v1/scans/1", "X-Forwarded-Host": "api.odin.test", "Authorization": "bearer " + key}, 200},
		{"missing", "GET", "/", nil, 401},
		{"forwarded and original URIs disagree", "GET", "/", map[string]string{"X-Original-URI": "/v1/admin", "X-Forwarded-Uri": "/healthz", "api-key": key}, 401},
		{"forged", "GET", "/", map[string]string{"api-key": key[:len(key)-3] + "000"}, 401},
		{"64 KiB header", "GET", "/", map[string]string{"Authorization": "Bearer " + strings.Repeat("x", 64<<10)}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, r.httpURL+tt.path, nil)
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
			var b errorBody
			if err := json.Unmarshal(body, &b); err != nil || b.Error.Code != "UNAUTHORIZED" || b.RequestID != "req-fwd-1" {
				t.Errorf("denial body %s (%v)", body, err)
			}
			if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Www-Authenticate") == "" {
				t.Errorf("denial headers %v", resp.Header)
			}
		})
	}
}
