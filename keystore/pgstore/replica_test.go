package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
)

// cluster is a private primary with the schema and a streaming replica of
// it, shared by the subtests of one test (each uses keys of its own).
type cluster struct {
	primary, replica *testenv.PGCluster
	writer           *pgstore.Store // the primary only, as odin admin opens it
}

func startCluster(t testing.TB) *cluster {
	t.Helper()
	p := testenv.StartPostgresCluster(t)
	w := testenv.OpenStore(t, p.URL(), pgstore.Options{MaxConns: 4})
	if err := w.Migrate(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return &cluster{primary: p, replica: p.StartReplica(t), writer: w}
}

// reader is what an authz replica opens: the primary plus the read replica
// at readURL, with a watermark fed by a manager writing through c.writer
// (its Notify stands in for the bus).
type reader struct {
	store   *pgstore.Store
	wm      *keystore.Watermark
	reg     *prometheus.Registry
	logs    *testenv.LogBuffer
	manager *keystore.Manager
	fenced  atomic.Bool
}

func (c *cluster) reader(t testing.TB, readURL string) *reader {
	t.Helper()
	r := &reader{reg: prometheus.NewRegistry(), logs: &testenv.LogBuffer{}}
	r.wm = keystore.NewWatermark(keystore.WatermarkOptions{
		Fenced: func(time.Time) bool { return r.fenced.Load() }, Registerer: r.reg,
		Logger: slog.New(slog.NewTextHandler(r.logs, nil)),
	})
	r.store = testenv.OpenStore(t, c.primary.URL(), pgstore.Options{MaxConns: 4, ReadURL: readURL, Watermark: r.wm})
	r.manager = keystore.NewManager(c.writer, nil, keystore.ManagerOptions{Notify: r.wm.Apply, SingleProcess: true})
	return r
}

// lookup is the cache's store query: with its 500ms budget.
func (r *reader) lookup(t *testing.T, h keystore.Hash) (*keystore.Key, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return r.store.KeyByHash(ctx, h)
}

// counts are the reads by where they went: "replica" or a fallback reason.
func (r *reader) counts(t testing.TB) map[string]float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "odin_keystore_replica_reads_total":
				out["replica"] += m.GetCounter().GetValue()
			case "odin_keystore_primary_fallbacks_total":
				out[m.GetLabel()[0].GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// expectRead looks h up and checks where the answer came from.
func (r *reader) expectRead(t *testing.T, h keystore.Hash, from string) (*keystore.Key, error) {
	t.Helper()
	before := r.counts(t)
	k, err := r.lookup(t, h)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("lookup: %v (a replica problem must never fail a lookup the primary can answer)", err)
	}
	after := r.counts(t)
	for what, n := range after {
		if want := map[bool]float64{true: 1}[what == from]; n-before[what] != want {
			t.Fatalf("lookup: %s went from %v to %v, want the answer from %q", what, before[what], n, from)
		}
	}
	return k, err
}

func (r *reader) create(t *testing.T) (string, *keystore.Key) {
	t.Helper()
	p, k, err := r.manager.Create(context.Background(), keystore.Actor{ID: "test"}, keystore.NewKey{UserID: "user_1", Name: "k", Scopes: []string{"scans:read"}})
	if err != nil {
		t.Fatal(err)
	}
	return p, k
}

func TestReadReplica(t *testing.T) {
	c := startCluster(t)

	t.Run("a current replica answers, after the floor is learned", func(t *testing.T) {
		r := c.reader(t, c.replica.URL())
		p, _ := r.create(t)
		h := keystore.HashKey(p)
		r.expectRead(t, h, keystore.FallbackResync) // nothing known yet: the primary, and its position
		c.replica.WaitCaughtUp(10 * time.Second)
		k, err := r.expectRead(t, h, "replica")
		if err != nil || k.Hash != h {
			t.Fatalf("replica read: %+v, %v", k, err)
		}
		if err := r.store.PingReplica(context.Background()); err != nil {
			t.Errorf("PingReplica: %v", err)
		}
	})

	t.Run("a revoke the paused replica has not replayed is read from the primary", func(t *testing.T) {
		r := c.reader(t, c.replica.URL())
		p, k := r.create(t)
		h := keystore.HashKey(p)
		unchanged, _ := r.create(t)
		r.expectRead(t, h, keystore.FallbackResync)
		c.replica.WaitCaughtUp(10 * time.Second)
		r.expectRead(t, h, "replica")

		c.replica.PauseReplay()
		resumed := false
		defer func() {
			if !resumed {
				c.replica.ResumeReplay()
			}
		}()
		if _, err := r.manager.Revoke(context.Background(), keystore.Actor{ID: "test"}, k.ID); err != nil {
			t.Fatal(err)
		}
		for range 3 { // and again: a primary answer is never undone by the replica
			got, err := r.expectRead(t, h, keystore.FallbackLag)
			if err != nil || got.Usable(time.Now()) != keystore.ErrRevoked {
				t.Fatalf("revoked key with replay paused: %+v, %v; want it revoked", got, err)
			}
		}
		// Other keys still come from the replica: the bar is per key.
		p2, _ := r.create(t) // announced with its position: not on the replica yet
		if got, err := r.expectRead(t, keystore.HashKey(p2), keystore.FallbackLag); err != nil || got == nil {
			t.Fatalf("a key created while replay is paused: %v", err)
		}
		if _, err := r.expectRead(t, keystore.HashKey(unchanged), "replica"); err != nil {
			t.Fatalf("an unchanged key: %v", err)
		}

		c.replica.ResumeReplay()
		resumed = true
		c.primary.Exec("SELECT pg_switch_wal()") // WAL past any position a page header rounded up
		c.replica.WaitCaughtUp(10 * time.Second)
		got, err := r.expectRead(t, h, "replica")
		if err != nil || got.Usable(time.Now()) != keystore.ErrRevoked {
			t.Fatalf("after the replica caught up: %+v, %v", got, err)
		}
	})

	t.Run("a key not on the replica yet and not announced is not found", func(t *testing.T) {
		// The documented limit: with no bus message a replica's "not found"
		// is trusted (and cached for the negative TTL only).
		r := c.reader(t, c.replica.URL())
		p0, _ := r.create(t)
		r.expectRead(t, keystore.HashKey(p0), keystore.FallbackResync)
		c.replica.WaitCaughtUp(10 * time.Second)
		c.replica.PauseReplay()
		defer c.replica.ResumeReplay()
		plaintext, _ := keystore.GenerateKey()
		h := keystore.HashKey(plaintext)
		if _, err := c.writer.CreateKey(context.Background(), keystore.NewKey{UserID: "user_1", Name: "quiet"}, h, keystore.KeyHint(plaintext), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.expectRead(t, h, "replica"); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("got %v, want not found from the paused replica", err)
		}
	})

	t.Run("fenced: every lookup reads the primary", func(t *testing.T) {
		r := c.reader(t, c.replica.URL())
		p, _ := r.create(t)
		h := keystore.HashKey(p)
		r.expectRead(t, h, keystore.FallbackResync)
		c.replica.WaitCaughtUp(10 * time.Second)
		r.fenced.Store(true)
		r.expectRead(t, h, keystore.FallbackFenced)
		r.fenced.Store(false)
		r.wm.Apply(keystore.Invalidation{Kind: keystore.InvalidateAll}) // the bus reconnected
		r.expectRead(t, h, keystore.FallbackResync)
		c.primary.Exec("SELECT pg_switch_wal()")
		c.replica.WaitCaughtUp(10 * time.Second)
		r.expectRead(t, h, "replica")
	})

	t.Run("a replica that refuses connections: the primary answers, one warning", func(t *testing.T) {
		proxy := testenv.NewProxy(t, "127.0.0.1:"+strconv.Itoa(c.replica.Port()))
		r := c.reader(t, replicaURLVia(c, proxy.Addr()))
		p, _ := r.create(t)
		h := keystore.HashKey(p)
		r.expectRead(t, h, keystore.FallbackResync)
		c.replica.WaitCaughtUp(10 * time.Second)
		r.expectRead(t, h, "replica")
		proxy.SetDown(true)
		for range 5 {
			if k, err := r.expectRead(t, h, keystore.FallbackReplicaError); err != nil || k.Hash != h {
				t.Fatalf("replica down: %+v, %v", k, err)
			}
		}
		if n := strings.Count(r.logs.String(), "read replica unavailable"); n != 1 {
			t.Errorf("%d warnings for 5 failed lookups, want 1 (log-limited)\n%s", n, r.logs.String())
		}
		proxy.SetDown(false)
		time.Sleep(1100 * time.Millisecond) // the replica's backoff
		r.expectRead(t, h, "replica")
	})

	t.Run("a hung replica costs half the lookup's budget, not a 503", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
			}
		}()
		r := c.reader(t, replicaURLVia(c, l.Addr().String()))
		p, _ := r.create(t)
		h := keystore.HashKey(p)
		r.expectRead(t, h, keystore.FallbackResync)
		start := time.Now()
		if _, err := r.expectRead(t, h, keystore.FallbackReplicaError); err != nil {
			t.Fatal(err)
		}
		t.Logf("lookup with a hung replica: %v", time.Since(start))
	})

	t.Run("a read URL that is not a standby is not trusted", func(t *testing.T) {
		r := c.reader(t, c.primary.URL())
		p, _ := r.create(t)
		h := keystore.HashKey(p)
		r.expectRead(t, h, keystore.FallbackResync)
		r.expectRead(t, h, keystore.FallbackReplicaError)
		if err := r.store.PingReplica(context.Background()); err == nil {
			t.Error("PingReplica accepted a primary as the replica")
		}
	})
}

func replicaURLVia(c *cluster, hostPort string) string {
	return strings.Replace(c.replica.URL(), "127.0.0.1:"+strconv.Itoa(c.replica.Port()), hostPort, 1)
}

func TestOpenReadReplicaOptions(t *testing.T) {
	if _, err := pgstore.Open(context.Background(), "postgres://u@127.0.0.1:1/db", pgstore.Options{ReadURL: "postgres://u@127.0.0.1:2/db"}); err == nil {
		t.Error("a read URL without a watermark was accepted")
	}
	wm := keystore.NewWatermark(keystore.WatermarkOptions{})
	_, err := pgstore.Open(context.Background(), "postgres://u@127.0.0.1:1/db", pgstore.Options{ReadURL: "postgres://u:s3cret@[bad", Watermark: wm})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open(bad read url) = %v", err)
	}
}

// BenchmarkKeyByHash compares a lookup on the primary alone (one
// statement) with one routed to the read replica (position and row, two
// statements in one round trip) and one sent back to the primary because
// the replica lags (replica round trip, then primary). Run with
// go test -run '^$' -bench KeyByHash ./keystore/pgstore/
func BenchmarkKeyByHash(b *testing.B) {
	c := startCluster(b)
	r := c.reader(b, c.replica.URL())
	p, k, err := r.manager.Create(context.Background(), keystore.Actor{ID: "bench"}, keystore.NewKey{UserID: "user_1", Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	h := keystore.HashKey(p)
	ctx := context.Background()
	if _, err := r.store.KeyByHash(ctx, h); err != nil { // learns the floor
		b.Fatal(err)
	}
	c.replica.WaitCaughtUp(10 * time.Second)
	run := func(b *testing.B, s *pgstore.Store) {
		before := r.counts(b)
		for b.Loop() {
			if _, err := s.KeyByHash(ctx, h); err != nil {
				b.Fatal(err)
			}
		}
		for what, n := range r.counts(b) { // where the lookups went
			if d := n - before[what]; d > 0 {
				b.ReportMetric(d/float64(b.N), what+"/op")
			}
		}
	}
	b.Run("primary only", func(b *testing.B) { run(b, c.writer) })
	b.Run("replica", func(b *testing.B) { run(b, r.store) })
	b.Run("replica lagging, primary answers", func(b *testing.B) {
		c.replica.PauseReplay()
		defer c.replica.ResumeReplay()
		if _, err := r.manager.Revoke(ctx, keystore.Actor{ID: "bench"}, k.ID); err != nil {
			b.Fatal(err)
		}
		run(b, r.store)
	})
}
