package redistopo

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

// busKey is a key in the bus's slot on a cluster (the {bus} hash tag).
const busKey = prefix + "{bus}:invalidate"

func TestSingleServer(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedis(t)
	scenario(t, rs.URL(), "kill the server, restart it 2s later", func(t *testing.T) {
		rs.Stop()
		time.Sleep(2 * time.Second) // fenced, Redis refused: PostgreSQL answers
		rs.Start()
	})
}

func TestSentinel(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedisSentinel(t)
	scenario(t, s.URL(), "kill the master, wait for the sentinels' failover", func(t *testing.T) {
		start := time.Now()
		old := s.KillMaster()
		now := s.WaitFailover(old, 30*time.Second)
		t.Logf("sentinel failover %s → %s in %v", old, now, time.Since(start).Round(time.Millisecond))
	})
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t, testenv.RedisClusterOptions{Replicas: 1})
	scenario(t, c.URL(), "kill the master of the bus's slot, wait for its replica to take over", func(t *testing.T) {
		start := time.Now()
		i := c.SlotOwner(busKey)
		c.Kill(i)
		c.WaitHealthy(30 * time.Second)
		t.Logf("cluster failover of node %d in %v", i, time.Since(start).Round(time.Millisecond))
	})
}

// scenario runs the checks of the package doc on one topology; outage kills
// a node and returns once Redis has recovered (or failed over).
func scenario(t *testing.T, redisURL, outageName string, outage func(t *testing.T)) {
	e := newEnv(t, redisURL, 0)
	a, b := e.replicas[0], e.replicas[1]

	// A key is allowed through the real Check, on both replicas.
	key, _ := e.createKey(t, "pro")
	a.mustStatus(t, key, 200, "a new key")
	b.mustStatus(t, key, 200, "a new key")

	// Revokes are final on both replicas when the Manager returns, and
	// every replica acknowledged them.
	e.waitBusLive(t, 10*time.Second)
	var lat []time.Duration
	for i := range 5 {
		key, k := e.createKey(t, "pro")
		a.mustStatus(t, key, 200, fmt.Sprintf("key %d before its revoke", i))
		b.mustStatus(t, key, 200, fmt.Sprintf("key %d before its revoke", i))
		lat = append(lat, e.revokeIsFinal(t, key, k))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("revoke acknowledged by 2 replicas: median %v, max %v", lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))

	// The tier limit is shared: burst 20 + 5/s over both replicas.
	limited, _ := e.createKey(t, "free")
	start := time.Now()
	allowed := 0
	for i := range 60 {
		got, err := e.replicas[i%2].check(limited)
		if err != nil {
			t.Fatal(err)
		}
		switch got {
		case 200:
			allowed++
		case 429:
		default:
			t.Fatalf("rate-limited key: status %d", got)
		}
	}
	elapsed := time.Since(start)
	// Each replica may hold one unspent token of a lease (batch 1 here).
	if most := 20 + int(5*elapsed.Seconds()) + 2; allowed < 18 || allowed > most {
		t.Errorf("rate limit: %d of 60 allowed in %v, want 18..%d (one bucket for both replicas)", allowed, elapsed, most)
	}
	t.Logf("rate limit burst 20 + 5/s across 2 replicas: %d of 60 allowed in %v", allowed, elapsed.Round(time.Millisecond))

	// A node dies under load: every check keeps answering.
	l := startLoad(t, e)
	time.Sleep(300 * time.Millisecond)
	outageStart := time.Now()
	l.phase.Store(1)
	outage(t)
	deadline := time.Now().Add(20 * time.Second)
	for a.resubscribed(t) == 0 || b.resubscribed(t) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the bus did not come back on both replicas 20s after Redis recovered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s: both replicas resubscribed %v after the kill", outageName, time.Since(outageStart).Round(time.Millisecond))
	l.phase.Store(2)
	time.Sleep(500 * time.Millisecond)
	l.stop()
	l.report(t)

	// Revokes after recovery are acknowledged and final again.
	e.waitBusLive(t, 10*time.Second)
	key, k := e.createKey(t, "pro")
	a.mustStatus(t, key, 200, "a key created after recovery")
	b.mustStatus(t, key, 200, "a key created after recovery")
	t.Logf("revoke after recovery acknowledged in %v", e.revokeIsFinal(t, key, k).Round(time.Microsecond))
}

// load checks keys on both replicas until stopped: keys cached in both LRUs,
// keys only in PostgreSQL (and Redis) when the load starts, and a revoked
// key. Every answer is counted by phase (0 before the fault, 1 during, 2
// after recovery), key class and status.
type load struct {
	phase  atomic.Int32
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	counts map[string]int // "phase class status" → n
	errs   []string
	slow   time.Duration
}

var phaseNames = []string{"before", "during", "after"}

func startLoad(t *testing.T, e *env) *load {
	t.Helper()
	type target struct {
		class, key string
		want       int
	}
	var targets []target
	for range 8 {
		key, _ := e.createKey(t, "pro")
		for _, r := range e.replicas {
			r.mustStatus(t, key, 200, "warming a cached key")
		}
		targets = append(targets, target{"cached", key, 200})
		key, _ = e.createKey(t, "pro")
		targets = append(targets, target{"postgres", key, 200})
	}
	key, k := e.createKey(t, "pro")
	e.revokeIsFinal(t, key, k)
	targets = append(targets, target{"revoked", key, 401})

	l := &load{done: make(chan struct{}), counts: map[string]int{}}
	for w := range 4 {
		r := e.replicas[w%2]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ; i++ {
				select {
				case <-l.done:
					return
				case <-time.After(5 * time.Millisecond): // a steady load, not a flood of a loaded 2-core box
				}
				tg := targets[i%len(targets)]
				began := time.Now()
				got, err := r.check(tg.key)
				took := time.Since(began)
				ph := phaseNames[l.phase.Load()]
				l.mu.Lock()
				l.slow = max(l.slow, took)
				if err != nil {
					l.errs = append(l.errs, fmt.Sprintf("%s, replica %s: %v", ph, r.name, err))
				} else {
					l.counts[fmt.Sprintf("%s %s %d", ph, tg.class, got)]++
					if got != tg.want {
						l.errs = append(l.errs, fmt.Sprintf("%s, replica %s, %s key: %d, want %d", ph, r.name, tg.class, got, tg.want))
					}
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) stop() {
	close(l.done)
	l.wg.Wait()
}

func (l *load) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var lines []string
	for k, n := range l.counts {
		lines = append(lines, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(lines)
	t.Logf("checks by phase, key class and status (slowest %v): %v", l.slow.Round(time.Millisecond), lines)
	for _, ph := range phaseNames {
		if l.counts[ph+" postgres 200"]+l.counts[ph+" cached 200"] == 0 {
			t.Errorf("no successful check %s the fault: the load did not run", ph)
		}
	}
	if len(l.errs) > 0 {
		t.Errorf("%d checks did not get the answer they should (first: %s)", len(l.errs), l.errs[0])
	}
}

// A graceful failover leaves the bus subscriptions on a live node that no
// longer gets the revokers' messages: a cluster node that lost the slot
// says so (sunsubscribe) at once, Sentinel reconfigures the old master
// seconds later, and PINGs on the subscription are answered meanwhile;
// only the probes (keystore.Bus) tell. On a cluster, the old master
// redirects every write and publish to the new one from the moment it
// steps down.
func TestClusterGracefulFailover(t *testing.T) {
	t.Parallel()
	c := testenv.StartRedisCluster(t, testenv.RedisClusterOptions{Replicas: 1})
	e := newEnv(t, c.URL(), 5*time.Second)
	gracefulFailover(t, e, true, func(t *testing.T) {
		old := c.SlotOwner(busKey)
		now := c.Failover(old)
		deadline := time.Now().Add(30 * time.Second)
		for c.SlotOwner(busKey) != now {
			if time.Now().After(deadline) {
				t.Fatal("CLUSTER FAILOVER did not happen within 30s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("cluster failover of the bus's slot: node %d → %d", old, now)
	})
}

// With Sentinel, each client also learns of the new master on its own, up
// to the sentinels' failover-timeout after the promotion, and the old
// master takes writes until then: a revoke's overwrite of the key's Redis
// record can be lost, leaving the record that allows the key on the new
// master. Replicas must not trust records written before they switched.
func TestSentinelGracefulFailover(t *testing.T) {
	t.Parallel()
	s := testenv.StartRedisSentinel(t)
	e := newEnv(t, s.URL(), 5*time.Second)
	gracefulFailover(t, e, true, func(t *testing.T) {
		old, err := s.MasterAddr()
		if err != nil {
			t.Fatal(err)
		}
		s.Failover()
		t.Logf("sentinel failover %s → %s", old, s.WaitFailover(old, 30*time.Second))
	})
}

// gracefulFailover revokes a key every 300ms from the failover on, each
// checked on both replicas at once and then, by a watcher, until the bus
// is back and a while longer. strict: no revoked key is ever allowed after
// its revoke returned; otherwise not later than the cache TTL (+1s for a
// loaded machine) after it.
func gracefulFailover(t *testing.T, e *env, strict bool, failover func(t *testing.T)) {
	a, b := e.replicas[0], e.replicas[1]
	e.waitBusLive(t, 10*time.Second)
	const n = 12
	keys := make([]string, n)
	ids := make([]*keystore.Key, n)
	for i := range keys {
		keys[i], ids[i] = e.createKey(t, "pro")
		a.mustStatus(t, keys[i], 200, "before the failover")
		b.mustStatus(t, keys[i], 200, "before the failover")
	}
	w := watch(e)
	start := time.Now()
	failed := make(chan struct{})
	go func() { defer close(failed); failover(t) }()
	notPropagated := 0
	for i := range keys {
		_, err := e.manager.Revoke(t.Context(), keystore.Actor{ID: "test"}, ids[i].ID)
		if err != nil {
			if strict || !errors.Is(err, keystore.ErrNotPropagated) {
				t.Fatalf("revoke %d, %v after the failover began: %v", i, time.Since(start), err)
			}
			notPropagated++
		}
		w.add(keys[i], time.Now(), err == nil)
		if strict {
			what := fmt.Sprintf("revoked key %d, %v after the failover began", i, time.Since(start).Round(time.Millisecond))
			a.mustStatus(t, keys[i], 401, what)
			b.mustStatus(t, keys[i], 401, what)
		}
		time.Sleep(300 * time.Millisecond)
	}
	<-failed
	deadline := time.Now().Add(20 * time.Second)
	for a.resubscribed(t) == 0 || b.resubscribed(t) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the bus did not move to the new master on both replicas within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("both replicas resubscribed %v after the failover began", time.Since(start).Round(time.Millisecond))
	time.Sleep(e.ttl/5 + time.Second) // let stale records resurface, if any
	checks, errs, allows := w.finish()
	t.Logf("%d revokes from the failover on (%d answered ErrNotPropagated); %d checks of them afterwards: %s",
		n, notPropagated, checks, summarize(allows))
	if errs > 0 {
		t.Errorf("%d checks of revoked keys failed (RPC error)", errs)
	}
	for _, al := range allows {
		if strict || al.after > e.ttl+time.Second {
			t.Errorf("revoked key allowed: %v", al)
			break
		}
	}
	e.waitBusLive(t, 10*time.Second)
	for i := range 3 {
		key, k := e.createKey(t, "pro")
		a.mustStatus(t, key, 200, "a key created after the failover")
		b.mustStatus(t, key, 200, "a key created after the failover")
		t.Logf("revoke %d after the failover: final and acknowledged in %v", i, e.revokeIsFinal(t, key, k).Round(time.Microsecond))
	}
}
