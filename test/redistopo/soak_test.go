package redistopo

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// TestSoak fails Redis over again and again under load, with revokes
// running throughout (ODIN_LONG_TESTS=1): cluster masters (the bus's, then
// another) killed and restarted, the Sentinel master killed and restarted
// or failed over gracefully. Every check of a live key must answer 200; no
// key may be allowed after a revoke that answered success, and a key whose
// revoke answered ErrNotPropagated not later than the cache TTL (5s here).
func TestSoak(t *testing.T) {
	if !long() {
		t.Skip("the soak runs with ODIN_LONG_TESTS=1")
	}
	t.Run("cluster", func(t *testing.T) {
		c := testenv.StartRedisCluster(t, testenv.RedisClusterOptions{Replicas: 1})
		e := newEnv(t, c.URL(), 5*time.Second)
		soak(t, e, 6, func(t *testing.T, i int) bool {
			victim := c.SlotOwner(busKey) // even cycles: the bus's master
			if i%2 == 1 {                 // odd cycles: another master
				victim = c.SlotOwner(prefix + "key:x")
				for j := 0; victim == c.SlotOwner(busKey); j++ {
					victim = c.SlotOwner(prefix + "key:" + string(rune('a'+j)))
				}
			}
			c.Kill(victim)
			c.WaitHealthy(30 * time.Second)
			c.Restart(victim)
			return i%2 == 0
		})
	})
	t.Run("sentinel", func(t *testing.T) {
		s := testenv.StartRedisSentinel(t)
		e := newEnv(t, s.URL(), 5*time.Second)
		soak(t, e, 4, func(t *testing.T, i int) bool {
			if i%2 == 1 {
				old, _ := s.MasterAddr()
				s.Failover()
				s.WaitFailover(old, 30*time.Second)
			} else {
				old := s.KillMaster()
				s.WaitFailover(old, 30*time.Second)
				s.Restart(old)
			}
			s.WaitSynced(60 * time.Second)
			return true
		})
	})
}

// soak runs the faults in turn; a fault reports whether it moved the bus
// (then the replicas must resubscribe before the next).
func soak(t *testing.T, e *env, cycles int, fault func(t *testing.T, i int) (busMoved bool)) {
	e.waitBusLive(t, 10*time.Second)
	l := startLoad(t, e)
	time.Sleep(300 * time.Millisecond)
	l.phase.Store(1)
	w := watch(e)
	var (
		stop                 = make(chan struct{})
		wg                   sync.WaitGroup
		revokes, unpublished atomic.Int64
		failure              atomic.Pointer[string]
	)
	fail := func(msg string) { failure.CompareAndSwap(nil, &msg) }
	wg.Add(1)
	go func() { // one revoke after another, watched on both replicas
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			plaintext, k, err := e.manager.Create(t.Context(), keystore.Actor{ID: "test"}, keystore.NewKey{
				Name: "soak", UserID: "user_topo", Scopes: []string{"scans:read"}, Tier: "pro"})
			if k == nil {
				fail("create: " + err.Error())
				return
			}
			for _, r := range e.replicas { // cached in both LRUs and in Redis
				if got, err := r.check(plaintext); err != nil || got != 200 {
					fail("a new key refused: " + r.name)
					return
				}
			}
			_, err = e.manager.Revoke(t.Context(), keystore.Actor{ID: "test"}, k.ID)
			if err != nil {
				if !errors.Is(err, keystore.ErrNotPropagated) {
					fail("revoke: " + err.Error())
					return
				}
				unpublished.Add(1)
			}
			w.add(plaintext, time.Now(), err == nil)
			revokes.Add(1)
		}
	}()
	start := time.Now()
	for i := range cycles {
		before := e.replicas[0].resubscribed(t)
		if fault(t, i) {
			deadline := time.Now().Add(20 * time.Second)
			for e.replicas[0].resubscribed(t) == before {
				if time.Now().After(deadline) {
					t.Fatalf("fault %d: the bus did not come back within 20s; replica a's log:\n%s", i, e.replicas[0].logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(time.Second)
		if failure.Load() != nil {
			break
		}
	}
	close(stop)
	wg.Wait()
	time.Sleep(e.ttl + time.Second) // stale records, if any, resurface and expire
	checks, errs, allows := w.finish()
	l.phase.Store(2)
	time.Sleep(300 * time.Millisecond)
	l.stop()
	l.report(t)
	if f := failure.Load(); f != nil {
		t.Fatal(*f)
	}
	for _, a := range allows {
		if a.acked || a.after > e.ttl+time.Second {
			t.Errorf("revoked key allowed: %v", a)
			break
		}
	}
	if errs > 0 {
		t.Errorf("%d checks of revoked keys failed (RPC error)", errs)
	}
	t.Logf("%d faults in %v: %d revokes (%d answered ErrNotPropagated), checked %d times afterwards: %s",
		cycles, time.Since(start).Round(time.Second), revokes.Load(), unpublished.Load(), checks, summarize(allows))
}
