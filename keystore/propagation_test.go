package keystore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// histogramCount is the sample count of a histogram series with exactly
// the given label values.
func histogramCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (uint64, bool) {
	t.Helper()
next:
	for _, m := range series(t, reg, name) {
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		return m.GetHistogram().GetSampleCount(), true
	}
	return 0, false
}

// Every revoke that waits on the bus is timed, by kind and result: a
// confirmed one, and one whose publish fails because Redis is gone.
func TestRevokePropagationIsTimed(t *testing.T) {
	store := newStore(t)
	rs := testenv.StartRedis(t)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: rs.URL(), MACSecret: testenv.RedisMACSecret}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	reg := prometheus.NewRegistry()
	mgr := keystore.NewManager(store, rd, keystore.ManagerOptions{Registerer: reg})
	const name = "odin_keystore_revoke_propagation_seconds"
	count := func(kind, result string) uint64 {
		t.Helper()
		n, ok := histogramCount(t, reg, name, map[string]string{"kind": kind, "result": result})
		if !ok {
			t.Fatalf("%s{kind=%q,result=%q} is not exported", name, kind, result)
		}
		return n
	}
	for _, kind := range []string{"key", "session"} {
		for _, result := range []string{"confirmed", "fenced", "unconfirmed"} {
			if n := count(kind, result); n != 0 {
				t.Fatalf("%s/%s before any revoke: %d", kind, result, n)
			}
		}
	}
	ctx := context.Background()
	by := keystore.Actor{ID: "test"}
	_, k, err := mgr.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "timed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.Revoke(ctx, by, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := mgr.RevokeSession(ctx, by, "sess_timed", "test"); err != nil {
		t.Fatal(err)
	}
	if count("key", "confirmed") != 1 || count("session", "confirmed") != 1 {
		t.Fatalf("confirmed revokes: key %d, session %d, want 1 each", count("key", "confirmed"), count("session", "confirmed"))
	}
	rs.Stop()
	if _, err := mgr.Revoke(ctx, by, k.ID); !errors.Is(err, keystore.ErrNotPropagated) {
		t.Fatalf("revoke with Redis gone: %v, want ErrNotPropagated", err)
	}
	if n := count("key", "unconfirmed"); n != 1 {
		t.Fatalf("unconfirmed key revokes: %d, want 1", n)
	}
	// A second manager on the same registry shares the histogram.
	keystore.NewManager(store, rd, keystore.ManagerOptions{Registerer: reg})
	if n := count("key", "confirmed"); n != 1 {
		t.Fatalf("a second manager reset the histogram: %d", n)
	}
}
