package extauthz_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// histogram is the sample count and sum of a histogram family.
func histogram(t *testing.T, g prometheus.Gatherer, name string) (count uint64, sum float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				count += m.GetHistogram().GetSampleCount()
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return count, sum
}

// A check that reads PostgreSQL counts its wait in
// odin_authz_check_store_wait_seconds and the rest in
// odin_authz_check_own_seconds; a check the LRU answers counts only its
// own time.
func TestCheckTimeSplitsStoreWaitFromOwn(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	r := authztest.StartReplica(t, f.Config())
	key, _ := f.CreateKey(t, keystore.NewKey{Tier: "pro"})
	reg := r.Svc.Registry()
	const own, wait, total = "odin_authz_check_own_seconds", "odin_authz_check_store_wait_seconds", "odin_authz_check_duration_seconds"

	if authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})) != 200 { // cold: PostgreSQL
		t.Fatal("cold check not allowed")
	}
	ownN, ownSum := histogram(t, reg, own)
	waitN, waitSum := histogram(t, reg, wait)
	totalN, totalSum := histogram(t, reg, total)
	if ownN != 1 || waitN != 1 || totalN != 1 {
		t.Fatalf("after a cold check: own %d, store wait %d, duration %d observations; want 1 each", ownN, waitN, totalN)
	}
	if waitSum <= 0 || ownSum <= 0 {
		t.Errorf("cold check: store wait %gs, own %gs: want both above zero", waitSum, ownSum)
	}
	if d := ownSum + waitSum - totalSum; d > 1e-9 || d < -1e-9 {
		t.Errorf("own %g + store wait %g != duration %g", ownSum, waitSum, totalSum)
	}

	if authztest.HTTPStatus(r.Check(t, map[string]string{"api-key": key})) != 200 { // cached
		t.Fatal("cached check not allowed")
	}
	if n, _ := histogram(t, reg, own); n != 2 {
		t.Errorf("own observations %d after a cached check, want 2", n)
	}
	if n, _ := histogram(t, reg, wait); n != 1 {
		t.Errorf("store wait observations %d after a cached check, want still 1", n)
	}
}
