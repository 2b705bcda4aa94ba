package keystore

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RawWriter writes values as SetRaw does, sealed, but off the caller's
// path: Set queues the write and returns; a background goroutine sends
// what is queued in pipelined batches, one round trip per batch. It is for
// cache entries a later reader can do without (a verified session: a
// replica that misses it verifies the token again), so it is bounded and
// drops rather than waits: when the queue is full, or Redis is unavailable,
// the write is dropped and counted. The goroutine runs only while there is
// something to write, so a RawWriter needs no closing. It lingers a little
// before each batch (RawWriterOptions.Linger), so that one round trip
// carries the writes of that while, not one each.
type RawWriter struct {
	r       *Redis
	max     int
	linger  time.Duration
	dropped prometheus.Counter

	mu      sync.Mutex
	queue   []pendingRaw
	running bool
	idle    *sync.Cond // broadcast when the goroutine stops; see Flush
	// flush cuts the goroutine's linger short; flushing counts the Flush
	// calls waiting, during which it does not linger.
	flush    chan struct{}
	flushing int
}

// pendingRaw is a queued write. value runs on the writer's goroutine, so
// that encoding the entry is off the caller's path too.
type pendingRaw struct {
	name  string
	ttl   time.Duration
	value func() []byte
}

// RawWriterOptions configure a RawWriter.
type RawWriterOptions struct {
	// Capacity is the most writes queued at once, default 4096; more are
	// dropped.
	Capacity int
	// Linger is how long the goroutine waits before sending a batch,
	// gathering the writes queued meanwhile, default DefaultRawWriterLinger;
	// negative: none. A write becomes visible to other readers that much
	// later: fine for an entry they can do without.
	Linger time.Duration
	// Dropped counts the writes dropped (queue full, Redis unavailable or
	// failing). Nil: not counted.
	Dropped prometheus.Counter
}

// DefaultRawWriterLinger is RawWriterOptions.Linger's default: at 1,000
// writes a second, a round trip carries about five.
const DefaultRawWriterLinger = 5 * time.Millisecond

// maxRawBatch bounds one pipeline, so a backlog goes out in round trips of
// a size Redis answers quickly.
const maxRawBatch = 256

// NewRawWriter returns a writer on r.
func (r *Redis) NewRawWriter(opts RawWriterOptions) *RawWriter {
	if opts.Capacity <= 0 {
		opts.Capacity = 4096
	}
	switch {
	case opts.Linger == 0:
		opts.Linger = DefaultRawWriterLinger
	case opts.Linger < 0:
		opts.Linger = 0
	}
	w := &RawWriter{r: r, max: opts.Capacity, linger: opts.Linger, dropped: opts.Dropped, flush: make(chan struct{}, 1)}
	w.idle = sync.NewCond(&w.mu)
	return w
}

// Set queues a write of value() under name with a TTL and reports whether
// it was queued. value returns nil to skip the write.
func (w *RawWriter) Set(name string, ttl time.Duration, value func() []byte) bool {
	if ttl <= 0 {
		return false
	}
	w.mu.Lock()
	if len(w.queue) >= w.max || !w.r.available() {
		w.mu.Unlock()
		w.drop(1)
		return false
	}
	w.queue = append(w.queue, pendingRaw{name: name, ttl: ttl, value: value})
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go w.run()
	}
	return true
}

// Flush waits until every queued write has been sent (or dropped), without
// lingering.
func (w *RawWriter) Flush() {
	w.mu.Lock()
	w.flushing++
	for w.running {
		select {
		case w.flush <- struct{}{}:
		default:
		}
		w.idle.Wait()
	}
	w.flushing--
	w.mu.Unlock()
}

func (w *RawWriter) drop(n int) {
	if w.dropped != nil {
		w.dropped.Add(float64(n))
	}
}

// run sends batches until the queue is empty. Before each, and while a
// batch is in flight, the next one gathers, so the round trips are few and
// full.
func (w *RawWriter) run() {
	var t *time.Timer
	for {
		w.mu.Lock()
		linger := w.linger > 0 && w.flushing == 0
		w.mu.Unlock()
		if linger {
			if t == nil {
				t = time.NewTimer(w.linger)
			} else {
				t.Reset(w.linger)
			}
			select {
			case <-t.C:
			case <-w.flush:
				t.Stop()
			}
		}
		w.mu.Lock()
		batch := w.queue
		if len(batch) > maxRawBatch {
			batch = batch[:maxRawBatch:maxRawBatch]
			w.queue = w.queue[maxRawBatch:]
		} else {
			w.queue = nil
		}
		if len(batch) == 0 {
			w.running = false
			w.idle.Broadcast()
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		w.write(batch)
	}
}

func (w *RawWriter) write(batch []pendingRaw) {
	r := w.r
	if !r.available() {
		w.drop(len(batch))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opTimeout)
	defer cancel()
	pipe := r.client.Pipeline()
	n := 0
	for _, p := range batch {
		val := p.value()
		if val == nil {
			continue
		}
		full := r.prefix + p.name
		pipe.Set(ctx, full, r.mac.seal(full, val), p.ttl)
		n++
	}
	if n == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.fail("set", err)
		w.drop(n)
		return
	}
	r.ok()
}
