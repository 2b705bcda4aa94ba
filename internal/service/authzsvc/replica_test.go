package authzsvc_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// replicaFixture is a private primary and streaming replica, Redis, and a
// manager writing to the primary, as odin admin does.
type replicaFixture struct {
	*authztest.Fixture
	primary, replica *testenv.PGCluster
	rdb              *redis.Client
}

func newReplicaFixture(t *testing.T) *replicaFixture {
	t.Helper()
	p := testenv.StartPostgresCluster(t)
	f := &authztest.Fixture{DBURL: p.URL()}
	f.RedisURL, f.Prefix = testenv.Redis(t)
	f.Store = testenv.OpenStore(t, f.DBURL, pgstore.Options{MaxConns: 4})
	ctx := context.Background()
	if err := f.Store.Migrate(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	f.Redis = authztest.OpenRedis(t, f.RedisURL, f.Prefix)
	f.Manager = keystore.NewManager(f.Store, f.Redis, keystore.ManagerOptions{})
	opts, err := redis.ParseURL(f.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rf := &replicaFixture{Fixture: f, primary: p, replica: p.StartReplica(t), rdb: redis.NewClient(opts)}
	t.Cleanup(func() { rf.rdb.Close() })
	return rf
}

func (rf *replicaFixture) config() authzsvc.Config {
	cfg := rf.Fixture.Config()
	cfg.DatabaseReadURL = rf.replica.URL()
	return cfg
}

// evict drops a key from Redis and from the replicas' LRUs, as expiry or
// memory pressure would, without telling the watermark anything: the next
// check reads PostgreSQL.
func (rf *replicaFixture) evict(t *testing.T, h keystore.Hash, rs ...*authztest.Replica) {
	t.Helper()
	keys, err := rf.RedisKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := rf.rdb.Del(context.Background(), keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range rs {
		r.Svc.EvictFromLRU(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: h})
	}
}

// cachedRecords are the key records in Redis, by whether they are revoked.
func (rf *replicaFixture) cachedRecords(t *testing.T) (active, revoked int) {
	t.Helper()
	keys, err := rf.RedisKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range keys {
		raw, err := rf.rdb.Get(context.Background(), name).Bytes()
		if err != nil {
			continue
		}
		var rec struct {
			Key *struct {
				RevokedAt time.Time `json:"revoked_at"`
			} `json:"k"`
		}
		payload, ok := authztest.EntryPayload(raw)
		if !ok {
			t.Fatalf("Redis record %s is not sealed", name)
		}
		if err := json.Unmarshal(payload, &rec); err != nil {
			t.Fatalf("Redis record %s: %v", name, err)
		}
		switch {
		case rec.Key == nil:
		case rec.Key.RevokedAt.IsZero():
			active++
		default:
			revoked++
		}
	}
	return active, revoked
}

func reads(t *testing.T, r *authztest.Replica) (replicaReads, lag float64) {
	t.Helper()
	return r.Counter(t, "odin_keystore_replica_reads_total", nil),
		r.Counter(t, "odin_keystore_primary_fallbacks_total", map[string]string{"reason": keystore.FallbackLag})
}

// Authz replicas reading keys from a streaming replica whose replay is
// paused (one private cluster for both subtests: starting one costs ~3s).
func TestReadReplica(t *testing.T) {
	rf := newReplicaFixture(t)
	t.Run("a revoke is never undone", func(t *testing.T) { testReplicaRevoke(t, rf) })
	t.Run("session revocations", func(t *testing.T) { testReplicaSessionRevocation(t, rf) })
}

// Two authz replicas: a revoke is denied by both at once and stays denied
// after every cache is emptied, Redis is never refilled with the active
// row, and once replay resumes the replica answers again.
func testReplicaRevoke(t *testing.T, rf *replicaFixture) {
	a, b := authztest.StartReplica(t, rf.config()), authztest.StartReplica(t, rf.config())
	waitInContact(t, a, b)
	key, k := rf.CreateKey(t, keystore.NewKey{Name: "revoked soon"})
	unchanged, uk := rf.CreateKey(t, keystore.NewKey{Name: "unchanged"})
	rf.replica.WaitCaughtUp(10 * time.Second)
	for _, r := range []*authztest.Replica{a, b} {
		rf.evict(t, k.Hash, r)
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 200 {
			t.Fatalf("before the revoke: %d", got)
		}
		rf.evict(t, uk.Hash, r)
		before, _ := reads(t, r)
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": unchanged})); got != 200 {
			t.Fatalf("unchanged key: %d", got)
		}
		if after, _ := reads(t, r); after != before+1 {
			t.Fatalf("a caught-up replica did not answer the lookup (replica reads %v → %v; fallbacks %v)", before, after,
				r.Counter(t, "odin_keystore_primary_fallbacks_total", nil))
		}
	}

	rf.replica.PauseReplay()
	resumed := false
	defer func() {
		if !resumed {
			rf.replica.ResumeReplay()
		}
	}()
	if _, err := rf.Manager.Revoke(context.Background(), authztest.TestActor, k.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	for _, r := range []*authztest.Replica{a, b} {
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 401 {
			t.Fatalf("right after the revoke: %d, want 401", got)
		}
	}
	for round := range 3 {
		for _, r := range []*authztest.Replica{a, b} {
			rf.evict(t, k.Hash, a, b)
			_, lagBefore := reads(t, r)
			if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 401 {
				t.Fatalf("round %d: revoked key allowed after the caches were emptied (the paused replica still has it active): %d", round, got)
			}
			if _, lag := reads(t, r); lag != lagBefore+1 {
				t.Errorf("round %d: lag fallbacks %v → %v, want one", round, lagBefore, lag)
			}
			if active, revoked := rf.cachedRecords(t); active != 0 || revoked != 1 {
				t.Fatalf("round %d: Redis holds %d active and %d revoked records, want only the revoked one", round, active, revoked)
			}
		}
	}
	// A key created while replay is paused works on both, even uncached.
	fresh, fk := rf.CreateKey(t, keystore.NewKey{Name: "new while paused"})
	for _, r := range []*authztest.Replica{a, b} {
		rf.evict(t, fk.Hash, r)
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": fresh})); got != 200 {
			t.Fatalf("key created while replay is paused: %d", got)
		}
	}

	rf.replica.ResumeReplay()
	resumed = true
	rf.primary.Exec("SELECT pg_switch_wal()") // WAL past any position a page header rounded up
	rf.replica.WaitCaughtUp(10 * time.Second)
	for _, r := range []*authztest.Replica{a, b} {
		rf.evict(t, k.Hash, r)
		before, _ := reads(t, r)
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})); got != 401 {
			t.Fatalf("after replay resumed: %d", got)
		}
		if after, _ := reads(t, r); after != before+1 {
			t.Errorf("after replay resumed the replica did not answer (replica reads %v → %v)", before, after)
		}
	}
	if active, _ := rf.cachedRecords(t); active != 0 {
		t.Errorf("Redis holds %d active records for a revoked key", active)
	}
}

// Session revocations are read from the primary: a replica whose replay is
// paused cannot hide one, from a running replica's periodic sync or from a
// replica that starts afterwards.
func testReplicaSessionRevocation(t *testing.T, rf *replicaFixture) {
	is := authztest.NewIssuer(t)
	cfg := authztest.JWTConfig(rf.Fixture, is)
	cfg.DatabaseReadURL = rf.replica.URL()
	a, b := authztest.StartReplica(t, cfg), authztest.StartReplica(t, cfg)
	claims := devissuer.Claims{Subject: "user_fay", SessionID: "sess_fay", AuthorizedParty: "https://app.odin.test"}
	tok := is.Token(t, claims)
	for _, r := range []*authztest.Replica{a, b} {
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tok})); got != 200 {
			t.Fatalf("before logout: %d", got)
		}
	}
	rf.replica.PauseReplay()
	defer rf.replica.ResumeReplay()
	if _, err := rf.Manager.RevokeSession(context.Background(), authztest.TestActor, "sess_fay", "logout"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*authztest.Replica{a, b} {
		waitJWT(t, r, tok, 401)
		if err := r.Svc.SyncRevoked(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + is.Token(t, claims)})); got != 401 {
			t.Errorf("after a sync with replay paused, a new token of the revoked session: %d", got)
		}
	}
	c := authztest.StartReplica(t, cfg) // loads the revocations at start
	if n, err := rf.rdb.Del(context.Background(), rf.Prefix+"rsid:sess_fay").Result(); err != nil || n != 1 {
		t.Fatalf("delete the Redis mirror of the revocation: %d deleted, %v", n, err)
	}
	if got := authztest.HTTPStatus(c.Check(t, map[string]string{"authorization": "Bearer " + is.Token(t, claims)})); got != 401 {
		t.Errorf("a replica started while replay is paused allowed a revoked session: %d", got)
	}
}

// waitInContact waits until the replicas' buses are in contact: a fenced
// replica reads every key from the primary.
func waitInContact(t *testing.T, rs ...*authztest.Replica) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, r := range rs {
		for r.Svc.Fenced(time.Now()) {
			if time.Now().After(deadline) {
				t.Fatal("replica still fenced 5s after start")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func waitJWT(t *testing.T, r *authztest.Replica, tok string, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := authztest.HTTPStatus(r.Check(t, map[string]string{"authorization": "Bearer " + tok}))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d after 2s, want %d", got, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
