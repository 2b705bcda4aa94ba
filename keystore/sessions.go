package keystore

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/odin-scan/odin-authz/internal/lograte"
)

// ErrSessionsNotLoaded means the revoked-session set has never been loaded
// from PostgreSQL: nobody can say whether a session is revoked, so a JWT is
// answered 503, never allowed.
var ErrSessionsNotLoaded = errors.New("revoked sessions not loaded")

// ErrSessionsStale means the replica is fenced (it may have missed session
// revokes on the bus) and could not re-read the revoked sessions from
// PostgreSQL: a JWT is answered 503, never allowed.
var ErrSessionsStale = errors.New("revoked sessions may be stale: fenced from the bus and PostgreSQL unreachable")

// fencedSyncTimeout bounds the sync a fenced replica makes in a check's
// path: below the ext_authz timeout, like the store timeout of a key lookup.
const fencedSyncTimeout = 500 * time.Millisecond

// RevokedSessions is a replica's copy of the logged-out sessions: loaded from
// PostgreSQL at start, kept current by the bus, and re-synced every interval
// as the safety net for a lost message. Every JWT check asks it, so a lookup
// is a read-locked map access.
type RevokedSessions struct {
	store     Store
	redis     *Redis // optional: the mirror checked at a token's first sight
	retention time.Duration
	log       *slog.Logger
	errLog    lograte.Limiter

	mu       sync.RWMutex
	set      map[string]time.Time // session id → when its revocation expires
	loaded   atomic.Bool
	lastSync time.Time // revoked_at watermark of the last successful sync

	// fenced: see Fence. syncedFrom is the UnixNano start of the newest
	// successful sync: the set holds every revocation committed before.
	fenced     func(time.Time) bool
	syncedFrom atomic.Int64
	fencedSync singleflight.Group
}

// NewRevokedSessions returns an empty, not yet loaded set. retention must
// match the Manager's SessionRetention.
func NewRevokedSessions(store Store, redis *Redis, retention time.Duration, logger *slog.Logger) *RevokedSessions {
	if retention <= 0 {
		retention = DefaultSessionRetention
	}
	return &RevokedSessions{store: store, redis: redis, retention: retention, log: logger,
		errLog: lograte.Limiter{Every: 10 * time.Second}, set: map[string]time.Time{}}
}

// Fence makes the set follow the bus's fence (Bus.Fenced): while fenced
// reports true, the replica may have missed session revokes that no revoker
// waited for (a revoker waits only for the replicas it sees alive, and
// answers at once when they all acknowledged), so IsRevoked answers only
// from a sync that began after the check did, as a fenced replica reads
// every key from Redis or PostgreSQL rather than its LRU. Concurrent checks
// share the syncs. Call it before the set is used.
func (r *RevokedSessions) Fence(fenced func(time.Time) bool) { r.fenced = fenced }

// Retention is how long a revocation is kept, and so the longest token
// lifetime a replica accepts.
func (r *RevokedSessions) Retention() time.Duration { return r.retention }

// Loaded reports whether the set has been loaded at least once.
func (r *RevokedSessions) Loaded() bool { return r.loaded.Load() }

// Len is the number of revocations held.
func (r *RevokedSessions) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.set)
}

// IsRevoked reports whether sid was logged out. ErrSessionsNotLoaded when
// the set has never been loaded; ErrSessionsStale when the replica is
// fenced and the set could not be re-read (Fence).
func (r *RevokedSessions) IsRevoked(sid string, now time.Time) (bool, error) {
	if !r.loaded.Load() {
		return false, ErrSessionsNotLoaded
	}
	if r.fenced != nil && r.fenced(now) && !r.syncedSince(now) {
		return false, ErrSessionsStale
	}
	r.mu.RLock()
	until, ok := r.set[sid]
	r.mu.RUnlock()
	return ok && now.Before(until), nil
}

// CheckMirror asks the Redis mirror about sid, for a token seen for the
// first time: it catches a revocation whose bus message this replica missed
// before the next sync. Found revocations are added to the set.
func (r *RevokedSessions) CheckMirror(ctx context.Context, sid string, now time.Time) bool {
	if r.redis == nil {
		return false
	}
	if _, ok := r.redis.GetRaw(ctx, revokedSessionKey(sid)); !ok {
		return false
	}
	r.add(sid, now.Add(r.retention))
	return true
}

// MirrorRead is the Redis mirror's answer about one session, read ahead of
// a first-sight admission (ReadWithMirror) and used once the token naming
// that session is verified (CheckMirrorRead).
type MirrorRead struct {
	sid           string
	read, revoked bool
}

// ReadWithMirror reads the value SetRaw wrote under name from cache (as
// cache.GetRaw) and, in the same round trip, the mirror's revocation marker
// for sid. sid comes from a token not verified yet, so the answer is only a
// MirrorRead: CheckMirrorRead uses it for that same sid and nothing else.
// Without a mirror, without a sid, or when cache is not the mirror's Redis,
// it is cache.GetRaw alone and the MirrorRead is empty.
func (r *RevokedSessions) ReadWithMirror(ctx context.Context, cache *Redis, name, sid string) (val []byte, ok bool, m MirrorRead) {
	if cache == nil {
		return nil, false, MirrorRead{}
	}
	if sid == "" || r.redis != cache {
		val, ok = cache.GetRaw(ctx, name)
		return val, ok, MirrorRead{}
	}
	vals, found, read := cache.getRaws(ctx, name, revokedSessionKey(sid))
	return vals[0], found[0], MirrorRead{sid: sid, read: read, revoked: found[1]}
}

// CheckMirrorRead is CheckMirror answered from m when m was read for sid;
// otherwise it asks Redis.
func (r *RevokedSessions) CheckMirrorRead(ctx context.Context, sid string, m MirrorRead, now time.Time) bool {
	if !m.read || m.sid != sid || sid == "" {
		return r.CheckMirror(ctx, sid, now)
	}
	if m.revoked {
		r.add(sid, now.Add(r.retention))
	}
	return m.revoked
}

// syncedSince makes sure a sync that began at or after t succeeded,
// joining the one in flight or starting one. A flight that began before t
// does not count, so it takes at most two; each has its own deadline, so
// that one caller's cancellation does not fail the others.
func (r *RevokedSessions) syncedSince(t time.Time) bool {
	for range 2 {
		if r.syncedFrom.Load() >= t.UnixNano() {
			return true
		}
		if _, err, _ := r.fencedSync.Do("", func() (any, error) {
			ctx, cancel := context.WithTimeout(context.Background(), fencedSyncTimeout)
			defer cancel()
			return nil, r.Sync(ctx)
		}); err != nil {
			return false
		}
	}
	return r.syncedFrom.Load() >= t.UnixNano()
}

func (r *RevokedSessions) add(sid string, until time.Time) {
	r.mu.Lock()
	if cur, ok := r.set[sid]; !ok || cur.Before(until) {
		r.set[sid] = until
	}
	r.mu.Unlock()
}

// Apply is the bus handler: a session revocation is added at once; after a
// reconnect (InvalidateAll) a sync runs in the background.
func (r *RevokedSessions) Apply(ctx context.Context, inv Invalidation) {
	switch inv.Kind {
	case InvalidateSession:
		r.add(inv.SessionID, time.Now().Add(r.retention))
	case InvalidateAll:
		go func() { _ = r.Sync(ctx) }()
	}
}

// Sync loads revocations made since the last sync (with a minute of overlap
// for clock skew between writers) and drops expired ones.
func (r *RevokedSessions) Sync(ctx context.Context) error {
	now := time.Now()
	r.mu.RLock()
	since := r.lastSync.Add(-time.Minute)
	r.mu.RUnlock()
	if !r.loaded.Load() {
		since = now.Add(-r.retention)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	revs, err := r.store.RevokedSessions(ctx, since, now)
	if err != nil {
		if r.errLog.Allow() {
			r.log.Warn("sync revoked sessions failed", "error", err.Error())
		}
		return err
	}
	r.mu.Lock()
	for _, rev := range revs {
		if cur, ok := r.set[rev.SessionID]; !ok || cur.Before(rev.ExpiresAt) {
			r.set[rev.SessionID] = rev.ExpiresAt
		}
		if rev.RevokedAt.After(r.lastSync) {
			r.lastSync = rev.RevokedAt
		}
	}
	for sid, until := range r.set {
		if !now.Before(until) {
			delete(r.set, sid)
		}
	}
	if r.lastSync.IsZero() {
		r.lastSync = now.Add(-time.Minute)
	}
	if now.UnixNano() > r.syncedFrom.Load() {
		r.syncedFrom.Store(now.UnixNano())
	}
	r.mu.Unlock()
	if !r.loaded.Swap(true) {
		r.log.Info("revoked sessions loaded", "count", len(revs))
	}
	return nil
}

// Run syncs every interval until ctx ends: the bound on how long a replica
// that missed a bus message keeps accepting a revoked session's cached
// tokens. One replica's prune also deletes expired rows.
// Until the first load succeeds it retries every 2s.
func (r *RevokedSessions) Run(ctx context.Context, every time.Duration) {
	for {
		wait := every
		if !r.loaded.Load() {
			wait = min(every, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
			if r.Sync(ctx) == nil {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, _ = r.store.PruneRevokedSessions(pctx, time.Now())
				cancel()
			}
		}
	}
}
