package keystore

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// UsageRecorder records when keys were last used, off the hot path: Record
// only touches a map under a mutex; Run writes the batch to the store every
// interval and once more when its context ends.
type UsageRecorder struct {
	store    Store
	interval time.Duration
	max      int
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]time.Time
	dropped int
}

// NewUsageRecorder returns a recorder flushing every interval (default 10s)
// and holding at most max distinct keys between flushes (default 100000);
// past that, new keys wait for the next flush window.
func NewUsageRecorder(store Store, interval time.Duration, max int, logger *slog.Logger) *UsageRecorder {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	if max <= 0 {
		max = 100_000
	}
	return &UsageRecorder{store: store, interval: interval, max: max, log: logger, pending: make(map[string]time.Time)}
}

// Record notes that the key was used at t.
func (u *UsageRecorder) Record(id string, t time.Time) {
	u.mu.Lock()
	if _, ok := u.pending[id]; ok || len(u.pending) < u.max {
		u.pending[id] = t
	} else {
		u.dropped++
	}
	u.mu.Unlock()
}

// Run flushes every interval until ctx ends, then flushes what is left with
// a short deadline of its own.
func (u *UsageRecorder) Run(ctx context.Context) {
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			u.Flush(ctx)
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			u.Flush(fctx)
			cancel()
			return
		}
	}
}

// Flush writes the pending batch. On failure the batch is merged back so it
// is retried at the next flush.
func (u *UsageRecorder) Flush(ctx context.Context) {
	u.mu.Lock()
	batch, dropped := u.pending, u.dropped
	u.pending, u.dropped = make(map[string]time.Time, len(batch)), 0
	u.mu.Unlock()
	if dropped > 0 {
		u.log.Warn("key usage buffer full, some last-used times will be late", "dropped", dropped)
	}
	if len(batch) == 0 {
		return
	}
	if err := u.store.TouchKeys(ctx, batch); err != nil {
		u.log.Warn("record key usage failed, will retry", "keys", len(batch), "error", err.Error())
		u.mu.Lock()
		for id, t := range batch {
			if cur, ok := u.pending[id]; !ok || cur.Before(t) {
				u.pending[id] = t
			}
		}
		u.mu.Unlock()
	}
}
