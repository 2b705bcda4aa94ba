package extauthz_test

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

func TestCheck(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	r := authztest.StartReplica(t, f.Config())
	ctx := context.Background()

	valid, validKey := f.CreateKey(t, keystore.NewKey{UserID: "user_alice", OrgID: "org_acme", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"})
	// A key that expires while it sits in every cache tier: the expiry is
	// checked on each request, not only when the key is loaded.
	expired, expiredKey := f.CreateKey(t, keystore.NewKey{ExpiresAt: time.Now().Add(400 * time.Millisecond)})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": expired})); got != 200 {
		t.Fatalf("key %s before its expiry: status %d, want 200", expiredKey.ID, got)
	}
	time.Sleep(time.Until(expiredKey.ExpiresAt) + 10*time.Millisecond)
	revoked, revokedKey := f.CreateKey(t, keystore.NewKey{})
	if _, err := f.Manager.Revoke(ctx, authztest.TestActor, revokedKey.ID); err != nil {
		t.Fatal(err)
	}
	// A disabled key, checked once before it was disabled so that it sits
	// in every cache tier: the disabling reaches them.
	disabled, disabledKey := f.CreateKey(t, keystore.NewKey{})
	if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": disabled})); got != 200 {
		t.Fatalf("key %s before it was disabled: status %d, want 200", disabledKey.ID, got)
	}
	if _, err := f.Manager.Disable(ctx, authztest.TestActor, disabledKey.ID); err != nil {
		t.Fatal(err)
	}
	unknown, _ := keystore.GenerateKey()
	other, _ := keystore.GenerateKey()
	badChecksum := valid[:len(valid)-1] + "0"
	if valid[len(valid)-1] == '0' {
		badChecksum = valid[:len(valid)-1] + "1"
	}
	const jwtLike = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2ln"

	tests := []struct {
		name    string
		headers map[string]string
		status  int
		reason  string // expected in the denial log line
	}{
		{"valid key in authorization", map[string]string{"authorization": "Bearer " + valid}, 200, ""},
		{"valid key in api-key", map[string]string{"api-key": valid}, 200, ""},
		{"lower-case scheme", map[string]string{"authorization": "bearer " + valid}, 200, ""},
		{"missing", map[string]string{}, 401, "missing"},
		{"ambiguous", map[string]string{"authorization": "Bearer " + valid, "api-key": other}, 401, "ambiguous"},
		{"malformed scheme", map[string]string{"authorization": "Basic " + valid}, 401, "not_bearer"},
		{"malformed key", map[string]string{"api-key": "odin_sk_tooshort"}, 401, "bad_checksum"},
		{"bad checksum", map[string]string{"api-key": badChecksum}, 401, "bad_checksum"},
		{"unknown", map[string]string{"authorization": "Bearer " + unknown}, 401, "unknown_key"},
		{"expired", map[string]string{"api-key": expired}, 401, "expired_key"},
		{"revoked", map[string]string{"api-key": revoked}, 401, "revoked_key"},
		{"disabled", map[string]string{"api-key": disabled}, 401, "disabled_key"},
		{"jwt before the JWT verifier", map[string]string{"authorization": "Bearer " + jwtLike}, 401, "jwt_not_configured"},
		{"64 KiB header", map[string]string{"authorization": "Bearer " + strings.Repeat("A", 64<<10)}, 401, "oversized"},
		{"64 KiB unrelated header, valid key", map[string]string{"api-key": valid, "x-big": strings.Repeat("b", 64<<10)}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqID := "req-test-" + strings.ReplaceAll(tt.name, " ", "-")
			h := map[string]string{"x-request-id": reqID}
			for k, v := range tt.headers {
				h[k] = v
			}
			resp := r.Check(t, h)
			if got := authztest.HTTPStatus(resp); got != tt.status {
				t.Fatalf("status = %d, want %d (response %v)", got, tt.status, resp)
			}
			if tt.status == 200 {
				return
			}
			if resp.GetStatus().GetCode() != int32(codes.Unauthenticated) {
				t.Errorf("gRPC status code = %d, want UNAUTHENTICATED", resp.GetStatus().GetCode())
			}
			body := authztest.DeniedBody(t, resp)
			if body.Error.Code != "UNAUTHORIZED" || body.RequestID != reqID {
				t.Errorf("body = %+v, want code UNAUTHORIZED and requestId %q", body, reqID)
			}
			// A disabled key is told so; every other key refusal says the same.
			want := map[string]string{"missing": denial.MessageMissing, "disabled_key": denial.MessageDisabled}[tt.reason]
			if want == "" {
				want = denial.MessageUnauthorized
			}
			if body.Error.Message != want {
				t.Errorf("message = %q, want %q", body.Error.Message, want)
			}
			if _, err := time.Parse(time.RFC3339, body.Timestamp); err != nil || !strings.HasSuffix(body.Timestamp, "Z") {
				t.Errorf("timestamp %q is not RFC 3339 UTC", body.Timestamp)
			}
			hdrs := authztest.HeaderMap(resp.GetDeniedResponse().GetHeaders())
			if hdrs["content-type"] != "application/json" || hdrs["www-authenticate"] != `Bearer realm="odin"` {
				t.Errorf("denial headers = %v", hdrs)
			}
			if strings.Contains(resp.GetDeniedResponse().GetBody(), "odin_sk_") {
				t.Error("denial body echoes the credential")
			}
			if !strings.Contains(r.Logs.String(), `"request_id":"`+reqID+`"`) || !strings.Contains(r.Logs.String(), `"reason":"`+tt.reason+`"`) {
				t.Errorf("no log line with request_id %s and reason %s", reqID, tt.reason)
			}
		})
	}

	t.Run("identity headers, spoofing and stripping", func(t *testing.T) {
		resp := r.Check(t, map[string]string{
			"authorization":  "Bearer " + valid,
			"x-odin-subject": "user_mallory", "x-odin-session-id": "sess_spoof", "x-odin-admin": "true",
			"x_odin_subject": "user_mallory", "x-odin_tier": "enterprise", "x-odin-": "empty suffix",
		})
		ok := resp.GetOkResponse()
		if ok == nil {
			t.Fatalf("not allowed: %v", resp)
		}
		wantHeaders := map[string]string{
			"x-odin-auth-method": "api_key", "x-odin-subject": "user_alice", "x-odin-org-id": "org_acme",
			"x-odin-key-id": validKey.ID, "x-odin-scopes": "scans:read scans:write", "x-odin-tier": "pro",
		}
		if diff := cmp.Diff(wantHeaders, authztest.HeaderMap(ok.GetHeaders())); diff != "" {
			t.Errorf("identity headers (-want, +got):\n%s", diff)
		}
		for _, o := range ok.GetHeaders() {
			//lint:ignore SA1019 the test checks the deprecated flag is set for older Envoys
			if o.GetAppend().GetValue() || o.GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
				t.Errorf("header %s is not an overwrite: %v", o.GetHeader().GetKey(), o)
			}
		}
		removed := append([]string(nil), ok.GetHeadersToRemove()...)
		sort.Strings(removed)
		if diff := cmp.Diff([]string{"authorization", "x-odin-admin", "x-odin-session-id", "x-odin_tier", "x_odin_subject"}, removed); diff != "" {
			t.Errorf("headers_to_remove (-want, +got):\n%s", diff)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if md["key_id"].GetStringValue() != validKey.ID || md["subject"].GetStringValue() != "user_alice" {
			t.Errorf("dynamic metadata = %v", md)
		}
	})

	t.Run("api-key header stripped", func(t *testing.T) {
		resp := r.Check(t, map[string]string{"api-key": valid})
		if !contains(resp.GetOkResponse().GetHeadersToRemove(), "api-key") {
			t.Errorf("api-key not stripped: %v", resp.GetOkResponse().GetHeadersToRemove())
		}
	})

	t.Run("no secret in logs", func(t *testing.T) {
		logs := r.Logs.String()
		for _, secret := range []string{valid, expired, revoked, unknown, other, validKey.Hash.String()} {
			if strings.Contains(logs, secret) || strings.Contains(logs, secret[len(keystore.KeyPrefix):]) {
				t.Fatalf("a key or hash appears in the logs")
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		if n := r.Counter(t, "odin_authz_decisions_total", map[string]string{"result": "allow", "credential": "api_key"}); n < 3 {
			t.Errorf("allow decisions counted %v, want ≥ 3", n)
		}
		resp, err := http.Get(r.OpsURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("/metrics status %d", resp.StatusCode)
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// A key whose checksum fails is refused before any cache or store is
// touched: no lookup counted at any tier, no query, no Redis key written.
func TestBadChecksumTouchesNothing(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	r := authztest.StartReplica(t, f.Config())
	for range 50 {
		k, _ := keystore.GenerateKey()
		forged := k[:len(k)-6] + "000000"
		if keystore.ValidKey(forged) {
			continue
		}
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": forged})); got != 401 {
			t.Fatalf("forged key status %d, want 401", got)
		}
	}
	if n := r.Counter(t, "odin_keystore_lookups_total", nil); n != 0 {
		t.Errorf("cache tiers answered %v lookups, want 0", n)
	}
	if n := r.Counter(t, "odin_keystore_store_queries_total", nil); n != 0 {
		t.Errorf("PostgreSQL saw %v queries, want 0", n)
	}
	if n := r.Counter(t, "odin_authz_decisions_total", map[string]string{"result": "unauthorized"}); n < 40 {
		t.Errorf("only %v denials counted", n)
	}
	keys, err := f.RedisKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("Redis holds %v after forged keys only", keys)
	}
}
