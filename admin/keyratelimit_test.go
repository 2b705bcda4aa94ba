package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// contractKeyRateLimits gives keys their own rate limits as the operator
// (at creation and by PATCH, null going back to the tier's), shows them in
// reads and lists, refuses them to users, refuses bad values naming the
// field, and audits each change.
func contractKeyRateLimits(t *testing.T, e *env, c contractClient) {
	op := admintest.OperatorToken
	gina := e.Token("user_rl", "", "")
	r := c.do(t, call{method: "POST", path: keysPath, bearer: op, status: 201, body: map[string]any{
		"name": "limited", "scopes": []string{"scans:read"}, "user_id": "user_rl", "tier": "pro",
		"rate_limit": map[string]any{"rate": 0.5, "burst": 3}}})
	id := r.Str("id")
	path := keysPath + "/" + id
	if !cmp.Equal(r.Body["rate_limit"], map[string]any{"rate": 0.5, "burst": float64(3)}) {
		t.Errorf("created key's rate_limit: %s", r.Raw)
	}
	if r := c.do(t, call{method: "GET", path: path, bearer: gina, status: 200}); !cmp.Equal(r.Body["rate_limit"], map[string]any{"rate": 0.5, "burst": float64(3)}) {
		t.Errorf("read: %s", r.Raw)
	}
	if r := c.do(t, call{method: "GET", path: keysPath + "?user_id=user_rl", bearer: op, status: 200}); !json.Valid([]byte(r.Raw)) || !containsRateLimit(r, id) {
		t.Errorf("list: %s", r.Raw)
	}

	// A user may neither give a key a limit nor change it.
	c.do(t, call{method: "POST", path: keysPath, bearer: gina, status: 403, body: map[string]any{
		"name": "mine", "scopes": []string{}, "rate_limit": map[string]any{"rate": 1000, "burst": 1000}}})
	for _, body := range []map[string]any{{"rate_limit": map[string]any{"rate": 1000, "burst": 1000}}, {"rate_limit": nil}} {
		c.do(t, call{method: "PATCH", path: path, bearer: gina, body: body, status: 403})
	}

	// Bad values: 400 naming the field, the document refusing them too.
	for _, tc := range []struct {
		limit map[string]any
		field string
	}{
		{map[string]any{"rate": 0, "burst": 1}, "rate_limit.rate"},
		{map[string]any{"rate": -2, "burst": 1}, "rate_limit.rate"},
		{map[string]any{"rate": 1e6, "burst": 1}, "rate_limit.rate"},
		{map[string]any{"rate": 1, "burst": 0}, "rate_limit.burst"},
		{map[string]any{"rate": 1, "burst": 2e9}, "rate_limit.burst"},
		{map[string]any{"rate": 1}, "rate_limit.burst"},
	} {
		r := c.do(t, call{method: "PATCH", path: path, bearer: op, body: map[string]any{"rate_limit": tc.limit}, status: 400, expect: invalid})
		if r.ErrorField() != tc.field {
			t.Errorf("PATCH rate_limit %v: field %q, want %q (%s)", tc.limit, r.ErrorField(), tc.field, r.Raw)
		}
		r = c.do(t, call{method: "POST", path: keysPath, bearer: op, status: 400, expect: invalid, body: map[string]any{
			"name": "bad", "scopes": []string{}, "user_id": "user_rl", "rate_limit": tc.limit}})
		if r.ErrorField() != tc.field {
			t.Errorf("POST rate_limit %v: field %q, want %q (%s)", tc.limit, r.ErrorField(), tc.field, r.Raw)
		}
	}

	// The operator changes it, then goes back to the tier.
	r = c.do(t, call{method: "PATCH", path: path, bearer: op, body: map[string]any{"rate_limit": map[string]any{"rate": 100, "burst": 40}}, status: 200})
	if !cmp.Equal(r.Body["rate_limit"], map[string]any{"rate": float64(100), "burst": float64(40)}) {
		t.Errorf("PATCH rate_limit: %s", r.Raw)
	}
	r = c.do(t, call{method: "PATCH", path: path, bearer: op, body: map[string]any{"rate_limit": nil}, status: 200})
	if _, ok := r.Body["rate_limit"]; ok || r.Str("tier") != "pro" {
		t.Errorf("PATCH rate_limit null: %s", r.Raw)
	}
	events, _, err := e.Store.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyUpdated, Target: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d key.updated events, want 2: %+v", len(events), events)
	}
	raw, _ := json.Marshal([]any{events[1].Details["changes"], events[0].Details["changes"]})
	const want = `[{"rate_limit":{"from":{"burst":3,"rate":0.5},"to":{"burst":40,"rate":100}}},{"rate_limit":{"from":{"burst":40,"rate":100},"to":null}}]`
	if string(raw) != want || events[0].Actor != "operator" {
		t.Errorf("key.updated changes by %s: %s, want %s", events[0].Actor, raw, want)
	}
}

func containsRateLimit(r admintest.Response, id string) bool {
	keys, _ := r.Body["keys"].([]any)
	for _, k := range keys {
		if k, _ := k.(map[string]any); k["id"] == id {
			return cmp.Equal(k["rate_limit"], map[string]any{"rate": 0.5, "burst": float64(3)})
		}
	}
	return false
}

// startLimitedReplica runs an odin authz replica with rate limits on the
// admin env's stores (PostgreSQL, and Redis for the limits) and returns a
// Check of GET /v1/scans with an API key.
func startLimitedReplica(t *testing.T, e *env) func(key string) *authv3.CheckResponse {
	t.Helper()
	cfg := e.authzConfig()
	cfg.DisableRateLimit = false
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	done := make(chan struct{})
	go func() { _ = svc.Serve(ctx, authzsvc.Listeners{GRPC: l}); close(done) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); <-done; conn.Close() })
	client := authv3.NewAuthorizationClient(conn)
	return func(key string) *authv3.CheckResponse {
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/v1/scans", Headers: map[string]string{"api-key": key},
			}},
		}})
		if err != nil {
			t.Fatalf("check: %v", err)
		}
		return resp
	}
}

// A key's own rate limit is enforced across two replicas sharing Redis,
// with its own ratelimit-limit; a PATCH of the limit is in force on both
// as soon as it is answered (a new limit starts from a full budget), and
// a PATCH to null gives the key its tier's limit back.
//
// The limits refill one request per 1,000 seconds, so the counts are
// exact whatever the machine's speed: a lease of this limit is one token
// (docs/RATELIMIT.md), spent by the request that took it.
func TestKeyRateLimitAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	replicas := []func(string) *authv3.CheckResponse{startLimitedReplica(t, e), startLimitedReplica(t, e)}
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "k", "scopes": []string{"scans:read"}, "user_id": "user_k",
		"tier": "enterprise", "rate_limit": map[string]any{"rate": 0.001, "burst": 4}})
	e.MustStatus(r, 201)
	key, id := r.Str("key"), r.Str("id")
	// Another key of the same owner and tier keeps the tier's limit.
	r = e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "tier", "scopes": []string{"scans:read"}, "user_id": "user_k", "tier": "enterprise"})
	e.MustStatus(r, 201)
	tierKey := r.Str("key")

	// burst checks, alternating replicas, must all be allowed with
	// ratelimit-limit burst; the next two (one per replica) refused with it.
	spend := func(phase string, burst int) {
		t.Helper()
		limit := strconv.Itoa(burst)
		for i := range burst {
			resp := replicas[i%2](key)
			h := authztest.HeaderMap(resp.GetOkResponse().GetResponseHeadersToAdd())
			if got := authztest.HTTPStatus(resp); got != 200 || h["ratelimit-limit"] != limit || h["ratelimit-remaining"] == "" {
				t.Fatalf("%s: check %d on replica %d: %d, headers %v; want 200 with ratelimit-limit %s", phase, i+1, i%2, got, h, limit)
			}
		}
		for i, check := range replicas {
			resp := check(key)
			h := authztest.HeaderMap(resp.GetDeniedResponse().GetHeaders())
			if got := authztest.HTTPStatus(resp); got != 429 || h["ratelimit-limit"] != limit || h["ratelimit-remaining"] != "0" || h["retry-after"] == "" {
				t.Fatalf("%s: replica %d after %d checks: %d, headers %v; want 429 with ratelimit-limit %s", phase, i, burst, got, h, limit)
			}
			if b := authztest.DeniedBody(t, resp); b.Error.Code != "RATE_LIMITED" {
				t.Fatalf("%s: 429 body %+v", phase, b)
			}
		}
	}
	spend("own limit of 4", 4)
	for i, check := range replicas {
		resp := check(tierKey)
		if h := authztest.HeaderMap(resp.GetOkResponse().GetResponseHeadersToAdd()); authztest.HTTPStatus(resp) != 200 || h["ratelimit-limit"] != "2000" {
			t.Errorf("replica %d: a key on the enterprise tier: %d, %v", i, authztest.HTTPStatus(resp), h)
		}
	}

	e.MustStatus(e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"rate_limit": map[string]any{"rate": 0.001, "burst": 6}}), 200)
	spend("after the PATCH to 6", 6)

	e.MustStatus(e.Do("PATCH", "/v1/keys/"+id, admintest.OperatorToken, map[string]any{"rate_limit": nil}), 200)
	for i, check := range replicas {
		resp := check(key)
		if h := authztest.HeaderMap(resp.GetOkResponse().GetResponseHeadersToAdd()); authztest.HTTPStatus(resp) != 200 || h["ratelimit-limit"] != "2000" {
			t.Errorf("replica %d after the PATCH to null: %d, %v; want 200 with the enterprise tier's ratelimit-limit 2000", i, authztest.HTTPStatus(resp), h)
		}
	}
}
