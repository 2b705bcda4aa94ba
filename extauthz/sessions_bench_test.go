package extauthz_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// sessionsEnv is a session cache as odin authz wires it, on real
// PostgreSQL (the revoked sessions) and Redis (the session cache and the
// revoked-session mirror), with a dev issuer over loopback HTTP.
type sessionsEnv struct {
	idp      *devissuer.Provider
	verifier *jwtauth.Verifier
	store    keystore.Store
	redis    *keystore.Redis
	revoked  *keystore.RevokedSessions
}

func newSessionsEnv(t testing.TB) *sessionsEnv {
	t.Helper()
	idp, err := devissuer.New(devissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idp.Handler())
	t.Cleanup(srv.Close)
	logger := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := jwtauth.New(ctx, jwtauth.Config{JWKSURL: srv.URL + devissuer.JWKSPath, Issuer: idp.Issuer()}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{MaxConns: 4})
	url, prefix := testenv.Redis(t)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret, Timeout: time.Second}, keystore.NewMetrics(nil), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	revoked := keystore.NewRevokedSessions(store, rd, 0, logger)
	if err := revoked.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return &sessionsEnv{idp: idp, verifier: v, store: store, redis: rd, revoked: revoked}
}

// sessions returns a new session cache (an empty LRU: a new replica) on
// the environment's verifier, revoked sessions and Redis.
func (e *sessionsEnv) sessions(t testing.TB) *extauthz.Sessions {
	t.Helper()
	s, err := extauthz.NewSessions(e.verifier, e.revoked, e.redis, extauthz.SessionOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mint returns n tokens of distinct users and sessions, like the load
// harness's first-sight run: a Clerk v2 token with an organisation.
func (e *sessionsEnv) mint(t testing.TB, n int, tag string) []string {
	t.Helper()
	toks := make([]string, n)
	for i := range toks {
		tok, err := e.idp.Mint(devissuer.Claims{
			Subject: fmt.Sprintf("user_%s_%d", tag, i), SessionID: fmt.Sprintf("sess_%s_%d", tag, i),
			AuthorizedParty: "https://app.example", Expiry: time.Now().Add(time.Hour),
			Org: &devissuer.Org{ID: "org_bench", Slug: "acme", Role: "admin", Permissions: []string{"read", "manage"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	return toks
}

// BenchmarkSessionsFirstSight authenticates a token never seen before on
// every iteration, end to end through Sessions.Authenticate with real
// Redis: the session-cache read, the revoked-session mirror, the RS256
// verification, the admission, the principal and the session-cache write.
// Tokens are minted before the timer; run it with -benchtime Nx, N at most
// firstSightTokens, so that each iteration has a new one (beyond that the
// tokens are reused on a new replica, whose Redis reads then hit).
func BenchmarkSessionsFirstSight(b *testing.B) {
	const firstSightTokens = 3000
	e := newSessionsEnv(b)
	toks := e.mint(b, firstSightTokens, "bench")
	s := e.sessions(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := processCPU(b)
	for i := range b.N {
		if i > 0 && i%len(toks) == 0 {
			b.StopTimer()
			s = e.sessions(b)
			b.StartTimer()
		}
		if a := s.Authenticate(ctx, toks[i%len(toks)], time.Now()); a.Principal == nil {
			b.Fatalf("first sight refused: %+v", a)
		}
	}
	// The wall time per op is mostly waiting for Redis; what a check costs
	// the server is the CPU, background writes included.
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
