package extauthz_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// cidrs parses an allowlist as the admin API would.
func cidrs(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	ps, err := keystore.ParseCIDRs(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// socketAddress is Envoy's source.address of a client at addr.
func socketAddress(addr string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}}
}

// checkFrom sends r a GET /v1/scans with headers, as Envoy would for a
// client at source (nil: no source.address).
func checkFrom(t *testing.T, r *authztest.Replica, method string, source *corev3.Address, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	req := authztest.EnvoyRequest(method, "/v1/scans", headers)
	req.Attributes.Source = &authv3.AttributeContext_Peer{Address: source}
	if source == nil {
		req.Attributes.Source = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.Client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check RPC failed: %v", err)
	}
	return resp
}

// A key restricted to certain networks is allowed from them and refused
// with 403 from anywhere else, or when Envoy reports no client address,
// over gRPC; keys without an allowlist and session tokens are not
// affected. A refused network spends no rate-limit budget, and its
// denial names the reason, never the networks.
func TestAllowlistGRPC(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	is := authztest.NewIssuer(t)
	r := authztest.StartReplica(t, authztest.JWTConfig(f, is))
	restricted, k := f.CreateKey(t, keystore.NewKey{UserID: "user_net", Scopes: []string{"scans:read"},
		AllowedCIDRs: cidrs(t, "203.0.113.0/24", "2001:db8::/32", "192.0.2.9")})
	open, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_open"})
	session := is.Token(t, devissuer.Claims{Subject: "user_carol", SessionID: "sess_net", AuthorizedParty: "https://app.odin.test"})

	const (
		allowed = ""
		outside = denial.MessageNetworkNotAllowed
		unknown = denial.MessageClientAddressUnknown
	)
	tests := []struct {
		name   string
		key    string
		method string
		source *corev3.Address
		want   string // allowed, or the denial's message
	}{
		{"IPv4 inside", restricted, "GET", socketAddress("203.0.113.77"), allowed},
		{"IPv4 single address", restricted, "GET", socketAddress("192.0.2.9"), allowed},
		{"IPv4 outside", restricted, "GET", socketAddress("198.51.100.77"), outside},
		{"IPv4 next to the address", restricted, "GET", socketAddress("192.0.2.10"), outside},
		{"IPv6 inside", restricted, "GET", socketAddress("2001:db8:42::1"), allowed},
		{"IPv6 outside", restricted, "GET", socketAddress("2001:db9::1"), outside},
		{"IPv4-mapped inside", restricted, "GET", socketAddress("::ffff:203.0.113.77"), allowed},
		{"IPv4-mapped outside", restricted, "GET", socketAddress("::ffff:198.51.100.77"), outside},
		{"no source.address", restricted, "GET", nil, unknown},
		{"a pipe", restricted, "GET", &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}}, unknown},
		{"unparsable", restricted, "GET", socketAddress("envoy.internal"), unknown},
		// The network is refused before the scopes are read: the caller
		// learns nothing of the route.
		{"outside, scope missing too", restricted, "POST", socketAddress("198.51.100.77"), outside},
		{"inside, scope missing", restricted, "POST", socketAddress("203.0.113.77"), "Insufficient permissions"},
		{"key without allowlist, no source.address", open, "GET", nil, allowed},
		{"key without allowlist, anywhere", open, "GET", socketAddress("198.51.100.77"), allowed},
		{"session token, no source.address", session, "GET", nil, allowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := checkFrom(t, r, tt.method, tt.source, map[string]string{"authorization": "Bearer " + tt.key, "origin": "https://app.odin.test", "x-request-id": "req-net-1"})
			if tt.want == allowed {
				if got := authztest.HTTPStatus(resp); got != 200 {
					t.Fatalf("status %d, want 200: %s", got, resp.GetDeniedResponse().GetBody())
				}
				return
			}
			b := authztest.DeniedBody(t, resp)
			if got := authztest.HTTPStatus(resp); got != 403 || b.Error.Code != "FORBIDDEN" || !strings.HasPrefix(b.Error.Message, tt.want) || b.RequestID != "req-net-1" {
				t.Errorf("status %d, body %+v; want 403 FORBIDDEN %q", got, b, tt.want)
			}
			if strings.Contains(resp.GetDeniedResponse().GetBody(), "203.0.113") || strings.Contains(resp.GetDeniedResponse().GetBody(), "2001:db8") {
				t.Errorf("the denial names the allowlist: %s", resp.GetDeniedResponse().GetBody())
			}
		})
	}

	// The log names the reason, the key and the client's address; never
	// the allowlist.
	logs := r.Logs.String()
	for _, want := range []string{`"reason":"network_not_allowed"`, `"reason":"client_address_unknown"`, `"client_address":"198.51.100.77"`, `"key_id":"` + k.ID + `"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	if strings.Contains(logs, "203.0.113.0/24") || strings.Contains(logs, "2001:db8::/32") {
		t.Error("the logs name the allowlist")
	}
}

// Behind a load balancer in the trusted proxies, a gRPC check's client is
// what it reports in x-forwarded-for (Envoy's source.address being the
// load balancer); from any other source.address that header is not read.
func TestAllowlistGRPCBehindLoadBalancer(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	svc, err := authzsvc.New(t.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{TrustedProxies: cidrs(t, "10.0.0.0/8"), Logger: authztest.DiscardLogger()})
	key, _ := f.CreateKey(t, keystore.NewKey{AllowedCIDRs: cidrs(t, "203.0.113.0/24")})
	for _, tt := range []struct {
		name, source, xff string
		want              int
	}{
		{"load balancer, client inside", "10.0.0.2", "203.0.113.9, 10.0.0.2", 200},
		{"load balancer, client outside", "10.0.0.2", "203.0.113.9, 198.51.100.1, 10.0.0.2", 403},
		{"load balancer without x-forwarded-for", "10.0.0.2", "", 403},
		{"direct client outside, spoofed x-forwarded-for", "198.51.100.1", "203.0.113.9", 403},
		{"direct client inside", "203.0.113.9", "", 200},
	} {
		h := map[string]string{"api-key": key}
		if tt.xff != "" {
			h["x-forwarded-for"] = tt.xff
		}
		req := authztest.EnvoyRequest("GET", "/v1/scans", h)
		req.Attributes.Source.Address = socketAddress(tt.source)
		resp, _ := srv.Check(t.Context(), req)
		if got := authztest.HTTPStatus(resp); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

// A check from a refused network spends nothing of the key's rate limit.
func TestAllowlistSpendsNoBudget(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	r := authztest.StartReplica(t, limitedConfig(f))
	key, _ := f.CreateKey(t, keystore.NewKey{Tier: "free", RateLimit: &keystore.RateLimit{Rate: 0.001, Burst: 2},
		AllowedCIDRs: cidrs(t, "203.0.113.0/24")})
	for range 5 {
		resp := checkFrom(t, r, "GET", socketAddress("198.51.100.1"), map[string]string{"api-key": key})
		if got := authztest.HTTPStatus(resp); got != 403 {
			t.Fatalf("from outside: %d, want 403", got)
		}
		if h := authztest.HeaderMap(resp.GetDeniedResponse().GetHeaders()); h["ratelimit-remaining"] != "" {
			t.Errorf("a refused network was rate limited: %v", h)
		}
	}
	for i, want := range []int{200, 200, 429} {
		if got := authztest.HTTPStatus(checkFrom(t, r, "GET", socketAddress("203.0.113.1"), map[string]string{"api-key": key})); got != want {
			t.Errorf("check %d from inside: %d, want %d", i+1, got, want)
		}
	}
}

// Over forward-auth the client is the TCP peer, or what the trusted
// proxies report in X-Forwarded-For; a client's own X-Forwarded-For is
// never believed.
func TestAllowlistForwardAuth(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	cfg.TrustedProxies = cidrs(t, "10.0.0.0/8", "fd00::/8")
	svc, err := authzsvc.New(t.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	h := svc.ForwardAuth()
	restricted, _ := f.CreateKey(t, keystore.NewKey{AllowedCIDRs: cidrs(t, "203.0.113.0/24", "2001:db8::/32")})
	open, _ := f.CreateKey(t, keystore.NewKey{})

	const (
		allowed = ""
		outside = denial.MessageNetworkNotAllowed
		unknown = denial.MessageClientAddressUnknown
	)
	tests := []struct {
		name string
		key  string
		peer string
		xff  []string
		want string
	}{
		{"direct client inside", restricted, "203.0.113.5:40000", nil, allowed},
		{"direct client outside", restricted, "198.51.100.5:40000", nil, outside},
		{"direct IPv6 client inside", restricted, "[2001:db8::5]:40000", nil, allowed},
		{"direct IPv4-mapped client inside", restricted, "[::ffff:203.0.113.5]:40000", nil, allowed},
		{"spoofed XFF from an untrusted client", restricted, "198.51.100.5:40000", []string{"203.0.113.5"}, outside},
		{"trusted proxy, client inside", restricted, "10.0.0.2:40000", []string{"203.0.113.5"}, allowed},
		{"trusted proxies, client inside", restricted, "10.0.0.2:40000", []string{"203.0.113.5, 10.1.1.1", "fd00::7"}, allowed},
		{"trusted proxy, client outside", restricted, "10.0.0.2:40000", []string{"203.0.113.5, 198.51.100.5"}, outside},
		{"trusted proxy, client's spoof left of it", restricted, "10.0.0.2:40000", []string{"198.51.100.5, 203.0.113.5"}, allowed},
		{"trusted proxy without XFF", restricted, "10.0.0.2:40000", nil, unknown},
		{"trusted proxy, garbage XFF", restricted, "10.0.0.2:40000", []string{"203.0.113.5, unknown"}, unknown},
		{"IPv6 trusted proxy, IPv6 client", restricted, "[fd00::2]:40000", []string{"2001:db8::5"}, allowed},
		{"key without allowlist, trusted proxy without XFF", open, "10.0.0.2:40000", nil, allowed},
		{"key without allowlist, garbage XFF", open, "10.0.0.2:40000", []string{"garbage"}, allowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/scans", nil)
			req.RemoteAddr = tt.peer
			req.Header.Set("api-key", tt.key)
			for _, v := range tt.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if tt.want == allowed {
				if w.Code != 200 {
					t.Fatalf("status %d, want 200: %s", w.Code, w.Body)
				}
				return
			}
			var b authztest.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || w.Code != 403 || b.Error.Code != "FORBIDDEN" || b.Error.Message != tt.want {
				t.Errorf("status %d, body %s; want 403 FORBIDDEN %q", w.Code, w.Body, tt.want)
			}
		})
	}
}

// A replica serving forward-auth without trusted proxies says once, at
// start, what allowlisted keys are checked against; with them it does not.
func TestTrustedProxiesWarning(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	const warning = "forward-auth serves with no trusted proxies"
	r := authztest.StartReplica(t, f.Config())
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(r.Logs.String(), warning) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(r.Logs.String(), warning); n != 1 {
		t.Errorf("without trusted proxies the warning is logged %d times, want once:\n%s", n, r.Logs)
	}
	cfg := f.Config()
	cfg.TrustedProxies = cidrs(t, "10.0.0.0/8")
	r = authztest.StartReplica(t, cfg)
	resp, err := http.Get(r.OpsURL + "/healthz") // Serve has begun
	if err == nil {
		resp.Body.Close()
	}
	if strings.Contains(r.Logs.String(), warning) {
		t.Errorf("with trusted proxies the warning is logged:\n%s", r.Logs)
	}
}

// A key's allowlist changed by Update (which waits, as a revoke does, for
// every replica to apply it) is enforced by every replica as soon as Update
// returns: narrowed, widened, removed.
func TestAllowlistUpdateAcrossReplicas(t *testing.T) {
	f := authztest.NewFixture(t, authztest.WithRedis)
	replicas := []*authztest.Replica{authztest.StartReplica(t, f.Config()), authztest.StartReplica(t, f.Config())}
	key, k := f.CreateKey(t, keystore.NewKey{})
	status := func(r *authztest.Replica, from string) int {
		return authztest.HTTPStatus(checkFrom(t, r, "GET", socketAddress(from), map[string]string{"api-key": key}))
	}
	// Every replica has the key cached, hot, with no allowlist.
	for i, r := range replicas {
		for range 3 {
			if got := status(r, "198.51.100.1"); got != 200 {
				t.Fatalf("replica %d before any allowlist: %d", i, got)
			}
		}
	}
	update := func(list []netip.Prefix) {
		t.Helper()
		if _, err := f.Manager.Update(t.Context(), authztest.TestActor, k.ID, keystore.KeyUpdate{AllowedCIDRs: &list}); err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	for _, step := range []struct {
		name  string
		list  []netip.Prefix
		wants map[string]int // by client address
	}{
		{"narrowed to 203.0.113.0/24", cidrs(t, "203.0.113.0/24"), map[string]int{"198.51.100.1": 403, "203.0.113.1": 200, "2001:db8::1": 403}},
		{"widened to IPv6 too", cidrs(t, "203.0.113.0/24", "2001:db8::/32"), map[string]int{"198.51.100.1": 403, "203.0.113.1": 200, "2001:db8::1": 200}},
		{"narrowed to IPv6 only", cidrs(t, "2001:db8::/32"), map[string]int{"198.51.100.1": 403, "203.0.113.1": 403, "2001:db8::1": 200}},
		{"removed", nil, map[string]int{"198.51.100.1": 200, "203.0.113.1": 200, "2001:db8::1": 200}},
	} {
		update(step.list)
		for i, r := range replicas {
			for from, want := range step.wants {
				if got := status(r, from); got != want {
					t.Errorf("%s: replica %d, client %s: %d, want %d", step.name, i, from, got, want)
				}
			}
		}
	}
}

// A cached key with an allowlist checks with the allocations of a key
// without one: the client address is read and matched in place.
// Without Redis: a replica fenced off the bus (a slow machine) would look
// its keys up again, and count those allocations.
func TestAllowlistCheckAllocations(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	svc, err := authzsvc.New(t.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
	allocs := func(n keystore.NewKey, source string) float64 {
		key, _ := f.CreateKey(t, n)
		req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-allocs"})
		req.Attributes.Source.Address = socketAddress(source)
		ctx := context.Background()
		if resp, _ := srv.Check(ctx, req); resp.GetOkResponse() == nil {
			t.Fatalf("not allowed: %v", resp.GetDeniedResponse().GetBody())
		}
		return testing.AllocsPerRun(200, func() { srv.Check(ctx, req) })
	}
	base := allocs(keystore.NewKey{UserID: "user_allocs"}, "203.0.113.7")
	t.Logf("%v allocations per check of a cached key without an allowlist", base)
	for _, source := range []string{"203.0.113.7", "::ffff:203.0.113.7", "2001:db8::7"} {
		got := allocs(keystore.NewKey{UserID: "user_allocs", AllowedCIDRs: cidrs(t, "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")}, source)
		if got != base {
			t.Errorf("a cached key with an allowlist, client %s: %v allocations per check, without one %v", source, got, base)
		}
	}
}

// A key's principal carries its allowlist, parsed; a key without one has
// none, and is never asked for a client address.
func TestPrincipalForKeyAllowlist(t *testing.T) {
	k := &keystore.Key{ID: "key_1", UserID: "user_1", AllowedCIDRs: cidrs(t, "203.0.113.0/24", "2001:db8::/32")}
	nets := extauthz.PrincipalForKey(k).AllowedNetworks()
	if nets.Len() != 2 || !nets.Contains(netip.MustParseAddr("203.0.113.1")) || !nets.Contains(netip.MustParseAddr("2001:db8::1")) || nets.Contains(netip.MustParseAddr("198.51.100.1")) {
		t.Errorf("principal of a key with an allowlist: networks %+v", nets)
	}
	k.AllowedCIDRs = nil
	if nets := extauthz.PrincipalForKey(k).AllowedNetworks(); nets != nil {
		t.Errorf("principal of a key without an allowlist: networks %+v", nets)
	}
}

// A key whose principal has left the hot tier is rendered again from its
// compact record on its next check, allowlist included: two keys take turns
// in a hot tier of one.
func TestAllowlistRenderedFromCompactRecord(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	cfg.Cache.HotSize = 1
	svc, err := authzsvc.New(t.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{Logger: authztest.DiscardLogger()})
	restricted, _ := f.CreateKey(t, keystore.NewKey{AllowedCIDRs: cidrs(t, "203.0.113.0/24", "2001:db8::/32")})
	other, _ := f.CreateKey(t, keystore.NewKey{})
	check := func(key, from string) int {
		req := authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{"api-key": key})
		req.Attributes.Source.Address = socketAddress(from)
		resp, _ := srv.Check(t.Context(), req)
		return authztest.HTTPStatus(resp)
	}
	for i := range 3 {
		for _, tt := range []struct {
			key, from string
			want      int
		}{
			{restricted, "203.0.113.1", 200}, {other, "198.51.100.1", 200},
			{restricted, "198.51.100.1", 403}, {other, "198.51.100.1", 200},
			{restricted, "2001:db8::1", 200}, {other, "198.51.100.1", 200},
		} {
			if got := check(tt.key, tt.from); got != tt.want {
				t.Errorf("round %d, from %s: %d, want %d", i, tt.from, got, tt.want)
			}
		}
	}
	if n, _ := authztest.Gathered(t, svc.Registry(), "odin_keystore_key_renders_total", nil); n < 6 {
		t.Errorf("%v checks rendered from a compact record, want most of the 18", n)
	}
}
