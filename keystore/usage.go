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
	pending map[usageKey]*Usage
	dropped int
}

// usageKey is one counter: a key in one hour.
type usageKey struct {
	id   string
	hour int64 // Unix hour
}

// DefaultUsageInterval is how often a UsageRecorder flushes by default.
const DefaultUsageInterval = 10 * time.Second

// NewUsageRecorder returns a recorder flushing every interval (default
// DefaultUsageInterval) and holding at most max distinct keys between
// flushes (default 100000); past that, new keys wait for the next flush
// window.
func NewUsageRecorder(store Store, interval time.Duration, max int, logger *slog.Logger) *UsageRecorder {
	if interval <= 0 {
		interval = DefaultUsageInterval
	}
	if max <= 0 {
		max = 100_000
	}
	return &UsageRecorder{store: store, interval: interval, max: max, log: logger, pending: make(map[usageKey]*Usage)}
}

// Record counts one use of the key at t. Past the bound, uses of keys not
// already pending are counted as dropped (and logged) rather than grow the
// map without limit.
func (u *UsageRecorder) Record(id string, t time.Time) {
	k := usageKey{id: id, hour: t.Unix() / 3600}
	u.mu.Lock()
	if p, ok := u.pending[k]; ok {
		p.Count++
		if t.After(p.LastUsed) {
			p.LastUsed = t
		}
	} else if len(u.pending) < u.max {
		u.pending[k] = &Usage{KeyID: id, Hour: time.Unix(k.hour*3600, 0).UTC(), Count: 1, LastUsed: t}
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
	pending, dropped := u.pending, u.dropped
	u.pending, u.dropped = make(map[usageKey]*Usage, len(pending)), 0
	u.mu.Unlock()
	if dropped > 0 {
		u.log.Warn("key usage buffer full, some uses were not counted", "dropped", dropped)
	}
	if len(pending) == 0 {
		return
	}
	batch := make([]Usage, 0, len(pending))
	for _, p := range pending {
		batch = append(batch, *p)
	}
	if err := u.store.RecordUsage(ctx, batch); err != nil {
		u.log.Warn("record key usage failed, will retry", "entries", len(batch), "error", err.Error())
		u.mu.Lock()
		for k, p := range pending { // merge back: counts add, nothing is lost
			if cur, ok := u.pending[k]; ok {
				cur.Count += p.Count
				if p.LastUsed.After(cur.LastUsed) {
					cur.LastUsed = p.LastUsed
				}
			} else {
				u.pending[k] = p
			}
		}
		u.mu.Unlock()
	}
}
