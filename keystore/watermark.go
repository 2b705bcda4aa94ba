package keystore

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/internal/lograte"
)

// LSN is a position in PostgreSQL's write-ahead log (a pg_lsn). Zero means
// none is known.
type LSN uint64

// ParseLSN reads PostgreSQL's text form of a WAL position, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok && hi != "" && lo != "" && len(hi) <= 8 && len(lo) <= 8 {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return LSN(h<<32 | l), nil
		}
	}
	return 0, fmt.Errorf("invalid WAL position %q", s)
}

// String is PostgreSQL's text form of the position.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF) }

// WALPositioner is a store that can say how far its primary's write-ahead
// log has come (pgstore does). The Manager sends that position with every
// change it publishes, so that replicas reading a lagging read replica know
// when it holds the change.
type WALPositioner interface {
	// WALPosition is a position at or past the end of every transaction
	// committed on the primary before the call.
	WALPosition(ctx context.Context) (LSN, error)
}

// Reasons a lookup is read from the primary although a read replica is
// configured. They are the values of the fallback metric's reason label.
const (
	// FallbackLag: the replica has not replayed a change to this key that
	// this process knows of.
	FallbackLag = "lag"
	// FallbackFenced: the invalidation bus may have missed changes
	// (Bus.Fenced), so nothing says how current the replica must be.
	FallbackFenced = "fenced"
	// FallbackResync: after start-up, a bus reconnect or a change published
	// without a position, the position every read must have reached is
	// being learned from the primary.
	FallbackResync = "resync"
	// FallbackReplicaError: the replica failed, timed out, is in its backoff
	// after a failure, or is not a standby.
	FallbackReplicaError = "replica_error"
)

// WatermarkOptions configure a Watermark. Zero values take the defaults.
type WatermarkOptions struct {
	// Fenced reports that this process may have missed bus messages
	// (Bus.Fenced); while it does, every lookup reads the primary. Nil
	// without a bus.
	Fenced func(time.Time) bool
	// Window is how long a key's own position is remembered before it is
	// folded into the position every read must have reached (default 1m):
	// a replica lagging less than Window is only bypassed for the keys
	// that changed.
	Window time.Duration
	// MaxKeys bounds the positions remembered per window (default 50000);
	// more fold early.
	MaxKeys int
	// Registerer takes the metrics (nil: a private registry).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Watermark decides, for each key lookup, whether a read replica is current
// enough to answer it: the rule that keeps replica lag from undoing a
// revoke. It remembers the WAL position of every change it heard of on the
// bus (per key hash), and the position every read must have reached (the
// floor). A replica answer counts only if the replica had replayed the
// key's position when it read the row; otherwise the lookup goes to the
// primary. The floor is learned from the primary after start-up and after
// every bus reconnect, when messages may have been lost; while the bus is
// fenced every lookup goes to the primary. Reads are monotonic per key: a
// primary answer raises the key's position to the primary's, so a key seen
// revoked is never read again from a replica that has not seen it so.
type Watermark struct {
	fenced  func(time.Time) bool
	window  time.Duration
	maxKeys int
	log     *slog.Logger
	errLog  lograte.Limiter

	mu    sync.RWMutex
	floor LSN
	// cur and old are two generations of per-key positions; at the end of a
	// window old is folded into the floor (its highest position, oldMax),
	// so every position is kept between one and two windows.
	cur, old       map[Hash]LSN
	curMax, oldMax LSN
	rotated        time.Time
	// resync is the epoch of a pending resync (0: none): the floor is
	// unknown until a primary read that began after it reports the
	// primary's position.
	resync, epoch uint64

	replicaReads prometheus.Counter
	fallbacks    *prometheus.CounterVec
}

// NewWatermark returns a watermark that knows nothing yet: lookups read the
// primary until one of them has learned the floor.
func NewWatermark(opts WatermarkOptions) *Watermark {
	orDefault(&opts.Window, time.Minute)
	orDefault(&opts.MaxKeys, 50_000)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	w := &Watermark{
		fenced: opts.Fenced, window: opts.Window, maxKeys: opts.MaxKeys, log: opts.Logger,
		errLog: lograte.Limiter{Every: 10 * time.Second},
		cur:    map[Hash]LSN{}, old: map[Hash]LSN{}, rotated: time.Now(), resync: 1, epoch: 1,
		replicaReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "odin_keystore_replica_reads_total",
			Help: "Key lookups answered by the PostgreSQL read replica.",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_keystore_primary_fallbacks_total",
			Help: "Key lookups read from the PostgreSQL primary although a read replica is configured, by reason: lag, fenced, resync, replica_error.",
		}, []string{"reason"}),
	}
	opts.Registerer.MustRegister(w.replicaReads, w.fallbacks)
	for _, r := range []string{FallbackLag, FallbackFenced, FallbackResync, FallbackReplicaError} {
		w.fallbacks.WithLabelValues(r)
	}
	return w
}

// Route is the decision for one lookup, made before it.
type Route struct {
	// Reason is empty when a replica may answer (if it has replayed the
	// key's position, see Accept); else why the primary must.
	Reason string
	epoch  uint64
}

// Route decides where a lookup of h goes.
func (w *Watermark) Route(h Hash, now time.Time) Route {
	w.mu.RLock()
	r := Route{epoch: w.resync}
	w.mu.RUnlock()
	switch {
	case w.fenced != nil && w.fenced(now):
		r.Reason = FallbackFenced
	case r.epoch != 0:
		r.Reason = FallbackResync
	}
	return r
}

// Accept reports whether a replica's answer for h may be used: the replica
// had replayed replayed when it read the row (a position read before the
// row, in the same round trip), and that is at or past h's position as it
// stands now, after the read, so a revoke heard during the read counts.
func (w *Watermark) Accept(h Hash, replayed LSN) bool {
	w.mu.RLock()
	ok := w.resync == 0 && replayed >= w.required(h)
	w.mu.RUnlock()
	if ok {
		w.replicaReads.Inc()
	}
	return ok
}

// required is the position a replica answer for h must have reached.
func (w *Watermark) required(h Hash) LSN {
	return max(w.floor, w.cur[h], w.old[h])
}

// Required is the position a replica answer for h must have reached now,
// and false while the floor is unknown (every lookup reads the primary).
func (w *Watermark) Required(h Hash) (LSN, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.required(h), w.resync == 0
}

// Fallback counts a lookup read from the primary, for reason.
func (w *Watermark) Fallback(reason string) { w.fallbacks.WithLabelValues(reason).Inc() }

// ReplicaFailed logs a replica failure, at most once per 10s.
func (w *Watermark) ReplicaFailed(err error) {
	if w.errLog.Allow() {
		w.log.Warn("read replica unavailable: reading keys from the primary", "error", err.Error())
	}
}

// Primary records a primary read of h that began after r was decided and
// saw the primary at position at (zero: unknown): h's position rises to it,
// and a pending resync that began before r completes with at as the floor.
func (w *Watermark) Primary(h Hash, at LSN, r Route) {
	if at == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resync != 0 && r.epoch == w.resync {
		w.resync = 0
		w.raiseFloor(at)
		return
	}
	w.raise(h, at)
}

// Apply is the bus handler; call it before the caches drop what inv names,
// so that a lookup that misses them already sees the new position. A key
// change raises the key's position; a key change without a position (from
// an older process) and InvalidateAll (a reconnect: messages may have been
// lost) make the floor unknown until the primary is asked again. Session
// revocations are not read from replicas and change nothing here. A nil
// Watermark (no read replica) ignores everything.
func (w *Watermark) Apply(inv Invalidation) {
	if w == nil { // no read replica
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case inv.Kind == InvalidateKey && inv.LSN != 0:
		w.raise(inv.Hash, inv.LSN)
	case inv.Kind == InvalidateKey, inv.Kind == InvalidateAll:
		w.epoch++
		w.resync = w.epoch
	}
}

// raise records that h changed at position l. Called with mu held.
func (w *Watermark) raise(h Hash, l LSN) {
	if l <= w.floor || l <= w.cur[h] {
		return
	}
	w.cur[h] = l
	w.curMax = max(w.curMax, l)
	if len(w.cur) >= w.maxKeys || time.Since(w.rotated) >= w.window {
		w.rotate()
	}
}

// rotate folds the old generation into the floor. Called with mu held.
func (w *Watermark) rotate() {
	w.floor = max(w.floor, w.oldMax)
	w.old, w.oldMax = w.cur, w.curMax
	w.cur, w.curMax = make(map[Hash]LSN, len(w.old)), 0
	w.rotated = time.Now()
}

// raiseFloor raises the floor and drops the positions it covers. Called
// with mu held.
func (w *Watermark) raiseFloor(l LSN) {
	if l <= w.floor {
		return
	}
	w.floor = l
	for _, m := range []map[Hash]LSN{w.cur, w.old} {
		for h, p := range m {
			if p <= l {
				delete(m, h)
			}
		}
	}
}
