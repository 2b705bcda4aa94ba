package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrNotPropagated is returned with a committed change whose cache
// invalidation could not be published: the change is in PostgreSQL, and
// replicas drop what they cached within the cache TTL.
var ErrNotPropagated = errors.New("change committed, but the invalidation bus could not be reached")

// Manager issues and revokes keys: it writes PostgreSQL first, then the Redis
// tier, then the bus, so that when it returns every replica is on its way to
// the new state. The CLI and the admin service both go through it.
type Manager struct {
	store Store
	redis *Redis // nil without Redis
	opts  ManagerOptions
}

// ManagerOptions must match what the replicas are configured with.
type ManagerOptions struct {
	// CacheTTL is the replicas' cache TTL (default 30s): how long a record
	// written to Redis may answer.
	CacheTTL time.Duration
	// SessionRetention is how long a revoked session is remembered (default
	// 24h). Replicas refuse tokens that live longer than this, so no token
	// of a revoked session outlives its revocation record.
	SessionRetention time.Duration
	// FenceAfter is the replicas' bus contact window (default 1s): a revoke
	// waits for every live replica's acknowledgement at most this long plus
	// a clock margin.
	FenceAfter time.Duration
	// Logger reports replicas that did not acknowledge a revoke (optional).
	Logger *slog.Logger
	// Notify, when set, is told every invalidation synchronously, before
	// the change's call returns: the in-process bus of a single process
	// without Redis (odin dev), where the caches live beside the manager.
	Notify func(Invalidation)
}

// Defaults for ManagerOptions and the replicas' matching settings.
const (
	DefaultCacheTTL         = 30 * time.Second
	DefaultSessionRetention = 24 * time.Hour
)

func (o *ManagerOptions) defaults() {
	if o.CacheTTL <= 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.SessionRetention <= 0 {
		o.SessionRetention = DefaultSessionRetention
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// NewManager returns a manager. redis may be nil.
func NewManager(store Store, redis *Redis, opts ManagerOptions) *Manager {
	opts.defaults()
	return &Manager{store: store, redis: redis, opts: opts}
}

// Store returns the underlying store.
func (m *Manager) Store() Store { return m.store }

// Create issues a key and returns its plaintext, which exists nowhere else:
// show it once. The new key works at once: the record is written to Redis
// over any cached "no such key", and replicas drop their negative entries.
func (m *Manager) Create(ctx context.Context, by Actor, n NewKey) (string, *Key, error) {
	plaintext, err := GenerateKey()
	if err != nil {
		return "", nil, fmt.Errorf("generate key: %w", err)
	}
	k, err := m.Issue(ctx, by, n, plaintext)
	return plaintext, k, err
}

// Actor is who makes a change, for the audit log.
type Actor struct {
	ID        string // user id, "operator", "clerk-webhook"…
	RequestID string
	// Impersonating is the user ID acts as, when ID signed in as that user
	// through Clerk's user impersonation: recorded as the "impersonating"
	// detail of the event, whose actor stays ID.
	Impersonating string
}

func (a Actor) event(action string, details map[string]any) *AuditEvent {
	id := a.ID
	if id == "" {
		id = "unknown"
	}
	if a.Impersonating != "" {
		d := make(map[string]any, len(details)+1)
		for k, v := range details {
			d[k] = v
		}
		d["impersonating"] = a.Impersonating
		details = d
	}
	return &AuditEvent{Actor: id, Action: action, RequestID: a.RequestID, Details: details}
}

// Issue stores a key whose plaintext the caller made with GenerateKey (a
// roll that must print the key before storing it, or a test that checks the
// key before it exists). It refuses anything that is not a valid key.
func (m *Manager) Issue(ctx context.Context, by Actor, n NewKey, plaintext string) (*Key, error) {
	h, err := ParseKey(plaintext)
	if err != nil {
		return nil, fmt.Errorf("%w: key: not a valid odin_sk_ key", ErrInvalid)
	}
	if err := n.Validate(time.Now()); err != nil { // fills the defaults the audit event records
		return nil, err
	}
	k, err := m.store.CreateKey(ctx, n, h, KeyHint(plaintext), by.event(ActionKeyCreated, map[string]any{
		"name": n.Name, "hint": KeyHint(plaintext), "scopes": n.Scopes, "tier": n.Tier,
	}))
	if err != nil {
		return nil, err
	}
	return k, m.propagate(ctx, k, m.position(ctx))
}

// Revoke revokes a key by id. It returns only after the revocation is
// committed in PostgreSQL and published on the bus.
func (m *Manager) Revoke(ctx context.Context, by Actor, id string) (*Key, error) {
	k, err := m.store.RevokeKey(ctx, id, time.Now(), by.event(ActionKeyRevoked, nil))
	if err != nil {
		return nil, err
	}
	return k, m.propagateAndWait(ctx, k, m.position(ctx))
}

// MaxRollGrace bounds the grace period of a roll.
const MaxRollGrace = 30 * 24 * time.Hour

// Roll replaces a key with a new one of the same name, owner, scopes, tier
// and expiry. The old key keeps working for grace, then expires (401). It
// returns the new key's plaintext, shown once.
func (m *Manager) Roll(ctx context.Context, by Actor, id string, grace time.Duration) (string, *Key, *Key, error) {
	if grace < 0 || grace > MaxRollGrace {
		return "", nil, nil, fmt.Errorf("%w: grace_seconds: between 0 and %d", ErrInvalid, int(MaxRollGrace.Seconds()))
	}
	plaintext, err := GenerateKey()
	if err != nil {
		return "", nil, nil, fmt.Errorf("generate key: %w", err)
	}
	old, rolled, err := m.store.RollKey(ctx, id, HashKey(plaintext), KeyHint(plaintext), time.Now().Add(grace),
		by.event(ActionKeyRolled, map[string]any{"grace_seconds": int(grace.Seconds()), "new_hint": KeyHint(plaintext)}))
	if err != nil {
		return "", nil, nil, err
	}
	lsn := m.position(ctx)
	err = errors.Join(m.propagateAndWait(ctx, old, lsn), m.propagate(ctx, rolled, lsn))
	return plaintext, old, rolled, err
}

// position is the primary's WAL position after a change the caller just
// committed, sent with its invalidation so that replicas reading a lagging
// read replica go to the primary for that key until the replica has it.
// Zero (a store without positions, or an error) makes them ask the primary
// for its position instead.
func (m *Manager) position(ctx context.Context) LSN {
	p, ok := m.store.(WALPositioner)
	if !ok {
		return 0
	}
	lsn, err := p.WALPosition(ctx)
	if err != nil {
		m.opts.Logger.Warn("read the WAL position after a change; replicas will ask the primary for theirs", "error", err.Error())
		return 0
	}
	return lsn
}

// propagate writes the key's current record to Redis (overwriting, so a
// stale fill can no longer win: fills use SET NX) and tells every replica
// to drop its LRU entry.
func (m *Manager) propagate(ctx context.Context, k *Key, lsn LSN) error {
	m.notify(Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn})
	if m.redis == nil {
		return nil
	}
	m.redis.set(ctx, k.Hash, &entry{key: k, until: time.Now().Add(m.opts.CacheTTL)}, false)
	if err := m.redis.Publish(ctx, Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn}); err != nil {
		return fmt.Errorf("%w: %v", ErrNotPropagated, err)
	}
	return nil
}

// propagateAndWait is propagate for a change that must be final when the
// call returns (a revoke): it waits until every live replica acknowledged
// dropping the key, or until those that did not are fenced (Bus).
func (m *Manager) propagateAndWait(ctx context.Context, k *Key, lsn LSN) error {
	m.notify(Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn})
	if m.redis == nil {
		return nil
	}
	m.redis.set(ctx, k.Hash, &entry{key: k, until: time.Now().Add(m.opts.CacheTTL)}, false)
	missing, err := m.redis.PublishAndWait(ctx, Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn}, m.opts.FenceAfter)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotPropagated, err)
	}
	if len(missing) > 0 {
		m.opts.Logger.Warn("replicas did not acknowledge a revoke in time; they are fenced and no longer trust their caches",
			"key_id", k.ID, "replicas", missing)
	}
	return nil
}

func (m *Manager) notify(inv Invalidation) {
	if m.opts.Notify != nil {
		m.opts.Notify(inv)
	}
}

// RevokeSession logs a session out everywhere: it records the revocation in
// PostgreSQL, mirrors it in Redis and publishes it, so every replica refuses
// every token of the session from then on.
func (m *Manager) RevokeSession(ctx context.Context, by Actor, sid, reason string) (RevokedSession, error) {
	if !ValidSessionID(sid) {
		return RevokedSession{}, fmt.Errorf("%w: session_id: not a valid session id", ErrInvalid)
	}
	now := time.Now().UTC()
	r := RevokedSession{SessionID: sid, RevokedAt: now, ExpiresAt: now.Add(m.opts.SessionRetention), Reason: reason}
	if err := m.store.RevokeSession(ctx, r, by.event(ActionSessionRevoked, map[string]any{"reason": reason})); err != nil {
		return RevokedSession{}, err
	}
	inv := Invalidation{Kind: InvalidateSession, SessionID: sid, LSN: m.position(ctx)}
	m.notify(inv)
	if m.redis == nil {
		return r, nil
	}
	m.redis.SetRaw(ctx, revokedSessionKey(sid), []byte(r.RevokedAt.Format(time.RFC3339Nano)), m.opts.SessionRetention)
	if err := m.redis.Publish(ctx, inv); err != nil {
		return r, fmt.Errorf("%w: %v", ErrNotPropagated, err)
	}
	return r, nil
}
