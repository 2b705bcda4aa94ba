package admin_test

import (
	"sync"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
)

// A key change answered 2xx is in force on every replica at once, as a
// revoke is: two odin authz replicas that cached the key check it
// continuously while the admin API narrows its scopes, widens them back,
// disables and enables it, restricts it to networks the client is
// outside of, then to none, then to the client's, then narrows that to
// exclude the client; no check that began after an answer sees the key
// as it was before.
func TestKeyChangesAreImmediate(t *testing.T) {
	e := newEnv(t)
	replicas := []func(string) int{startAuthz(t, e.authzConfig()), startAuthz(t, e.authzConfig())}
	r := e.Do("POST", "/v1/keys", admintest.OperatorToken, map[string]any{"name": "k", "scopes": []string{"scans:read", "scans:write"}, "user_id": "user_k"})
	e.MustStatus(r, 201)
	key, id := r.Str("key"), r.Str("id")
	for i, check := range replicas {
		if got := check(key); got != 200 {
			t.Fatalf("replica %d before any change: %d", i, got)
		}
	}

	// phase is one change: after its answer every check gets want.
	type phase struct {
		method, path string
		body         any
		want         int
		sent, done   int64 // Unix nanoseconds
	}
	phases := []*phase{
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"scopes": []string{}}, want: 403}, // GET /v1/scans needs scans:read (or :write)
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"scopes": []string{"scans:read"}}, want: 200},
		{method: "POST", path: "/v1/keys/" + id + "/disable", want: 401},
		{method: "POST", path: "/v1/keys/" + id + "/enable", want: 200},
		// The checks come from checkClient, 203.0.113.5.
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"allowed_cidrs": []string{"198.51.100.0/24"}}, want: 403},
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"allowed_cidrs": nil}, want: 200},
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"allowed_cidrs": []string{"203.0.113.0/24", "2001:db8::/32"}}, want: 200},
		{method: "PATCH", path: "/v1/keys/" + id, body: map[string]any{"allowed_cidrs": []string{"203.0.113.128/25"}}, want: 403},
	}
	type sample struct {
		replica, status int
		began, ended    int64
	}
	var (
		mu      sync.Mutex
		samples []sample
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for i, check := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now().UnixNano()
				s := check(key)
				ended := time.Now().UnixNano()
				mu.Lock()
				samples = append(samples, sample{replica: i, status: s, began: began, ended: ended})
				mu.Unlock()
			}
		}()
	}
	for _, p := range phases {
		time.Sleep(20 * time.Millisecond) // let the checkers see this state
		p.sent = time.Now().UnixNano()
		e.MustStatus(e.Do(p.method, p.path, admintest.OperatorToken, p.body), 200)
		p.done = time.Now().UnixNano()
		for i, check := range replicas {
			if got := check(key); got != p.want {
				t.Errorf("%s %s: replica %d answered %d right after, want %d", p.method, p.path, i, got, p.want)
			}
		}
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()

	// A check that began after phase i answered, and ended before phase
	// i+1 was sent, must get phase i's status; one that overlapped a change
	// (the next one included: a slow check may see it) may get either.
	violations, counted := 0, 0
	for _, s := range samples {
		for i, p := range phases {
			end := int64(1<<63 - 1)
			if i+1 < len(phases) {
				end = phases[i+1].sent
			}
			if s.began > p.done && s.ended < end {
				counted++
				if s.status != p.want {
					violations++
					t.Errorf("replica %d: a check %v after %s %s answered got %d, want %d",
						s.replica, time.Duration(s.began-p.done), p.method, p.path, s.status, p.want)
				}
			}
		}
	}
	if counted == 0 {
		t.Fatal("no check ran between the changes")
	}
	t.Logf("%d checks on 2 replicas between the changes, %d against the state of the last answer", counted, violations)
}
