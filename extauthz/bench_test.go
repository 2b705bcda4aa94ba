package extauthz_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// benchService builds a replica (no listeners) and a handler to call
// directly: the figures are the decision and response building, without
// gRPC transport.
func benchService(b *testing.B, tiers authztest.CacheTiers) (*authztest.Fixture, *extauthz.CheckServer) {
	b.Helper()
	f := authztest.NewFixture(b, tiers)
	cfg := f.Config()
	cfg.DisableRateLimit = true // BenchmarkCheckCachedKeyRateLimited measures the limiter
	svc, err := authzsvc.New(b.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	return f, extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
}

// cachedKeyCheck returns a Check server and a request whose key is already
// cached, and hot.
func cachedKeyCheck(b *testing.B) (*extauthz.CheckServer, *authv3.CheckRequest) {
	f, srv := benchService(b, authztest.WithRedis)
	key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"})
	req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
	mustAllow(b, srv, req)
	return srv, req
}

// mustAllow fails the benchmark unless srv allows req.
func mustAllow(b *testing.B, srv *extauthz.CheckServer, req *authv3.CheckRequest) {
	b.Helper()
	if resp, _ := srv.Check(context.Background(), req); resp.GetOkResponse() == nil {
		b.Fatalf("not allowed: %v", resp)
	}
}

// loopFirstSight times srv.Check of each of reqs in turn; when they run
// out, renew (off the timer) gives a fresh server that has seen none of
// them.
func loopFirstSight(b *testing.B, srv *extauthz.CheckServer, reqs []*authv3.CheckRequest, renew func() *extauthz.CheckServer) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if i == len(reqs) {
			b.StopTimer()
			srv = renew()
			i = 0
			b.StartTimer()
		}
		srv.Check(ctx, reqs[i])
		i++
	}
}

// loopCheck times srv.Check of req, the same request on every iteration.
func loopCheck(b *testing.B, srv *extauthz.CheckServer, req *authv3.CheckRequest) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		srv.Check(ctx, req)
	}
}

// BenchmarkCheckCachedKey is the hot path: a key already cached, and hot.
func BenchmarkCheckCachedKey(b *testing.B) {
	srv, req := cachedKeyCheck(b)
	loopCheck(b, srv, req)
}

// BenchmarkCheckCachedKeyAllowlist is BenchmarkCheckCachedKey for a key
// restricted to certain networks (four, of both families), checked from
// an IPv4 client Envoy reports as IPv4-mapped (a dual-stack listener) in
// the last of them: the cost of reading and matching the client address.
func BenchmarkCheckCachedKeyAllowlist(b *testing.B) {
	f, srv := benchService(b, authztest.WithRedis)
	nets, err := keystore.ParseCIDRs([]string{"198.51.100.0/24", "192.0.2.0/24", "2001:db8::/32", "203.0.113.0/24"})
	if err != nil {
		b.Fatal(err)
	}
	key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro", AllowedCIDRs: nets})
	req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
	req.Attributes.Source.Address.GetSocketAddress().Address = "::ffff:203.0.113.7"
	mustAllow(b, srv, req)
	loopCheck(b, srv, req)
}

// BenchmarkCheckCachedKeyWire is BenchmarkCheckCachedKey plus the
// encoding of the answer, as the gRPC server does before sending it: the
// part of a check's cost that the answer's shape decides.
func BenchmarkCheckCachedKeyWire(b *testing.B) {
	srv, req := cachedKeyCheck(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, _ := srv.Check(ctx, req)
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckCachedKeyRendered is a check of a cached key outside the
// hot tier: its principal is rendered from its compact record (two keys
// take turns in a hot tier of one).
func BenchmarkCheckCachedKeyRendered(b *testing.B) {
	f := authztest.NewFixture(b, authztest.WithRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	cfg.Cache.HotSize = 1
	svc, err := authzsvc.New(b.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
	var reqs [2]*authv3.CheckRequest
	for i := range reqs {
		key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read", "scans:write"}, Tier: "pro"})
		reqs[i] = authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
		mustAllow(b, srv, reqs[i])
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if resp, _ := srv.Check(ctx, reqs[i&1]); resp.GetOkResponse() == nil {
			b.Fatal("not allowed")
		}
		i++
	}
}

// BenchmarkCheckCachedKeyRateLimited is the hot path with the tier rate
// limit (leases from Redis, spent in-process). It rotates over 16 keys of
// 100k/s each so that no key's limit is reached: the figure is the cost of
// the limiter on an allowed request.
func BenchmarkCheckCachedKeyRateLimited(b *testing.B) {
	benchCheckRateLimited(b, keystore.NewKey{UserID: "user_bench", Tier: "pro"})
}

// BenchmarkCheckCachedKeyOwnRateLimit is BenchmarkCheckCachedKeyRateLimited
// for keys an operator gave their own rate limit (the fixture's tiers' values).
func BenchmarkCheckCachedKeyOwnRateLimit(b *testing.B) {
	benchCheckRateLimited(b, keystore.NewKey{UserID: "user_bench", Tier: "free", RateLimit: &keystore.RateLimit{Rate: 1e5, Burst: 1e5}})
}

func benchCheckRateLimited(b *testing.B, n keystore.NewKey) {
	f := authztest.NewFixture(b, authztest.WithRedis)
	svc, err := authzsvc.New(b.Context(), f.Config(), authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
	ctx := context.Background()
	var reqs []*authv3.CheckRequest
	for range 16 {
		key, _ := f.CreateKey(b, n)
		req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
		if resp, _ := srv.Check(ctx, req); resp.GetOkResponse() == nil {
			b.Fatalf("not allowed: %v", resp)
		}
		reqs = append(reqs, req)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if resp, _ := srv.Check(ctx, reqs[i&15]); resp.GetOkResponse() == nil {
			b.Fatal("rate limited: the benchmark measures allowed requests")
		}
		i++
	}
}

// BenchmarkCheckColdKey misses the LRU and Redis on every check: each
// iteration presents one of many keys that were never looked up, so the
// figure is a PostgreSQL round trip plus the decision.
func BenchmarkCheckColdKey(b *testing.B) {
	f, srv := benchService(b, authztest.NoRedis)
	const n = 2000
	reqs := make([]*authv3.CheckRequest, n)
	for i := range n {
		key, _ := f.CreateKey(b, keystore.NewKey{UserID: fmt.Sprintf("user_%d", i)})
		reqs[i] = authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{"api-key": key})
	}
	loopFirstSight(b, srv, reqs, func() *extauthz.CheckServer {
		_, srv := benchService(b, authztest.NoRedis) // a fresh replica: empty LRU
		return srv
	})
}

// BenchmarkCheckUnknownKeyNegativeCache is a flood of one well-formed
// unknown key: answered from the negative cache.
func BenchmarkCheckUnknownKeyNegativeCache(b *testing.B) {
	_, srv := benchService(b, authztest.NoRedis)
	key, _ := keystore.GenerateKey()
	req := authztest.EnvoyRequest("GET", "/", map[string]string{"api-key": key})
	srv.Check(context.Background(), req)
	loopCheck(b, srv, req)
}

// benchJWTService is benchService with session tokens configured.
func benchJWTService(b *testing.B) (*authztest.Issuer, *extauthz.CheckServer) {
	return benchJWTServiceWith(b, "")
}

// benchJWTServiceWith is benchJWTService with a policy file (none when
// empty).
func benchJWTServiceWith(b *testing.B, policyFile string) (*authztest.Issuer, *extauthz.CheckServer) {
	b.Helper()
	f := authztest.NewFixture(b, authztest.WithRedis)
	is := authztest.NewIssuer(b)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	cfg.PolicyFile = policyFile
	cfg.JWTDefaultScopes = []string{"read", "write"}
	cfg.JWT.JWKSURL, cfg.JWT.Issuer = is.URL, is.Issuer()
	svc, err := authzsvc.New(b.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	return is, extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
}

// BenchmarkCheckCachedSession is a Clerk session token already verified:
// it should cost about what a cached API key costs.
func BenchmarkCheckCachedSession(b *testing.B) {
	is, srv := benchJWTService(b)
	tok := is.Token(b, devissuer.Claims{Subject: "user_bench", SessionID: "sess_bench",
		Org: &devissuer.Org{ID: "org_bench", Role: "admin", Permissions: []string{"scans:read"}}})
	req := authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{"authorization": "Bearer " + tok, "x-request-id": "req-bench"})
	mustAllow(b, srv, req)
	loopCheck(b, srv, req)
}

// BenchmarkCheckCachedSessionReverify is BenchmarkCheckCachedSession on a
// route whose rule asks for step-up verification, which the token passes:
// the cost of the reverify check itself.
func BenchmarkCheckCachedSessionReverify(b *testing.B) {
	file := filepath.Join(b.TempDir(), "policy.yaml")
	pol := "rules:\n  - prefix: /v1/billing\n    scopes: {all_of: [read]}\n    reverify: {level: second_factor, max_age: 10m}\n"
	if err := os.WriteFile(file, []byte(pol), 0o600); err != nil {
		b.Fatal(err)
	}
	is, srv := benchJWTServiceWith(b, file)
	tok := is.Token(b, devissuer.Claims{Subject: "user_bench", SessionID: "sess_bench", Extra: map[string]any{"fva": []int{0, 0}}})
	req := authztest.EnvoyRequest("GET", "/v1/billing", map[string]string{"authorization": "Bearer " + tok, "x-request-id": "req-bench"})
	mustAllow(b, srv, req)
	loopCheck(b, srv, req)
}

// BenchmarkCheckFirstSightSession is a new token on every check: one RS256
// signature verification each (tokens are minted before the timer starts).
func BenchmarkCheckFirstSightSession(b *testing.B) {
	is, srv := benchJWTService(b)
	const n = 5000
	reqs := make([]*authv3.CheckRequest, n)
	for i := range n {
		tok := is.Token(b, devissuer.Claims{Subject: fmt.Sprintf("user_%d", i)})
		reqs[i] = authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{"authorization": "Bearer " + tok})
	}
	loopFirstSight(b, srv, reqs, func() *extauthz.CheckServer {
		_, srv := benchJWTService(b)
		return srv
	})
}
