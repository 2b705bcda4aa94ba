package drills

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.uber.org/goleak"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// The JWKS endpoint's behaviours.
const (
	jwksUp     int32 = iota
	jwksErrors       // 500 Internal Server Error
	jwksHangs        // accepts the request and never answers
)

// faultyJWKS serves a dev issuer's key set, or fails as told, and counts the
// fetches it receives.
type faultyJWKS struct {
	next http.Handler
	mode atomic.Int32
	// serving is held (read) while a key set is being served, so that
	// setMode returns only once no answer of the previous mode is in flight.
	serving sync.RWMutex
	fetches atomic.Int64
	release chan struct{} // closed at the end: hung requests return
}

func (j *faultyJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	j.fetches.Add(1)
	switch j.mode.Load() {
	case jwksErrors:
		http.Error(w, "internal error", http.StatusInternalServerError)
	case jwksHangs:
		select {
		case <-r.Context().Done(): // the fetcher gave up
		case <-j.release:
		}
	default:
		j.serving.RLock()
		defer j.serving.RUnlock()
		j.next.ServeHTTP(w, r)
	}
}

// setMode switches the endpoint's behaviour and waits for key sets being
// served to be sent, so that a rotation after it cannot leak out through a
// fetch that began before.
func (j *faultyJWKS) setMode(m int32) {
	j.mode.Store(m)
	j.serving.Lock()
	//lint:ignore SA2001 the empty critical section waits out the readers: that is the point
	j.serving.Unlock()
}

// newKIDWhileDown is what a token signed by a key the replica has never seen
// gets while the JWKS cannot be fetched: 503 UNAVAILABLE (docs/CONTRACT.md: the
// answer depends on a store that cannot be reached), not 401. The kid may be
// the provider's rotated key; refusing it as invalid would sign its users
// out of a dashboard that reads 401 as "session over".
const newKIDWhileDown = "503"

// TestDrillJWKSOutage makes the JWKS endpoint answer 500, then hang, under
// load of session tokens, then brings it back:
//   - tokens already verified (cached) keep answering 200;
//   - tokens never seen before but signed by a key of the last good set keep
//     verifying (200): the set is kept while the endpoint fails;
//   - tokens signed by a key published after the outage began (a rotation
//     the replica could not fetch) are refused (newKIDWhileDown), never
//     allowed, and answered within the fetch timeout even while the endpoint
//     hangs; once it is back they verify (200);
//   - the failing endpoint is not flooded: fetches are rate-limited;
//   - no RPC fails, and no goroutine outlives the replica (goleak).
func TestDrillJWKSOutage(t *testing.T) {
	// Registered first, so it runs last: after the replica, the JWKS server
	// and every client have been closed by the cleanups below.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines left after the drill: %v", err)
		}
	})
	var (
		workers      = 12
		before       = pick(time.Second, 5*time.Second)
		down500      = pick(1500*time.Millisecond, 20*time.Second)
		hang         = pick(1500*time.Millisecond, 20*time.Second)
		after        = pick(time.Second, 5*time.Second)
		fetchTimeout = 400 * time.Millisecond
		minRefresh   = 200 * time.Millisecond
		refresh      = 500 * time.Millisecond
		slack        = 1500 * time.Millisecond // a loaded 2-core machine under -race
	)
	db := testenv.Postgres(t)
	redisURL, prefix := testenv.Redis(t)
	is, err := devissuer.New(devissuer.Options{Issuer: "https://clerk.odin.test"})
	if err != nil {
		t.Fatal(err)
	}
	jwks := &faultyJWKS{next: is.Handler(), release: make(chan struct{})}
	srv := httptest.NewServer(jwks)
	t.Cleanup(func() { close(jwks.release); srv.Close() })

	cfg := authzsvc.Config{DatabaseURL: db, RedisURL: redisURL, RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true, RateLimit: generousTiers(),
		JWT: jwtauth.Config{
			JWKSURL: srv.URL + devissuer.JWKSPath, Issuer: is.Issuer(),
			FetchTimeout: fetchTimeout, MinRefreshInterval: minRefresh, RefreshInterval: refresh,
		},
		JWTDefaultScopes: []string{"read", "write"},
	}
	r := startReplica(t, "a", cfg)

	mint := func(n int, what string) []string { return mintSessions(t, is, n, what) }
	cached := mint(32, "cached")
	for _, tok := range cached {
		if got := checkToken(t, r, tok); got != "200" {
			t.Fatalf("warming the session cache: %s", got)
		}
	}
	// Tokens of the current key never sent before their phase: each phase
	// begins with tokens that must be verified, not read from a cache.
	unseen := map[string][]string{}
	for _, p := range []string{"before", "jwks_500", "jwks_hang", "recovering", "after"} {
		unseen[p] = mint(48, "unseen_"+p)
	}
	var newKID atomic.Pointer[[]string] // tokens of the rotated-in key, once it exists

	// Of every 8 requests: 4 cached tokens, 2 unseen tokens of a known key,
	// 2 tokens of the new key (cached tokens until it exists).
	ph := newPhases("before")
	run := load{
		targets: []authv3.AuthorizationClient{r.client}, workers: workers,
		maxDuration: 2 * time.Minute, maxRequests: 3_000_000, timeout: 5 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "authorization", class: "cached"}
			tok := cached[int(i/8)%len(cached)]
			switch i % 8 {
			case 4, 5:
				pool := unseen[ph.current()]
				req.class, tok = "known_kid", pool[int(i/8)%len(pool)]
			case 6, 7:
				if p := newKID.Load(); p != nil {
					req.class, tok = "new_kid", (*p)[int(i/8)%len(*p)]
				}
			}
			req.value = "Bearer " + tok
			return req
		},
	}.start()
	defer run.stop()
	gor := sampleGoroutines(ph)

	type fetchMark struct {
		phase string
		at    int64
	}
	marks := []fetchMark{{"before", jwks.fetches.Load()}}
	time.Sleep(before)
	mark := func(phase string) {
		ph.set(phase)
		marks = append(marks, fetchMark{phase, jwks.fetches.Load()})
	}
	mark("jwks_500")
	jwks.setMode(jwksErrors)
	if _, err := is.Rotate(); err != nil { // the IdP rotates while we cannot see it
		t.Fatal(err)
	}
	newTokens := mint(32, "new_kid")
	// A key set fetched less than MinRefreshInterval ago is trusted: an
	// unknown kid is refused (401) without asking again. Tokens of the new
	// key go out once the last good fetch (or one in flight when the JWKS
	// broke) is older than that, so each of them asks, and the JWKS being
	// down is what answers.
	settle := minRefresh + fetchTimeout
	time.Sleep(settle)
	newKID.Store(&newTokens)
	time.Sleep(down500 - settle)
	mark("jwks_hang")
	jwks.setMode(jwksHangs)
	time.Sleep(hang)
	mark("recovering")
	jwks.setMode(jwksUp)
	recovery, ok := waitFor(10*time.Second, func() bool { return checkToken(t, r, newTokens[0]) == "200" })
	if !ok {
		t.Fatalf("a token of the new key is still refused %v after the JWKS came back", recovery)
	}
	mark("after")
	time.Sleep(after)
	samples := run.finish()
	elapsed := run.elapsed
	marks = append(marks, fetchMark{"end", jwks.fetches.Load()})
	fetches := map[string]int64{} // JWKS requests received in each phase
	for i := range len(marks) - 1 {
		fetches[marks[i].phase] = marks[i+1].at - marks[i].at
	}
	goroutines := gor.stop()

	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	for _, class := range []string{"cached", "known_kid"} {
		if other := only(counts(samples, ofClass(class)), "200"); len(other) > 0 {
			t.Errorf("%s tokens: want every answer 200, got also %v", class, other)
		}
	}
	for _, p := range []string{"jwks_500", "jwks_hang"} {
		// Sent and answered while the endpoint failed: a check sent just
		// before it came back may fetch the new set and be allowed.
		c := counts(samples, both(ofClass("new_kid"), within(p)))
		if c[newKIDWhileDown] == 0 || len(only(c, newKIDWhileDown)) > 0 {
			t.Errorf("tokens of the new key while the JWKS is down (%s): %v, want only %s", p, c, newKIDWhileDown)
		}
	}
	if c := counts(samples, both(ofClass("new_kid"), inPhase("after"))); c["200"] == 0 || len(only(c, "200")) > 0 {
		t.Errorf("tokens of the new key once the JWKS is back: %v, want only 200", c)
	}
	_, _, maxLat := quantiles(samples, nil)
	if maxLat > fetchTimeout+slack {
		t.Errorf("slowest check took %v: more than the JWKS fetch timeout %v (+%v slack)", maxLat, fetchTimeout, slack)
	}
	durations := ph.durations(time.Now())
	for _, p := range []string{"jwks_500", "jwks_hang"} {
		// Checks ask for at most one fetch per MinRefreshInterval (counted
		// from the end of the previous fetch, whoever made it); the
		// background refresh retries a failure after at most
		// RefreshInterval. Neither grows with the number of checks.
		limit := int64(durations[p]/minRefresh) + int64(durations[p]/refresh) + 2
		if fetches[p] > limit {
			t.Errorf("%d JWKS fetches while it was failing (%s, %v): the refresh is not rate-limited (limit %d)", fetches[p], p, durations[p].Round(time.Millisecond), limit)
		}
	}
	hangRequests := sum(counts(samples, both(ofClass("new_kid"), inPhase("jwks_hang"))))
	if growth := goroutines["jwks_hang"] - goroutines["before"]; growth > 4*workers+50 {
		t.Errorf("goroutines grew by %d while the JWKS hung (%d new-key checks): waiting checks are not bounded", growth, hangRequests)
	}

	f := loadFigures("jwks_outage", samples, elapsed, workers)
	f.add("elapsed", elapsed)
	f.add("down_500", durations["jwks_500"])
	f.add("down_hang", durations["jwks_hang"])
	f.add("outcomes", counts(samples, nil))
	for _, p := range []string{"jwks_500", "jwks_hang", "after"} {
		for _, class := range []string{"cached", "known_kid", "new_kid"} {
			f.add(p+"_"+class, counts(samples, both(ofClass(class), inPhase(p))))
		}
	}
	for _, class := range []string{"cached", "new_kid"} {
		p50, p99, maxL := quantiles(samples, both(ofClass(class), inPhase("jwks_hang")))
		f.add("hang_"+class+"_p50", p50)
		f.add("hang_"+class+"_p99", p99)
		f.add("hang_"+class+"_max", maxL)
	}
	f.add("jwks_fetches_500", fetches["jwks_500"])
	f.add("jwks_fetches_hang", fetches["jwks_hang"])
	f.add("recovery", recovery)
	f.add("goroutines_before", goroutines["before"])
	f.add("goroutines_peak_hang", goroutines["jwks_hang"])
	f.add("goroutines_after", goroutines["after"])
	f.add("transport_errors", len(transportErrors(samples)))
	f.report(t)
}

// mintSessions mints n session tokens of the issuer's current key, each of
// its own user and session, named after what.
func mintSessions(t *testing.T, is *devissuer.Provider, n int, what string) []string {
	t.Helper()
	toks := make([]string, n)
	for i := range toks {
		tok, err := is.Mint(devissuer.Claims{
			Subject: fmt.Sprintf("user_%s_%d", what, i), SessionID: fmt.Sprintf("sess_%s_%d", what, i),
			Expiry: time.Now().Add(30 * time.Minute),
		})
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok
	}
	return toks
}

// checkToken sends one Check with a bearer token and returns its outcome.
func checkToken(t *testing.T, r *replica, tok string) string {
	t.Helper()
	return checkCredential(t, r, "authorization", "Bearer "+tok)
}

// goroutineSampler records the most goroutines seen in each phase.
type goroutineSampler struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	peak  map[string]int
}

func sampleGoroutines(ph *phases) *goroutineSampler {
	g := &goroutineSampler{stopc: make(chan struct{}), done: make(chan struct{}), peak: map[string]int{}}
	go func() {
		defer close(g.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-g.stopc:
				return
			case <-tick.C:
			}
			n, p := runtime.NumGoroutine(), ph.current()
			g.mu.Lock()
			g.peak[p] = max(g.peak[p], n)
			g.mu.Unlock()
		}
	}()
	return g
}

func (g *goroutineSampler) stop() map[string]int {
	close(g.stopc)
	<-g.done
	return g.peak
}
