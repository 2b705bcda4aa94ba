package drills

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// TestDrillRedisOutage kills the Redis two replicas share while they are
// under load, then brings it back. Strict fencing says: a replica that loses
// the bus stops trusting its LRU and reads PostgreSQL, so
//   - keys the replicas had cached keep answering 200 throughout,
//   - keys only PostgreSQL has answer 200 (never a 5xx), unknown keys 401,
//   - no RPC fails,
//   - the bus reconnects on both replicas once Redis is back, and
//   - a revoke issued after that is final on both replicas when it returns
//     (no allow of the key sent after the revoke answered);
//   - a revoke issued just after Redis died is committed but unconfirmed
//     (keystore.NotPropagatedError, with the cache-TTL bound), and no
//     replica allows that key once both have fenced themselves.
//
// It counts the PostgreSQL queries the outage cost (every check of a fenced
// replica reads PostgreSQL).
func TestDrillRedisOutage(t *testing.T) {
	var (
		workers  = 12
		before   = pick(time.Second, 5*time.Second)
		outage   = pick(3*time.Second, 30*time.Second)
		after    = pick(1500*time.Millisecond, 10*time.Second)
		maxTotal = pick(40*time.Second, 3*time.Minute)
	)
	db := testenv.Postgres(t)
	rs := testenv.StartRedis(t)
	const prefix = "odin:" // the Redis is private to this test
	store := testenv.OpenStore(t, db, pgstore.Options{MaxConns: 2})
	mgr := keystore.NewManager(store, openRedis(t, rs.URL(), prefix), keystore.ManagerOptions{})

	cfg := authzsvc.Config{DatabaseURL: db, RedisURL: rs.URL(), RedisPrefix: prefix, RedisMACSecret: testenv.RedisMACSecret, StripCredential: true, RateLimit: generousTiers()}
	// The default 500ms store timeout would turn a PostgreSQL read delayed
	// by a starved test machine (load average 10+ under -race) into a 503:
	// the drill asserts where checks are answered from, and reports how many
	// took longer than the default (outage_over_500ms).
	cfg.Cache.StoreTimeout = 2 * time.Second
	reps := []*replica{startReplica(t, "a", cfg), startReplica(t, "b", cfg)}
	cached, _ := createKeys(t, mgr, 32, "cached")
	inPG, _ := createKeys(t, mgr, 32, "in postgres")
	revokee, revokeeIDs := createKeys(t, mgr, 1, "revoked after the outage")
	during, duringIDs := createKeys(t, mgr, 1, "revoked during the outage")
	unknown := unknownKeys(t, 32)
	for _, r := range reps { // warm both LRUs (and Redis) with the cached keys
		for _, k := range append(cached, revokee[0], during[0]) {
			if got := checkOnce(t, r, k); got != "200" {
				t.Fatalf("warming replica %s: %s", r.name, got)
			}
		}
	}

	// Of every 16 requests: 8 cached keys, 4 keys only in PostgreSQL, 3
	// unknown keys, 1 the key revoked after Redis returns; alternating
	// replicas.
	ph := newPhases("before")
	run := load{
		targets: []authv3.AuthorizationClient{reps[0].client, reps[1].client}, workers: workers,
		maxDuration: maxTotal, maxRequests: 5_000_000, timeout: 5 * time.Second, phases: ph,
		next: func(i int64) checkReq {
			req := checkReq{header: "api-key", target: int(i % 2)}
			blk, j := int(i/32), int(i/2)%16
			switch {
			case j < 8:
				req.class, req.value = "cached", cached[(blk*8+j)%len(cached)]
			case j < 12:
				req.class, req.value = "postgres", inPG[(blk*4+j-8)%len(inPG)]
			case j < 15:
				req.class, req.value = "unknown", unknown[(blk*3+j-12)%len(unknown)]
			case blk%2 == 0:
				req.class, req.value = "revokee", revokee[0]
			default:
				req.class, req.value = "during", during[0]
			}
			return req
		},
	}.start()
	defer run.stop()

	time.Sleep(before)
	q0 := storeQueries(t, reps)
	ph.set("outage")
	killed := time.Now()
	rs.Stop()
	_, err := mgr.Revoke(context.Background(), keystore.Actor{ID: "drill"}, duringIDs[0])
	var unconfirmed *keystore.NotPropagatedError
	if !errors.As(err, &unconfirmed) {
		t.Errorf("revoke with Redis dead: %v, want a NotPropagatedError", err)
	}
	duringAnswered := time.Now()
	// FenceAfter (1s) without the bus, plus margin: from here on neither
	// replica may answer from its LRU.
	time.Sleep(keystore.DefaultFenceAfter + 500*time.Millisecond)
	ph.set("fenced")
	lru0, qf := lruHits(t, reps), storeQueries(t, reps)
	time.Sleep(outage - keystore.DefaultFenceAfter - 500*time.Millisecond)
	lru1, q1 := lruHits(t, reps), storeQueries(t, reps)
	ph.set("recovering")
	rs.Start()
	restarted := time.Now()
	var reconnect time.Duration
	for _, r := range reps {
		took, ok := waitFor(15*time.Second, func() bool {
			return r.metric(t, "odin_keystore_bus_messages_total", map[string]string{"kind": "resubscribed"}) >= 1
		})
		if !ok {
			t.Fatalf("replica %s: the bus did not resubscribe within %v of Redis returning", r.name, took)
		}
		reconnect = max(reconnect, time.Since(restarted))
	}
	ph.set("after")
	lru2 := lruHits(t, reps)
	revokeStart := time.Now()
	if _, err := mgr.Revoke(context.Background(), keystore.Actor{ID: "drill"}, revokeeIDs[0]); err != nil {
		t.Fatalf("revoke after Redis returned: %v", err)
	}
	revoked := time.Now()
	time.Sleep(after)
	samples := run.finish()
	elapsed := run.elapsed
	lru3 := lruHits(t, reps)

	for _, r := range reps {
		if got := checkOnce(t, r, revokee[0]); got != "401" {
			t.Errorf("replica %s: revoked key answered %s, want 401", r.name, got)
		}
	}
	if bad := transportErrors(samples); len(bad) > 0 {
		t.Errorf("failed RPCs or denials without the error body: %v", bad)
	}
	for class, want := range map[string]string{"cached": "200", "postgres": "200", "unknown": "401"} {
		if other := only(counts(samples, ofClass(class)), want); len(other) > 0 {
			t.Errorf("%s keys: want every answer %s, got also %v (by phase: %s)", class, want, other, byPhase(samples, class))
		}
	}
	// The revoked key: allowed until its revoke began, refused once it answered.
	early := counts(samples, func(s sample) bool { return s.class == "revokee" && s.sent.Add(s.latency).Before(revokeStart) })
	late := counts(samples, func(s sample) bool { return s.class == "revokee" && s.sent.After(revoked) })
	if other := only(early, "200"); len(other) > 0 {
		t.Errorf("key to be revoked, answered before its revoke: %v, want only 200", other)
	}
	if late["401"] == 0 || len(only(late, "401")) > 0 {
		t.Errorf("revoked key, sent after the revoke answered: %v, want only 401 (no allow)", late)
	}
	for i, r := range reps {
		if n := len(counts(samples, func(s sample) bool { return s.class == "revokee" && s.target == i && s.sent.After(revoked) })); n == 0 {
			t.Errorf("replica %s was not asked about the revoked key after the revoke", r.name)
		}
		// Back in contact with the bus, a replica trusts its LRU again
		// (else PostgreSQL would keep taking every check).
		if lru3[i]-lru2[i] == 0 {
			t.Errorf("replica %s answered nothing from its LRU after Redis returned: still fenced", r.name)
		}
	}

	// The key revoked while Redis was dead: allowed, if at all, until both
	// replicas fenced themselves (1 s after the kill), never after.
	fencedBy := killed.Add(keystore.DefaultFenceAfter + 500*time.Millisecond)
	if late := counts(samples, func(s sample) bool { return s.class == "during" && s.sent.After(fencedBy) }); late["401"] == 0 || len(only(late, "401")) > 0 {
		t.Errorf("key revoked while Redis was dead, sent once both replicas were fenced: %v, want only 401", late)
	}
	var duringAllows int
	var lastDuringAllow time.Duration
	for _, s := range samples {
		if s.class == "during" && s.outcome == "200" && s.sent.After(duringAnswered) {
			duringAllows++
			lastDuringAllow = max(lastDuringAllow, s.sent.Sub(duringAnswered))
		}
	}
	if unconfirmed != nil && unconfirmed.DeniedBy.Before(fencedBy) {
		t.Errorf("the unconfirmed revoke promised denied_by %v, before the replicas could fence", unconfirmed.DeniedBy)
	}

	outageQueries, fencedQueries := q1-q0, q1-qf
	outageChecks := sum(counts(samples, inPhase("outage"))) + sum(counts(samples, inPhase("fenced")))
	fencedChecks := sum(counts(samples, within("fenced")))
	if outageChecks == 0 || fencedChecks == 0 {
		t.Fatalf("checks during the outage: %d, while fenced: %d", outageChecks, fencedChecks)
	}
	for i, r := range reps {
		if n := lru1[i] - lru0[i]; n != 0 {
			t.Errorf("replica %s answered %v checks from its LRU while fenced (Redis down for over %v)", r.name, n, keystore.DefaultFenceAfter)
		}
	}
	if fencedQueries == 0 {
		t.Error("no PostgreSQL query while fenced: checks were not read from PostgreSQL")
	}
	isOutage := func(s sample) bool { return s.phase == "outage" || s.phase == "fenced" }
	p50, p99, maxLat := quantiles(samples, isOutage)
	slow := 0
	for _, s := range samples {
		if isOutage(s) && s.latency > 500*time.Millisecond {
			slow++
		}
	}
	f := loadFigures("redis_outage", samples, elapsed, workers)
	f.add("replicas", len(reps))
	f.add("elapsed", elapsed)
	f.add("outage", restarted.Sub(killed))
	f.add("outcomes", counts(samples, nil))
	f.add("outage_checks", outageChecks)
	f.add("outage_outcomes_cached", counts(samples, both(ofClass("cached"), isOutage)))
	f.add("outage_outcomes_postgres", counts(samples, both(ofClass("postgres"), isOutage)))
	f.add("outage_outcomes_unknown", counts(samples, both(ofClass("unknown"), isOutage)))
	f.add("outage_pg_queries", int(outageQueries))
	f.add("outage_pg_queries_per_s", outageQueries/restarted.Sub(killed).Seconds())
	f.add("unconfirmed_revoke_allows_after_answer", duringAllows)
	f.add("unconfirmed_revoke_last_allow_after_answer", lastDuringAllow)
	f.add("fenced_checks", fencedChecks)
	f.add("fenced_pg_queries", int(fencedQueries))
	f.add("fenced_lru_hits", int(sumf(lru1)-sumf(lru0)))
	f.add("after_lru_hits", int(sumf(lru3)-sumf(lru2)))
	f.add("outage_p50", p50)
	f.add("outage_p99", p99)
	f.add("outage_max", maxLat)
	f.add("outage_over_500ms", slow)
	f.add("bus_reconnect", reconnect)
	f.add("revoke_latency", revoked.Sub(revokeStart))
	f.add("revokee_after_revoke", late)
	f.add("transport_errors", len(transportErrors(samples)))
	f.report(t)
}

// checkOnce sends one Check for an API key and returns its outcome.
func checkOnce(t *testing.T, r *replica, key string) string {
	t.Helper()
	return checkCredential(t, r, "api-key", key)
}

// checkCredential sends one Check with a credential header and returns its
// outcome.
func checkCredential(t *testing.T, r *replica, header, value string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.Check(ctx, envoyRequest(header, value, "req-drill-single"))
	return outcomeOf(resp, err, "req-drill-single")
}

// byPhase renders a class's outcomes per phase, for failure messages.
func byPhase(samples []sample, class string) string {
	out := ""
	for _, p := range []string{"before", "outage", "fenced", "recovering", "after"} {
		out += p + "=" + fmtCounts(counts(samples, both(ofClass(class), inPhase(p)))) + " "
	}
	return out
}

// openRedis is a keystore Redis client (for a Manager) on url.
func openRedis(t *testing.T, url, prefix string) *keystore.Redis {
	t.Helper()
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// storeQueries sums odin_keystore_store_queries_total over the replicas.
func storeQueries(t *testing.T, reps []*replica) float64 {
	var n float64
	for _, r := range reps {
		n += r.storeQueries(t)
	}
	return n
}

// lruHits is each replica's count of checks answered from its LRU.
func lruHits(t *testing.T, reps []*replica) []float64 {
	n := make([]float64, len(reps))
	for i, r := range reps {
		n[i] = r.metric(t, "odin_keystore_lookups_total", map[string]string{"tier": "lru"})
	}
	return n
}

func sumf(v []float64) float64 {
	var n float64
	for _, x := range v {
		n += x
	}
	return n
}
