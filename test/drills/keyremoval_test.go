package drills

import (
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
)

// TestDrillJWKSKeyRemoved is an emergency key rotation under load: the IdP
// publishes a new key and removes the old one from its JWKS while two
// replicas answer checks of sessions verified with the old key, cached in
// their LRUs and in the shared Redis. Once every replica has refreshed its
// key set (--jwks-refresh) no token of the removed key is allowed anywhere,
// cached or not; tokens of the new key are; no RPC fails.
func TestDrillJWKSKeyRemoved(t *testing.T) {
	var (
		workers = 8
		before  = pick(time.Second, 5*time.Second)
		after   = pick(2*time.Second, 10*time.Second)
		refresh = 500 * time.Millisecond
		// The bound: a replica learns of the removal at its next refresh;
		// the fetch itself and a loaded 2-core machine under -race add to it.
		bound = refresh + 1500*time.Millisecond
	)
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is := authztest.NewIssuer(t)
	cfg := authzsvc.Config{DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret,
		StripCredential: true, RateLimit: generousTiers(),
		JWT: jwtauth.Config{
			JWKSURL: is.URL, Issuer: is.Issuer(),
			FetchTimeout: 400 * time.Millisecond, MinRefreshInterval: 200 * time.Millisecond, RefreshInterval: refresh,
		},
		JWTDefaultScopes: []string{"read", "write"},
	}
	a, b := startReplica(t, "a", cfg), startReplica(t, "b", cfg)

	mint := func(n int, what string) []string { return mintSessions(t, is.Provider, n, what) }
	oldKID := is.KeyID("RS256")
	old := mint(32, "old")
	for _, tok := range old { // verified by a: cached in a's LRU and in Redis, which b reads
		if got := checkToken(t, a, tok); got != "200" {
			t.Fatalf("warming the session caches: %s", got)
		}
	}

	ph := newPhases("before")
	var fresh []string // tokens of the new key, set before the "rotated" phase
	run := load{
		targets: []authv3.AuthorizationClient{a.client, b.client}, workers: workers,
		maxDuration: time.Minute, maxRequests: 2_000_000, timeout: 5 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "authorization", class: "old_kid", target: int(i % 2)}
			tok := old[int(i/2)%len(old)]
			if i%4 == 3 && ph.current() != "before" {
				req.class, tok = "new_kid", fresh[int(i/4)%len(fresh)]
			}
			req.value = "Bearer " + tok
			return req
		},
	}.start()
	defer run.stop()
	time.Sleep(before)

	if _, err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	fresh = mint(16, "new")
	ph.set("rotated") // before the removal: no check of phase "before" can see it
	if !is.Retire(oldKID) {
		t.Fatalf("the old key %s was not published", oldKID)
	}
	time.Sleep(bound)
	ph.set("after")
	time.Sleep(after)
	samples := run.finish()

	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	if c := counts(samples, both(ofClass("old_kid"), within("before"))); len(only(c, "200")) > 0 {
		t.Errorf("tokens of the old key before it was removed: %v, want only 200", c)
	}
	for target, name := range []string{"a", "b"} {
		c := counts(samples, func(s sample) bool { return s.class == "old_kid" && s.phase == "after" && s.target == target })
		if c["401"] == 0 || len(only(c, "401")) > 0 {
			t.Errorf("replica %s, tokens of the removed key more than %v after its removal: %v, want only 401", name, bound, c)
		}
	}
	if c := counts(samples, both(ofClass("new_kid"), inPhase("after"))); c["200"] == 0 || len(only(c, "200")) > 0 {
		t.Errorf("tokens of the new key: %v, want only 200", c)
	}

	f := newFigures("jwks_key_removed")
	f.add("requests", len(samples))
	f.add("workers", workers)
	f.add("bound", bound)
	for _, p := range []string{"before", "rotated", "after"} {
		f.add(p+"_old_kid", counts(samples, both(ofClass("old_kid"), inPhase(p))))
		f.add(p+"_new_kid", counts(samples, both(ofClass("new_kid"), inPhase(p))))
	}
	f.report(t)
}
