package extauthz_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/denial/denialtest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// reverifyPolicy asks for a second factor verified in the last 10 minutes
// on /v1/billing (sessions only), and for any factor in the last hour on
// /v1/exports, where API keys are admitted too.
const reverifyPolicy = `
rules:
  - name: billing
    prefix: /v1/billing
    scopes: {all_of: [write]}
    reverify: {level: second_factor, max_age: 10m}
  - name: exports
    prefix: /v1/exports
    scopes: {all_of: [read]}
    reverify: {level: first_factor, max_age: 1h, allow_api_keys: true}
default:
  scopes: {all_of: [read]}
`

// Step-up verification on a route: fva in every state, keys, the gRPC and
// the HTTP answers, and a replica reading the session from Redis.
func TestReverification(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(reverifyPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := authztest.JWTConfig(f, is)
	cfg.PolicyFile = file
	cfg.JWTDefaultScopes = []string{"read", "write"}
	r := authztest.StartReplica(t, cfg)
	key, _ := f.CreateKey(t, keystore.NewKey{Scopes: []string{"read", "write"}})

	token := func(fva any, issued time.Duration) string {
		c := devissuer.Claims{AuthorizedParty: "https://app.odin.test", Extra: map[string]any{"fva": fva}}
		if issued != 0 {
			c.IssuedAt = time.Now().Add(issued)
			c.Expiry = time.Now().Add(time.Minute)
		}
		return is.Token(t, c)
	}
	billingHint := denialtest.ClerkHint(t, "second_factor", 10)
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		status  int
		hint    map[string]any // the clerk_error object of a 403, nil for none
	}{
		{"second factor just verified", "POST", "/v1/billing", bearer(token([]int{0, 0}, 0)), 200, nil},
		{"second factor 9 minutes ago", "POST", "/v1/billing", bearer(token([]int{30, 9}, 0)), 200, nil},
		{"second factor 10 minutes ago", "POST", "/v1/billing", bearer(token([]int{0, 10}, 0)), 403, billingHint},
		{"stale", "POST", "/v1/billing", bearer(token([]int{0, 120}, 0)), 403, billingHint},
		{"fresh at issue, aged since iat", "POST", "/v1/billing", bearer(token([]int{0, 6}, -5*time.Minute)), 403, billingHint},
		{"never verified", "POST", "/v1/billing", bearer(token([]int{-1, -1}, 0)), 403, billingHint},
		{"no second factor enrolled: the first decides", "POST", "/v1/billing", bearer(token([]int{2, -1}, 0)), 200, nil},
		{"fva missing", "POST", "/v1/billing", bearer(token(nil, 0)), 403, billingHint},
		{"fva malformed: a string", "POST", "/v1/billing", bearer(token("0,0", 0)), 403, billingHint},
		{"fva malformed: one element", "POST", "/v1/billing", bearer(token([]int{0}, 0)), 403, billingHint},
		{"fva malformed: fractions", "POST", "/v1/billing", bearer(token([]float64{0.5, 0.5}, 0)), 403, billingHint},
		{"API key refused", "POST", "/v1/billing", map[string]string{"api-key": key}, 403, nil},
		{"API key where the rule admits keys", "GET", "/v1/exports", map[string]string{"api-key": key}, 200, nil},
		{"first factor rule", "GET", "/v1/exports", bearer(token([]int{59, -1}, 0)), 200, nil},
		{"first factor rule, stale", "GET", "/v1/exports", bearer(token([]int{60, 0}, 0)), 403, denialtest.ClerkHint(t, "first_factor", 60)},
		{"route without the rule, fva missing", "GET", "/v1/scans", bearer(token(nil, 0)), 200, nil},
		{"route without the rule, fva malformed", "GET", "/v1/scans", bearer(token("x", 0)), 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := r.Client.Check(t.Context(), authztest.EnvoyRequest(tt.method, tt.path, tt.headers))
			if err != nil {
				t.Fatal(err)
			}
			body := resp.GetDeniedResponse().GetBody()
			if got := authztest.HTTPStatus(resp); got != tt.status {
				t.Fatalf("status %d %s, want %d", got, body, tt.status)
			}
			if tt.status == 200 {
				return
			}
			checkReverifyBody(t, []byte(body), tt.hint)
		})
	}

	t.Run("forward-auth answers the same body", func(t *testing.T) {
		for _, tc := range []struct {
			tok    string
			status int
		}{{token([]int{0, 0}, 0), 200}, {token([]int{0, 11}, 0), 403}} {
			req, _ := http.NewRequest("POST", r.HTTPURL+"/v1/billing", nil)
			req.Header.Set("Authorization", "Bearer "+tc.tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("forward-auth status %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			if tc.status == 403 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("content-type %q", ct)
				}
				checkReverifyBody(t, body, billingHint)
			}
		}
	})

	t.Run("a session read from Redis keeps its fva", func(t *testing.T) {
		before, err := f.RedisNames("jwt:*")
		if err != nil {
			t.Fatal(err)
		}
		fresh, stale := token([]int{0, 1}, 0), token([]int{0, 50}, 0)
		for _, tok := range []string{fresh, stale} {
			r.Check(t, bearer(tok)) // verified here, written to Redis
		}
		waitSessionEntries(t, f, len(before)+2)
		other := authztest.StartReplica(t, cfg)
		for tok, want := range map[string]int{fresh: 200, stale: 403} {
			resp, err := other.Client.Check(t.Context(), authztest.EnvoyRequest("POST", "/v1/billing", bearer(tok)))
			if err != nil {
				t.Fatal(err)
			}
			if got := authztest.HTTPStatus(resp); got != want {
				t.Errorf("from Redis: status %d, want %d (%s)", got, want, resp.GetDeniedResponse().GetBody())
			}
		}
		if other.Counter(t, "odin_authz_session_lookups_total", map[string]string{"tier": "redis"}) < 2 {
			t.Error("the second replica did not read the sessions from Redis")
		}
	})

	t.Run("logged reasons", func(t *testing.T) {
		for _, reason := range []string{"reverification_required", "reverify_api_key"} {
			if !strings.Contains(r.Logs.String(), `"reason":"`+reason+`"`) {
				t.Errorf("no denial logged with reason %s", reason)
			}
		}
	})
}

// checkReverifyBody checks a 403 body: the contract's FORBIDDEN body, and
// Clerk's clerk_error exactly when hint is not nil.
func checkReverifyBody(t *testing.T, body []byte, hint map[string]any) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	e, _ := got["error"].(map[string]any)
	if e["code"] != "FORBIDDEN" || e["message"] == "" || got["requestId"] == "" || got["timestamp"] == "" {
		t.Errorf("not the contract's 403 body: %s", body)
	}
	gotHint, _ := got["clerk_error"].(map[string]any)
	if _, present := got["clerk_error"]; present != (hint != nil) {
		t.Errorf("clerk_error present %v, want %v: %s", present, hint != nil, body)
	}
	if diff := cmp.Diff(hint, gotHint); diff != "" {
		t.Errorf("clerk_error (-want, +got):\n%s", diff)
	}
}

func bearer(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
