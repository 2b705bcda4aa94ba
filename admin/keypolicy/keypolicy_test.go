package keypolicy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/admin/keypolicy"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
	"github.com/odin-scan/odin-authz/keystore/pgstore"
	"github.com/odin-scan/odin-authz/keystore/sqlitestore"
)

// TestMain drops the package's template database when the tests end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// store is what both stores are here: keys and their outbox.
type store interface {
	keystore.Store
	keystore.OutboxStore
}

func eachStore(t *testing.T, test func(t *testing.T, s store)) {
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		test(t, testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{}))
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "odin.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		test(t, s)
	})
}

const unusedFor = 90 * 24 * time.Hour

// later is the job's clock: 100 days from now, so that every key created
// by a test has gone unused for 90 days by it, unless the test records a use.
func later() time.Time { return time.Now().Add(100 * 24 * time.Hour) }

type fixture struct {
	s       store
	mgr     *keystore.Manager
	idle    []*keystore.Key // never used: the policy revokes them
	used    *keystore.Key   // used an hour before the job's now
	revoked *keystore.Key   // revoked before, by its user
	jobNow  time.Time
}

func newFixture(t *testing.T, s store, idle int) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{s: s, mgr: keystore.NewManager(s, nil, keystore.ManagerOptions{SingleProcess: true, Notify: func(keystore.Invalidation) {}}), jobNow: later()}
	user := keystore.Actor{ID: "user_1"}
	mk := func(name string) *keystore.Key {
		_, k, err := f.mgr.Create(ctx, user, keystore.NewKey{UserID: "user_1", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for i := range idle {
		f.idle = append(f.idle, mk("idle "+string(rune('a'+i))))
	}
	f.used, f.revoked = mk("used"), mk("revoked")
	if err := s.RecordUsage(ctx, []keystore.Usage{{KeyID: f.used.ID, Hour: time.Now().UTC().Truncate(time.Hour), Count: 1, LastUsed: f.jobNow.Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.revoked, err = f.mgr.Revoke(ctx, user, f.revoked.ID); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) job(t *testing.T, dryRun bool, reg prometheus.Registerer) *keypolicy.Job {
	t.Helper()
	j, err := keypolicy.New(keypolicy.Options{UnusedFor: unusedFor, DryRun: dryRun, Manager: f.mgr, Now: func() time.Time { return f.jobNow }, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func ids(keys []*keystore.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

// policyRevokes are the key.revoked events of the policy's actor, by key.
func policyRevokes(t *testing.T, s store) map[string]keystore.AuditEvent {
	t.Helper()
	events, _, err := s.ListAudit(context.Background(), keystore.AuditFilter{Action: keystore.ActionKeyRevoked, Actor: keypolicy.Actor, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]keystore.AuditEvent{}
	for _, ev := range events {
		if _, dup := out[ev.Target]; dup {
			t.Errorf("two key.revoked events of %s", ev.Target)
		}
		out[ev.Target] = ev
	}
	return out
}

var sorted = cmpopts.SortSlices(func(a, b string) bool { return a < b })

// A dry run reports the unused keys and revokes nothing.
func TestDryRunRevokesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		f := newFixture(t, s, 2)
		reg := prometheus.NewRegistry()
		res, err := f.job(t, true, reg).Sweep(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(f.idle), res.WouldRevoke, sorted); diff != "" || len(res.Revoked) != 0 {
			t.Errorf("dry run would revoke (-want, +got):\n%s; revoked %v", diff, res.Revoked)
		}
		for _, k := range append(f.idle, f.used) {
			if got, _ := s.Key(context.Background(), k.ID); !got.RevokedAt.IsZero() {
				t.Errorf("dry run revoked %s", k.Name)
			}
		}
		if n := len(policyRevokes(t, s)); n != 0 {
			t.Errorf("%d policy revokes in the audit log", n)
		}
		if got := metric(t, reg, "odin_admin_unused_keys_would_revoke"); got != 2 {
			t.Errorf("odin_admin_unused_keys_would_revoke = %v, want 2", got)
		}
	})
}

// A sweep revokes the unused keys with the policy's actor and the reason
// expired-by-policy (in the audit log and the key.revoked webhook event),
// keeps a key used recently, and leaves a revoked key's revocation as it
// was.
func TestSweepRevokesUnusedKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		ctx := context.Background()
		f := newFixture(t, s, 2)
		reg := prometheus.NewRegistry()
		res, err := f.job(t, false, reg).Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(ids(f.idle), res.Revoked, sorted); diff != "" {
			t.Errorf("revoked (-want, +got):\n%s", diff)
		}
		revokes := policyRevokes(t, s)
		for _, k := range f.idle {
			ev, ok := revokes[k.ID]
			if got, _ := s.Key(ctx, k.ID); !ok || got.RevokedAt.IsZero() {
				t.Errorf("%s not revoked by the policy", k.Name)
				continue
			}
			if ev.Details["reason"] != keystore.RevokeReasonExpiredByPolicy || ev.Details["unused_for"] != "90d" {
				t.Errorf("%s: details %v", k.Name, ev.Details)
			}
		}
		if got, _ := s.Key(ctx, f.used.ID); !got.RevokedAt.IsZero() {
			t.Error("the key used an hour ago was revoked")
		}
		if got, _ := s.Key(ctx, f.revoked.ID); !got.RevokedAt.Equal(f.revoked.RevokedAt) {
			t.Error("the revoked key's revocation changed")
		}
		if _, ok := revokes[f.revoked.ID]; ok {
			t.Error("the policy revoked a revoked key again")
		}
		if got := metric(t, reg, "odin_admin_unused_keys_revoked_total"); got != 2 {
			t.Errorf("odin_admin_unused_keys_revoked_total = %v, want 2", got)
		}
		// The key.revoked webhook events of the policy's revokes say why.
		events, _, err := s.ListOutbox(ctx, keystore.OutboxFilter{Type: keystore.ActionKeyRevoked, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		reasons := map[string]string{}
		for _, ev := range events {
			var body struct {
				Data struct {
					Key    struct{ ID string } `json:"key"`
					Reason string              `json:"reason"`
				} `json:"data"`
			}
			if err := json.Unmarshal(ev.Payload, &body); err != nil {
				t.Fatal(err)
			}
			reasons[body.Data.Key.ID] = body.Data.Reason
		}
		for _, k := range f.idle {
			if reasons[k.ID] != keystore.RevokeReasonExpiredByPolicy {
				t.Errorf("%s: key.revoked event reason %q", k.Name, reasons[k.ID])
			}
		}
		// A second sweep finds nothing more to do.
		if res, err := f.job(t, false, prometheus.NewRegistry()).Sweep(ctx); err != nil || len(res.Revoked) != 0 {
			t.Errorf("second sweep: %+v, %v", res, err)
		}
	})
}

// Two jobs sweeping at once (two admin replicas) revoke each unused key
// once between them: one key.revoked event per key.
func TestConcurrentSweepsRevokeOnce(t *testing.T) {
	eachStore(t, func(t *testing.T, s store) {
		f := newFixture(t, s, 12)
		jobs := []*keypolicy.Job{f.job(t, false, nil), f.job(t, false, nil)}
		results := make([]keypolicy.Result, len(jobs))
		var wg sync.WaitGroup
		for i, j := range jobs {
			wg.Go(func() {
				var err error
				if results[i], err = j.Sweep(context.Background()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		all := append(slices.Clone(results[0].Revoked), results[1].Revoked...)
		if diff := cmp.Diff(ids(f.idle), all, sorted); diff != "" {
			t.Errorf("revoked by the two jobs (-want, +got):\n%s (each key exactly once)", diff)
		}
		if n := len(policyRevokes(t, s)); n != len(f.idle) {
			t.Errorf("%d policy revokes in the audit log, want %d", n, len(f.idle))
		}
	})
}

// On PostgreSQL a sweep holds the job's advisory lock: while another holder
// has it, a sweep is skipped and changes nothing; released, the next sweep
// runs. (Two sweeps at once, above, are safe without it too.)
func TestSweepSkippedWhileLocked(t *testing.T) {
	s := testenv.OpenStore(t, testenv.Postgres(t), pgstore.Options{})
	f := newFixture(t, s, 2)
	ctx := context.Background()
	release, ok, err := s.TryJobLock(ctx, keypolicy.Actor)
	if err != nil || !ok {
		t.Fatalf("take the lock: %v %v", ok, err)
	}
	if _, again, err := s.TryJobLock(ctx, keypolicy.Actor); err != nil || again {
		t.Fatalf("the lock was taken twice: %v %v", again, err)
	}
	reg := prometheus.NewRegistry()
	j := f.job(t, false, reg)
	res, err := j.Sweep(ctx)
	if err != nil || !res.Skipped || len(res.Revoked) != 0 {
		t.Fatalf("sweep while locked: %+v, %v; want skipped", res, err)
	}
	if n := len(policyRevokes(t, s)); n != 0 {
		t.Errorf("%d policy revokes while locked", n)
	}
	release()
	if res, err := j.Sweep(ctx); err != nil || res.Skipped || len(res.Revoked) != 2 {
		t.Errorf("sweep after release: %+v, %v; want the 2 idle keys revoked", res, err)
	}
}

// Off (no unused period), a sweep does nothing.
func TestOff(t *testing.T) {
	j, err := keypolicy.New(keypolicy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := j.Sweep(context.Background()); err != nil || j.Enabled() || len(res.Revoked)+len(res.WouldRevoke) != 0 {
		t.Errorf("off: %+v, %v", res, err)
	}
	if _, err := keypolicy.New(keypolicy.Options{UnusedFor: time.Hour}); err == nil {
		t.Error("on without a manager: no error")
	}
}

// metric is the value of the metric name (one series) in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}
