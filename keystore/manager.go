package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotPropagated is wrapped by the error of a committed change that not
// every replica is known to have applied: it is in PostgreSQL (and the audit
// log), and every replica applies it by NotPropagatedError.DeniedBy at the
// latest. Doing the same change again propagates it again.
var ErrNotPropagated = errors.New("change committed, but not confirmed on every replica")

// NotPropagatedError is the error of a change that narrows what a
// credential may do (a revoke, a roll's shortened life, a session revoke)
// when the manager could not confirm that every replica applied it. It
// unwraps to ErrNotPropagated and to the cause.
type NotPropagatedError struct {
	// At is when the change was made (the key's revoked_at, the roll's
	// time, the session's revoked_at).
	At time.Time
	// DeniedBy is when every replica denies the credential at the latest
	// without the bus: At plus the replicas' cache TTL (keys) or session
	// sync interval (sessions), plus PropagationSlack. It assumes the
	// replicas reach PostgreSQL (docs/DESIGN.md, "Failure modes").
	DeniedBy time.Time
	// Cause says what failed.
	Cause error
}

func (e *NotPropagatedError) Error() string {
	return fmt.Sprintf("%v (%v); every replica denies it by %s", ErrNotPropagated, e.Cause, e.DeniedBy.UTC().Format(time.RFC3339))
}

// Unwrap returns ErrNotPropagated and the cause.
func (e *NotPropagatedError) Unwrap() []error { return []error{ErrNotPropagated, e.Cause} }

// PropagationSlack is added to the replicas' own bound in
// NotPropagatedError.DeniedBy: a replica's lookup (or session sync) that
// read the old state just before the change answers at most its deadline
// later (--store-timeout, 500ms by default), and its cache entry lives a
// full TTL from then.
const PropagationSlack = time.Second

// Manager issues and revokes keys: it writes PostgreSQL first, then the Redis
// tier, then the bus, so that when it returns every replica is on its way to
// the new state. The CLI and the admin service both go through it.
type Manager struct {
	store       Store
	redis       *Redis // nil without Redis
	opts        ManagerOptions
	propagation *prometheus.HistogramVec
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
	// SessionSync is the replicas' session sync interval (default 30s):
	// how long a replica that missed a session revoke's message may still
	// accept the session's cached tokens.
	SessionSync time.Duration
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
	// SingleProcess says that Notify reaches every cache there is (odin
	// dev: one process, no Redis), so that a change made without Redis is
	// final when its call returns. Without it, a narrowing change made
	// without Redis is unconfirmed: replicas learn of it when their cache
	// entries expire.
	SingleProcess bool
	// MaxKeyLifetime is the longest a key may live (KeyLifetimes.For its
	// organisation; zero: no limit): a key created without an expiry
	// expires that long after its creation, one asked to live longer is
	// refused (ErrInvalid), and a roll's new key expires no later than that
	// long after the roll.
	MaxKeyLifetime KeyLifetimes
	// Registerer receives odin_keystore_revoke_propagation_seconds
	// (optional: without it the histogram is kept but not exported).
	Registerer prometheus.Registerer
}

// Defaults for ManagerOptions and the replicas' matching settings.
const (
	DefaultCacheTTL         = 30 * time.Second
	DefaultSessionRetention = 24 * time.Hour
	DefaultSessionSync      = 30 * time.Second
)

func (o *ManagerOptions) defaults() {
	orDefault(&o.CacheTTL, DefaultCacheTTL)
	orDefault(&o.SessionRetention, DefaultSessionRetention)
	orDefault(&o.SessionSync, DefaultSessionSync)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// NewManager returns a manager. redis may be nil.
func NewManager(store Store, redis *Redis, opts ManagerOptions) *Manager {
	opts.defaults()
	m := &Manager{store: store, redis: redis, opts: opts}
	m.propagation = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "odin_keystore_revoke_propagation_seconds",
		Help:    "Time a committed narrowing change (key revoke, shortened expiry, session revoke) took to propagate: from its write to Redis to the end of its wait on the bus, by kind (key, session) and result: confirmed (every live replica acknowledged), fenced (some did not: the wait lasted the fence interval), unconfirmed (the change could not be propagated: answered 503).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2.5, 5},
	}, []string{"kind", "result"})
	for _, kind := range []string{propagationKey, propagationSession} {
		for _, result := range []string{propagationConfirmed, propagationFenced, propagationUnconfirmed} {
			m.propagation.WithLabelValues(kind, result)
		}
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(m.propagation); err != nil {
			// Several managers on one registry (tests, odin dev) share one histogram.
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
					m.propagation = existing
				}
			} else {
				opts.Logger.Error("revoke propagation histogram not exported", "error", err)
			}
		}
	}
	return m
}

// Labels of odin_keystore_revoke_propagation_seconds.
const (
	propagationKey         = "key"
	propagationSession     = "session"
	propagationConfirmed   = "confirmed"
	propagationFenced      = "fenced"
	propagationUnconfirmed = "unconfirmed"
)

// observePropagation records a bus wait that began at start.
func (m *Manager) observePropagation(kind string, start time.Time, missing []string, err error) {
	result := propagationConfirmed
	switch {
	case err != nil:
		result = propagationUnconfirmed
	case len(missing) > 0:
		result = propagationFenced
	}
	m.propagation.WithLabelValues(kind, result).Observe(time.Since(start).Seconds())
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

// allowlistsEnforced says whether every live replica on the bus
// enforces network allowlists, before a key is given one: ErrNotEnforced
// naming those that do not (an older release, mid-upgrade), ErrUnavailable
// when Redis cannot tell. Without Redis there is no bus and no replica
// to ask.
func (m *Manager) allowlistsEnforced(ctx context.Context) error {
	if m.redis == nil {
		return nil
	}
	missing, err := m.redis.ReplicasIgnoringAllowlists(ctx, time.Now())
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether every replica enforces network allowlists: %v", ErrUnavailable, err)
	}
	if n := len(missing); n > 0 {
		if n > 5 {
			missing = append(missing[:5:5], "…")
		}
		return fmt.Errorf("%w: %d odin authz replica(s) on the bus do not enforce network allowlists (%s): upgrade every replica before giving a key an allowlist", ErrNotEnforced, n, strings.Join(missing, ", "))
	}
	return nil
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
	now := time.Now()
	if err := n.Validate(now); err != nil { // fills the defaults the audit event records
		return nil, err
	}
	if err := m.opts.MaxKeyLifetime.apply(&n, now); err != nil {
		return nil, err
	}
	if len(n.AllowedCIDRs) > 0 {
		if err := m.allowlistsEnforced(ctx); err != nil {
			return nil, err
		}
	}
	detail := map[string]any{"name": n.Name, "hint": KeyHint(plaintext), "scopes": n.Scopes, "tier": n.Tier}
	if len(n.AllowedCIDRs) > 0 {
		detail["allowed_cidrs"] = CIDRStrings(n.AllowedCIDRs)
	}
	k, err := m.store.CreateKey(ctx, n, h, KeyHint(plaintext), by.event(ActionKeyCreated, detail))
	if err != nil {
		return nil, err
	}
	return k, m.propagate(ctx, k, m.position(ctx))
}

// Revoke revokes a key by id. It returns nil only when the revocation is
// committed and every replica has dropped the key or is fenced (see
// propagateAndWait): from then on no replica allows it. Otherwise the
// revocation still stands, and the error is a *NotPropagatedError saying by
// when every replica denies the key. Revoking a revoked key keeps its first
// revocation and propagates it again, so a retry can confirm what an
// earlier call could not.
func (m *Manager) Revoke(ctx context.Context, by Actor, id string) (*Key, error) {
	return m.revoke(ctx, by, id, nil)
}

// Why a key was revoked: the "reason" detail of its key.revoked audit
// event, which webhooks and the audit log's readers branch on. Once
// released these never change.
const (
	// RevokeReasonUser: a user revoked a key of their own (or, as an
	// organisation admin, of their organisation).
	RevokeReasonUser = "user"
	// RevokeReasonOperator: the operator revoked it (operator token, CLI).
	RevokeReasonOperator = "operator"
	// RevokeReasonLeaked: the key was found in public (GitHub secret
	// scanning reported it).
	RevokeReasonLeaked = "leaked"
	// RevokeReasonExpiredByPolicy: the key went unused for longer than the
	// operator's policy allows (`odin admin --revoke-unused-after`).
	RevokeReasonExpiredByPolicy = "expired-by-policy"
)

// RevokeWithReason is Revoke with the reason (one of the RevokeReason
// constants) recorded as the "reason" detail of the key.revoked event,
// beside details (which may not set "reason" otherwise). The guarantee is
// Revoke's: nil only once every replica denies the key, else a
// *NotPropagatedError with the revocation standing. Revoking a revoked key
// keeps its first revocation (and its event's reason) and propagates it
// again.
func (m *Manager) RevokeWithReason(ctx context.Context, by Actor, id, reason string, details map[string]any) (*Key, error) {
	switch reason {
	case RevokeReasonUser, RevokeReasonOperator, RevokeReasonLeaked, RevokeReasonExpiredByPolicy:
	default:
		return nil, fmt.Errorf("%w: revoke reason %q: must be %s, %s, %s or %s", ErrInvalid, reason,
			RevokeReasonUser, RevokeReasonOperator, RevokeReasonLeaked, RevokeReasonExpiredByPolicy)
	}
	return m.revoke(ctx, by, id, withReason(details, reason))
}

// withReason is a copy of details with "reason" set.
func withReason(details map[string]any, reason string) map[string]any {
	d := make(map[string]any, len(details)+1)
	for k, v := range details {
		d[k] = v
	}
	d["reason"] = reason
	return d
}

func (m *Manager) revoke(ctx context.Context, by Actor, id string, details map[string]any) (*Key, error) {
	return m.revokeIf(ctx, by, id, details, nil)
}

// revokeIf is revoke of a key that cond (when not nil) accepts as it is
// read, locked, in the revoke's transaction: its error is returned and
// nothing changes or propagates.
func (m *Manager) revokeIf(ctx context.Context, by Actor, id string, details map[string]any, cond func(*Key) error) (*Key, error) {
	k, err := revokeKeyIf(ctx, m.store, id, time.Now(), by.event(ActionKeyRevoked, details), cond)
	if err != nil {
		return nil, err
	}
	return k, m.keyNotPropagated(k.RevokedAt, m.propagateAndWait(ctx, k, m.position(ctx)))
}

// RevokeKey marks key id in s revoked at the given time and returns it,
// with ev (when not nil) in the audit log, in one transaction
// (Store.UpdateKey). Revoking a revoked key keeps the first revocation time
// and writes no event; an unknown key is ErrNotFound. Revoke is RevokeKey
// with the change propagated; the conformance suite (storetest) runs
// RevokeKey on each store.
func RevokeKey(ctx context.Context, s Store, id string, at time.Time, ev *AuditEvent) (*Key, error) {
	return revokeKeyIf(ctx, s, id, at, ev, nil)
}

// revokeKeyIf is RevokeKey of a key that cond (when not nil) accepts:
// cond's error is returned as it is, with nothing written.
func revokeKeyIf(ctx context.Context, s Store, id string, at time.Time, ev *AuditEvent, cond func(*Key) error) (*Key, error) {
	var k *Key
	err := s.UpdateKey(ctx, id, func(ctx context.Context, tx KeyTx, cur *Key) error {
		if cond != nil {
			if err := cond(cur); err != nil {
				return err
			}
		}
		if !cur.RevokedAt.IsZero() {
			k = cur
			return nil
		}
		var err error
		if k, err = tx.SetRevokedAt(ctx, at); err != nil {
			return err
		}
		return tx.AppendAudit(ctx, ev, k.ID, k.Owner())
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("revoke key %s: %w", id, err)
	}
	return k, nil
}

// KeyPropagationBound is how long after a key change a replica that missed
// its invalidation may still answer from what it cached before: the cache
// TTL plus PropagationSlack. A change older than that needs no propagating.
func (m *Manager) KeyPropagationBound() time.Duration { return m.opts.CacheTTL + PropagationSlack }

// keyNotPropagated makes a failed propagation of a key change made at into
// a *NotPropagatedError. Without the bus a replica answers from what it
// cached before the change for at most the cache TTL.
func (m *Manager) keyNotPropagated(at time.Time, err error) error {
	if err == nil {
		return nil
	}
	return &NotPropagatedError{At: at, DeniedBy: at.Add(m.KeyPropagationBound()), Cause: err}
}

// MaxRollGrace bounds the grace period of a roll.
const MaxRollGrace = 30 * 24 * time.Hour

// Roll replaces a key with a new one of the same name, owner, scopes, tier
// and expiry. The old key keeps working for grace, then expires (401). It
// returns the new key's plaintext, shown once. Bringing the old key's expiry
// forward narrows what it may do (with no grace it is a revoke), so it is
// propagated as a revoke is: when that cannot be confirmed, the roll still
// stands (the new key is issued and returned) and the error is a
// *NotPropagatedError; revoking the old key propagates again.
func (m *Manager) Roll(ctx context.Context, by Actor, id string, grace time.Duration) (string, *Key, *Key, error) {
	if grace < 0 || grace > MaxRollGrace {
		return "", nil, nil, fmt.Errorf("%w: grace_seconds: between 0 and %d", ErrInvalid, int(MaxRollGrace.Seconds()))
	}
	plaintext, err := GenerateKey()
	if err != nil {
		return "", nil, nil, fmt.Errorf("generate key: %w", err)
	}
	at := time.Now()
	old, rolled, err := RollKeyWithin(ctx, m.store, id, HashKey(plaintext), KeyHint(plaintext), at.Add(grace), m.opts.MaxKeyLifetime,
		by.event(ActionKeyRolled, map[string]any{"grace_seconds": int(grace.Seconds()), "new_hint": KeyHint(plaintext)}))
	if err != nil {
		return "", nil, nil, err
	}
	lsn := m.position(ctx)
	err = m.keyNotPropagated(at, m.propagateAndWait(ctx, old, lsn))
	// The new key widens nothing: a replica that missed it answers "unknown"
	// for at most the negative TTL, which is not a reason to fail the roll.
	if perr := m.propagate(ctx, rolled, lsn); perr != nil {
		m.opts.Logger.Warn("rolled key issued, but replicas were not told: they may refuse it for the negative cache TTL",
			"key_id", rolled.ID, "error", perr.Error())
	}
	return plaintext, old, rolled, err
}

// RollKey replaces key id in s, the rules of a roll in one transaction
// (Store.UpdateKey): the old key's expiry is brought forward to
// oldExpiresAt (never pushed back), a new key with the same name, owner,
// scopes, tier and expiry is stored under the new hash h, and the old key
// records it as its successor (ReplacedBy); ev, when not nil, is written
// with the new key's id and the old key's expiry added to its details. A
// key that was rolled before is refused with an *AlreadyRolledError (an
// ErrConflict) while it is still usable (a revoked or expired key is
// refused as such, ErrConflict), also when two rolls race: of concurrent
// rolls of one key, exactly one succeeds. Roll is RollKey with a fresh key
// and the change propagated; the conformance suite (storetest) runs
// RollKey on each store.
func RollKey(ctx context.Context, s Store, id string, h Hash, hint string, oldExpiresAt time.Time, ev *AuditEvent) (old, rolled *Key, err error) {
	return RollKeyWithin(ctx, s, id, h, hint, oldExpiresAt, KeyLifetimes{}, ev)
}

// RollKeyWithin is RollKey under a maximum key lifetime policy (the zero
// value: none): the new key's expiry is the old key's, brought forward to
// the key's maximum (limits.For its organisation) from now when it is
// later or the old key never expires.
func RollKeyWithin(ctx context.Context, s Store, id string, h Hash, hint string, oldExpiresAt time.Time, limits KeyLifetimes, ev *AuditEvent) (old, rolled *Key, err error) {
	err = s.UpdateKey(ctx, id, func(ctx context.Context, tx KeyTx, cur *Key) error {
		if err := cur.Usable(time.Now()); err != nil {
			return fmt.Errorf("%w: key is %s", ErrConflict, strings.TrimPrefix(err.Error(), "key "))
		}
		// UpdateKey serialises changes of one key: the second roll sees the
		// first's successor.
		if cur.ReplacedBy != "" {
			return &AlreadyRolledError{Successor: cur.ReplacedBy}
		}
		n := NewKey{UserID: cur.UserID, OrgID: cur.OrgID, Name: cur.Name, Scopes: cur.Scopes, Tier: cur.Tier, ExpiresAt: cur.ExpiresAt,
			RateLimit: cur.RateLimit, AllowedCIDRs: cur.AllowedCIDRs}
		n.ExpiresAt = limits.For(cur.OrgID).clamp(n.ExpiresAt, time.Now())
		var err error
		if rolled, err = tx.InsertKey(ctx, n, h, hint); err != nil {
			return err
		}
		until := oldExpiresAt
		if !cur.ExpiresAt.IsZero() && cur.ExpiresAt.Before(until) {
			until = cur.ExpiresAt
		}
		if old, err = tx.ReplaceKey(ctx, until, rolled.ID); err != nil {
			return err
		}
		if ev != nil {
			if ev.Details == nil {
				ev.Details = map[string]any{}
			}
			ev.Details["new_key_id"] = rolled.ID
			ev.Details["old_key_expires_at"] = old.ExpiresAt
		}
		return tx.AppendAudit(ctx, ev, old.ID, old.Owner())
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrConflict):
		return nil, nil, err
	case err != nil:
		return nil, nil, fmt.Errorf("roll key %s: %w", id, err)
	}
	return old, rolled, nil
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
	m.redis.set(ctx, k.Hash, &record{key: k, until: time.Now().Add(m.opts.CacheTTL)}, false)
	if err := m.redis.Publish(ctx, Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn}); err != nil {
		return fmt.Errorf("%w: %v", ErrNotPropagated, err)
	}
	return nil
}

// propagateAndWait is propagate for a change that must be final when the
// call returns (a revoke, a shortened expiry). It returns nil only when no
// replica can allow the key from then on: every replica seen alive
// acknowledged dropping it, or the wait lasted FenceAfter + margin after the
// message was accepted by Redis, by when a replica that did not acknowledge
// is fenced (Bus) and reads the key from Redis (overwritten first) or
// PostgreSQL. Case by case:
//   - Redis's record could not be overwritten (set, then retryOverwrite):
//     a fenced replica, or one that dropped the key, may read the old record
//     and allow the key until it expires, so the change is not confirmed,
//     even when every replica acknowledged.
//   - The acknowledgement channel or the live replica set could not be
//     read: nothing was published, replicas in contact keep their LRU
//     entries. Not confirmed; waiting would not help.
//   - The publish failed: its outcome is unknown (it may have reached some
//     replicas, or none). Replicas that are in contact with Redis and did
//     not get it are not fenced, so no wait can confirm it. Not confirmed.
//   - The publish was accepted and the acknowledgements stopped coming
//     (Redis died mid-wait): PublishAndWait waits out the fence, so those
//     replicas are fenced by the time it returns. Confirmed.
//
// Without Redis there is no bus: with Notify (odin dev) the only caches are
// in this process and were told synchronously, so the change is final;
// without it, replicas learn of it only when their cache entries expire.
func (m *Manager) propagateAndWait(ctx context.Context, k *Key, lsn LSN) error {
	m.notify(Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn})
	if m.redis == nil {
		return m.noBus()
	}
	start := time.Now()
	m.redis.set(ctx, k.Hash, &record{key: k, until: time.Now().Add(m.opts.CacheTTL)}, false)
	missing, err := m.redis.PublishAndWait(ctx, Invalidation{Kind: InvalidateKey, Hash: k.Hash, LSN: lsn}, m.opts.FenceAfter)
	m.observePropagation(propagationKey, start, missing, err)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		m.opts.Logger.Warn("replicas did not acknowledge a revoke in time; they are fenced and no longer trust their caches",
			"key_id", k.ID, "replicas", missing)
	}
	return nil
}

// errNoBus: Redis is not configured, so no replica is told of a change.
var errNoBus = errors.New("no invalidation bus: Redis is not configured")

// noBus is propagateAndWait's answer without Redis: nil when Notify told
// the only caches there are (SingleProcess), else errNoBus.
func (m *Manager) noBus() error {
	if m.opts.SingleProcess && m.opts.Notify != nil {
		return nil
	}
	return errNoBus
}

func (m *Manager) notify(inv Invalidation) {
	if m.opts.Notify != nil {
		m.opts.Notify(inv)
	}
}

// RevokeSession logs a session out everywhere: it records the revocation in
// PostgreSQL, mirrors it in Redis and publishes it, then waits as a key
// revoke does: nil means every replica seen alive acknowledged adding the
// session to its revoked set, or the fence interval passed, after which a
// replica that did not acknowledge is fenced and accepts no session until
// it has re-read the revoked set from PostgreSQL (RevokedSessions.Fence).
// Otherwise the revocation stands and the error is a *NotPropagatedError:
// replicas that missed the message refuse the session after their next
// sync, by DeniedBy. Revoking a revoked session propagates it again.
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
		if err := m.noBus(); err != nil {
			return r, &NotPropagatedError{At: r.RevokedAt, DeniedBy: r.RevokedAt.Add(m.opts.SessionSync + PropagationSlack), Cause: err}
		}
		return r, nil
	}
	// The mirror is best-effort: a token first seen after the revoke is
	// checked against it, but the guarantee rests on the acknowledgements,
	// the fence and the sync, which read PostgreSQL.
	start := time.Now()
	m.redis.SetRaw(ctx, revokedSessionKey(sid), []byte(r.RevokedAt.Format(time.RFC3339Nano)), m.opts.SessionRetention)
	missing, err := m.redis.PublishAndWait(ctx, inv, m.opts.FenceAfter)
	m.observePropagation(propagationSession, start, missing, err)
	if err != nil {
		return r, &NotPropagatedError{At: r.RevokedAt, DeniedBy: r.RevokedAt.Add(m.opts.SessionSync + PropagationSlack), Cause: err}
	}
	if len(missing) > 0 {
		m.opts.Logger.Warn("replicas did not acknowledge a session revoke in time; they are fenced and re-read the revoked sessions",
			"replicas", missing)
	}
	return r, nil
}
