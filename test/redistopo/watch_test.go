package redistopo

import (
	"fmt"
	"sync"
	"time"
)

// watcher checks every key it was given as revoked on both replicas, over
// and over until finished, and records every allow with how long after its
// revoke returned it came: a revoked record lost in a failover can make a
// key allowed again after it was refused, so one refusal proves nothing.
type watcher struct {
	e    *env
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	keys   []watched
	checks int
	allows []allow
	errs   int // failed RPCs
}

type watched struct {
	key       string
	revokedAt time.Time
	acked     bool // the revoke returned no error
}

// allow is a revoked key allowed after its revoke returned.
type allow struct {
	replica string
	after   time.Duration
	acked   bool
}

func (a allow) String() string {
	return fmt.Sprintf("replica %s, %v after a revoke that returned %s", a.replica, a.after.Round(time.Millisecond),
		map[bool]string{true: "success", false: "ErrNotPropagated"}[a.acked])
}

func watch(e *env) *watcher {
	w := &watcher{e: e, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// add watches key from now on, revoked at revokedAt.
func (w *watcher) add(key string, revokedAt time.Time, acked bool) {
	w.mu.Lock()
	w.keys = append(w.keys, watched{key, revokedAt, acked})
	w.mu.Unlock()
}

func (w *watcher) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		w.mu.Lock()
		keys := w.keys[max(0, len(w.keys)-32):] // the latest: older ones have had their chance
		w.mu.Unlock()
		for _, k := range keys {
			for _, r := range w.e.replicas {
				got, err := r.check(k.key)
				at := time.Now()
				w.mu.Lock()
				w.checks++
				switch {
				case err != nil:
					w.errs++
				case got != 401:
					w.allows = append(w.allows, allow{r.name, at.Sub(k.revokedAt), k.acked})
				}
				w.mu.Unlock()
			}
		}
	}
}

// finish stops the watcher and returns what it saw.
func (w *watcher) finish() (checks, errs int, allows []allow) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.checks, w.errs, w.allows
}

// summarize describes allows in a line: how many, after how many revokes
// that answered success, the latest.
func summarize(allows []allow) string {
	if len(allows) == 0 {
		return "no revoked key allowed"
	}
	acked, worst := 0, allows[0]
	for _, a := range allows {
		if a.acked {
			acked++
		}
		if a.after > worst.after {
			worst = a
		}
	}
	return fmt.Sprintf("%d allows of revoked keys (%d after a revoke that answered success), the latest: %v", len(allows), acked, worst)
}
