package keystore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound means no key has that hash or id.
	ErrNotFound = errors.New("key not found")
	// ErrRevoked means the key exists and was revoked.
	ErrRevoked = errors.New("key revoked")
	// ErrExpired means the key exists and its expiry has passed.
	ErrExpired = errors.New("key expired")
	// ErrDisabled means the key exists and is disabled: refused until it
	// is enabled again.
	ErrDisabled = errors.New("key disabled")
	// ErrUnavailable means the answer depends on a store that cannot be
	// reached and nothing usable is cached. It must never become a 401.
	ErrUnavailable = errors.New("key store unavailable")
	// ErrInvalid wraps a request the store refuses (bad name, scope, tier,
	// session id, delivery filter…).
	ErrInvalid = errors.New("invalid request")
	// ErrConflict wraps a request that the key's state forbids (rolling a
	// revoked key).
	ErrConflict = errors.New("conflict")
	// ErrNotEnforced wraps a change refused because a replica running now
	// would not enforce it: a network allowlist while a replica of an
	// older release is on the bus (Redis.ReplicasIgnoringAllowlists).
	ErrNotEnforced = errors.New("not enforced by every replica")
)

// AlreadyRolledError is the ErrConflict of rolling a key that has been
// rolled before: a key has at most one successor, so that rolling a key in
// its grace period again cannot leave several live keys in its place.
type AlreadyRolledError struct {
	// Successor is the id of the key it was rolled to.
	Successor string
}

func (e *AlreadyRolledError) Error() string {
	return "the key has already been rolled; its successor is " + e.Successor + " (a key is rolled once: roll or revoke " + e.Successor + " instead)"
}

// Is makes errors.Is(err, ErrConflict) hold.
func (e *AlreadyRolledError) Is(target error) bool { return target == ErrConflict }

// Key is one issued API key as stored: never the plaintext, only its hash.
type Key struct {
	ID         string    `json:"id"`
	UserID     string    `json:"user_id,omitempty"`
	OrgID      string    `json:"org_id,omitempty"`
	Name       string    `json:"name"`
	Hash       Hash      `json:"-"`
	Hint       string    `json:"hint"`
	Scopes     []string  `json:"scopes"`
	Tier       string    `json:"tier"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// ReplacedBy is the id of the key this one was rolled to; empty when
	// it was never rolled. A key is rolled at most once.
	ReplacedBy string `json:"replaced_by,omitempty"`
	// DisabledAt is when the key was disabled; zero while it is enabled.
	// A disabled key is refused (401, "disabled") until it is enabled
	// again. The cache's compact record keeps only whether it is set
	// (compactKeys.view gives DisabledSince).
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	// RateLimit is the key's own rate limit, used instead of its tier's;
	// nil: the tier's. Only an operator sets it.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// AllowedCIDRs are the networks the key may be used from; nil: any
	// network. Canonical (CanonicalCIDRs): masked, IPv4 before IPv6,
	// sorted, without duplicates.
	AllowedCIDRs []netip.Prefix `json:"allowed_cidrs,omitempty"`
}

// RateLimit is a key's own rate limit, in the rate limiter's units
// (docs/RATELIMIT.md): a sustained rate in requests per second (fractions
// allowed) and a burst, the requests a caller with an unused budget may
// send at once (reported as ratelimit-limit).
type RateLimit struct {
	Rate  float64 `json:"rate"`
	Burst int     `json:"burst"`
}

// The bounds of a key's own rate limit: the rate limiter's bounds of a
// tier (extauthz/ratelimit's Tier.Validate; a test checks they agree).
const (
	MaxRateLimitRate  = 100_000
	MaxRateLimitBurst = 1_000_000_000
)

// Validate checks a rate limit; the error names the field.
func (r *RateLimit) Validate() error {
	if math.IsNaN(r.Rate) || r.Rate <= 0 || r.Rate > MaxRateLimitRate {
		return fmt.Errorf("%w: rate_limit.rate: want more than 0 and at most %d requests per second", ErrInvalid, MaxRateLimitRate)
	}
	if r.Burst < 1 || r.Burst > MaxRateLimitBurst {
		return fmt.Errorf("%w: rate_limit.burst: want 1 to %d", ErrInvalid, MaxRateLimitBurst)
	}
	return nil
}

// Equal reports whether r and o are the same limit (both nil: the tier's).
func (r *RateLimit) Equal(o *RateLimit) bool {
	if r == nil || o == nil {
		return r == o
	}
	return *r == *o
}

// String formats the limit as the rate limiter's tier lists write one,
// in requests per second: "10/s:20".
func (r *RateLimit) String() string {
	return strconv.FormatFloat(r.Rate, 'g', -1, 64) + "/s:" + strconv.Itoa(r.Burst)
}

// DisabledSince stands for the disabling time of a key read back from a
// compact cache record, which keeps only that the key is disabled.
var DisabledSince = time.Unix(0, 1).UTC()

// Owner is the tenant that owns the key: its organisation when it has one,
// else its user.
func (k *Key) Owner() string {
	if k.OrgID != "" {
		return k.OrgID
	}
	return k.UserID
}

// Subject is the principal a key acts as: the user who owns it, or for an
// organisation key created by no particular user, the organisation.
func (k *Key) Subject() string {
	if k.UserID != "" {
		return k.UserID
	}
	return k.OrgID
}

// Usable reports why the key may not be used at now: ErrRevoked,
// ErrExpired, ErrDisabled, or nil. A revoked or expired key says so
// whether or not it is disabled: that is final, disabling is not.
func (k *Key) Usable(now time.Time) error {
	if !k.RevokedAt.IsZero() && !now.Before(k.RevokedAt) {
		return ErrRevoked
	}
	if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
		return ErrExpired
	}
	if !k.DisabledAt.IsZero() {
		return ErrDisabled
	}
	return nil
}

// NewKey is what a caller asks for when it issues a key.
type NewKey struct {
	UserID    string
	OrgID     string
	Name      string
	Scopes    []string
	Tier      string
	ExpiresAt time.Time // zero: never
	// RateLimit is the key's own rate limit; nil: its tier's.
	RateLimit *RateLimit
	// AllowedCIDRs are the networks the key may be used from; nil: any.
	// Validate makes them canonical.
	AllowedCIDRs []netip.Prefix
}

var (
	namePattern  = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,200}$`)
	scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:*-]{0,63}$`)
	tierPattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,128}$`)
)

// DefaultTier is the tier of a key created without one.
const DefaultTier = "free"

// Validate checks a NewKey and fills its defaults; the error names the field.
func (n *NewKey) Validate(now time.Time) error {
	if n.UserID == "" && n.OrgID == "" {
		return fmt.Errorf("%w: owner: a user or an organisation id is required", ErrInvalid)
	}
	for _, id := range []string{n.UserID, n.OrgID} {
		if id != "" && !ownerPattern.MatchString(id) {
			return fmt.Errorf("%w: owner: %q is not a valid id", ErrInvalid, id)
		}
	}
	if n.Tier == "" {
		n.Tier = DefaultTier
	}
	if n.Scopes == nil {
		n.Scopes = []string{}
	}
	n.Scopes = uniqueScopes(n.Scopes)
	cidrs, err := CanonicalCIDRs(n.AllowedCIDRs)
	if err != nil {
		return err
	}
	n.AllowedCIDRs = cidrs
	st := KeyState{Name: n.Name, Scopes: n.Scopes, Tier: n.Tier, ExpiresAt: n.ExpiresAt, RateLimit: n.RateLimit, AllowedCIDRs: cidrs}
	return st.Validate(now)
}

// uniqueScopes is ss without repeats, in the order of their first
// appearance: a scope granted twice is granted once. ss itself when it
// has none.
func uniqueScopes(ss []string) []string {
	for i := 1; i < len(ss); i++ {
		if slices.Contains(ss[:i], ss[i]) {
			out := slices.Clone(ss[:i])
			for _, s := range ss[i+1:] {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return ss
}

// Validate checks the fields a key is issued or changed with; the error
// names the field. An expiry must be in the future at now.
func (st *KeyState) Validate(now time.Time) error {
	if !namePattern.MatchString(st.Name) {
		return fmt.Errorf("%w: name: 1 to 200 printable characters required", ErrInvalid)
	}
	if !tierPattern.MatchString(st.Tier) {
		return fmt.Errorf("%w: tier: %q is not a valid tier name", ErrInvalid, st.Tier)
	}
	if len(st.Scopes) > 64 {
		return fmt.Errorf("%w: scopes: at most 64", ErrInvalid)
	}
	for _, s := range st.Scopes {
		if !scopePattern.MatchString(s) {
			return fmt.Errorf("%w: scopes: %q is not a valid scope", ErrInvalid, s)
		}
	}
	if !st.ExpiresAt.IsZero() && !st.ExpiresAt.After(now) {
		return fmt.Errorf("%w: expires_at: must be in the future", ErrInvalid)
	}
	if st.ExpiresAt.UTC().Year() > 9999 { // RFC 3339 cannot write it back
		return fmt.Errorf("%w: expires_at: must be before the year 10000", ErrInvalid)
	}
	if st.RateLimit != nil {
		if err := st.RateLimit.Validate(); err != nil {
			return err
		}
	}
	if len(st.AllowedCIDRs) > MaxAllowedCIDRs {
		return fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, MaxAllowedCIDRs)
	}
	return nil
}

// ListKeysOptions selects and pages keys. Results are newest first.
type ListKeysOptions struct {
	UserID string // when set, only keys of this user
	OrgID  string // when set, only keys of this organisation
	// PersonalOnly keeps only keys with no organisation.
	PersonalOnly bool
	// Revoked filters on revocation: nil for all, true for revoked only,
	// false for active (not revoked) only.
	Revoked *bool
	// UnusedSince, when set, keeps only keys unused since then: last used
	// before it, or never used and created before it (Key.UnusedSince).
	UnusedSince time.Time
	// ExpiresBefore, when set, keeps only keys with an expiry before it
	// and not before ExpiresFrom: the keys expiring within a window.
	ExpiresFrom, ExpiresBefore time.Time
	Limit                      int    // 1..1000, default 50
	Cursor                     string // from the previous page; empty for the first
}

// KeyTx is what a change made under Store.UpdateKey may write, in its
// transaction.
type KeyTx interface {
	// InsertKey stores a new key with the given hash and hint, as CreateKey
	// does (without its validation).
	InsertKey(ctx context.Context, n NewKey, h Hash, hint string) (*Key, error)
	// ReplaceKey sets the locked key's expiry and successor (ReplacedBy)
	// and returns the key as stored.
	ReplaceKey(ctx context.Context, expiresAt time.Time, successor string) (*Key, error)
	// SetRevokedAt sets the locked key's revocation time and returns the
	// key as stored.
	SetRevokedAt(ctx context.Context, at time.Time) (*Key, error)
	// SetState writes the locked key's changeable fields (name, scopes,
	// tier, expiry, disabling time, own rate limit) and returns the key as stored.
	SetState(ctx context.Context, st KeyState) (*Key, error)
	// AppendAudit writes ev (when not nil) for target, owned by owner,
	// filling in its target and owner when empty, and its id and time.
	// An event of a change that sends a webhook (keystore.OutboxMessage)
	// has its webhook event written in the outbox with it.
	AppendAudit(ctx context.Context, ev *AuditEvent, target, owner string) error
}

// KeyState is what a change of a key (UpdateKeyState) may set: every
// field is written, the zero time meaning "never" (ExpiresAt) or "enabled"
// (DisabledAt).
type KeyState struct {
	Name       string
	Scopes     []string
	Tier       string
	ExpiresAt  time.Time
	DisabledAt time.Time
	// RateLimit is the key's own rate limit; nil: its tier's.
	RateLimit *RateLimit
	// AllowedCIDRs are the networks the key may be used from, canonical
	// (CanonicalCIDRs); nil: any.
	AllowedCIDRs []netip.Prefix
}

// Store is the source of truth for keys. PostgreSQL implements it
// (pgstore) and so does the embedded SQLite store of `odin dev`
// (sqlitestore); storetest is the conformance suite both pass.
type Store interface {
	// KeyByHash returns the key with that hash, revoked or not, or ErrNotFound.
	KeyByHash(ctx context.Context, h Hash) (*Key, error)
	// Key returns the key with that public id, or ErrNotFound.
	Key(ctx context.Context, id string) (*Key, error)
	// KeyHashes calls fn with the hash of every stored key created at or
	// after since (the zero time: every key), revoked and expired ones too,
	// in no particular order, as the rows arrive: it never holds all of
	// them. It reads the primary (a read replica may lag), as of one point
	// in time: every such key committed before the call began is included.
	// A bounded since is an index range scan. It stops at fn's first error
	// and returns it.
	KeyHashes(ctx context.Context, since time.Time, fn func(Hash) error) error
	// CreateKey stores a new key with the given hash and hint, and ev (when
	// not nil) in the audit log in the same transaction.
	CreateKey(ctx context.Context, n NewKey, h Hash, hint string, ev *AuditEvent) (*Key, error)
	// ListKeys returns a page of keys and the cursor of the next page ("" at the end).
	ListKeys(ctx context.Context, opts ListKeysOptions) ([]*Key, string, error)
	// UpdateKey runs fn in one transaction with key id read and locked
	// against concurrent changes (ErrNotFound when there is none): a second
	// UpdateKey of the same key waits, then reads what the first committed.
	// An error of fn rolls the transaction back; errors are returned
	// unwrapped, for the caller to say what it was doing. The rules of a
	// change (RollKey's, RevokeKey's) are the caller's; the store only keeps the rows.
	UpdateKey(ctx context.Context, id string, fn func(ctx context.Context, tx KeyTx, cur *Key) error) error
	// RecordUsage adds a batch of usage counts and last-used times.
	RecordUsage(ctx context.Context, batch []Usage) error
	// KeyUsage returns the hourly counts of a key since the given time.
	KeyUsage(ctx context.Context, id string, since time.Time) ([]HourlyUsage, error)
	// KeyUsageTotals returns the UsageTotals at now of the keys with these
	// ids, in one query; a key with no checks in 30 days, or no such key,
	// has none in the map.
	KeyUsageTotals(ctx context.Context, ids []string, now time.Time) (map[string]UsageTotals, error)
	// RevokeSession records a logged-out session, with ev in the audit log.
	RevokeSession(ctx context.Context, r RevokedSession, ev *AuditEvent) error
	// FirstDelivery records a webhook delivery id and reports whether it is
	// new; a replay or retry of a processed delivery reports false. Ids
	// older than keep are pruned.
	FirstDelivery(ctx context.Context, id string, keep time.Duration) (bool, error)
	// ForgetDelivery forgets a delivery id FirstDelivery recorded, for a
	// delivery whose processing did not complete: its retry is then
	// processed again rather than taken for a replay.
	ForgetDelivery(ctx context.Context, id string) error
	// AppendAudit writes one audit event on its own.
	AppendAudit(ctx context.Context, ev AuditEvent) error
	// ListAudit returns a page of audit events, newest first.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, string, error)
	// RevokedSessions returns revocations made at or after since that have
	// not expired at now.
	RevokedSessions(ctx context.Context, since, now time.Time) ([]RevokedSession, error)
	// PruneRevokedSessions deletes revocations that expired before now.
	PruneRevokedSessions(ctx context.Context, now time.Time) (int64, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
}

// AuditEvent is one entry of the audit log (docs/CONTRACT.md, audit log). It never holds a
// secret: keys appear by id and hint only.
type AuditEvent struct {
	ID        int64          `json:"id"`
	At        time.Time      `json:"at"`
	Actor     string         `json:"actor"`
	Action    string         `json:"action"`
	Target    string         `json:"target"`
	Owner     string         `json:"owner,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}

// Prepare fills in the target and owner of ev, written for target, owned by
// owner, where ev names none, and returns the details to store: never nil.
// The stores call it on every event they write.
func (ev *AuditEvent) Prepare(target, owner string) map[string]any {
	if ev.Target == "" {
		ev.Target = target
	}
	if ev.Owner == "" {
		ev.Owner = owner
	}
	if ev.Details == nil {
		return map[string]any{}
	}
	return ev.Details
}

// PageLimit is the size of a page of keys or audit events asked for as
// limit: 50 when it is not positive, at most 1000.
func PageLimit(limit int) int {
	if limit <= 0 {
		return 50
	}
	return min(limit, 1000)
}

// The audit actions.
const (
	ActionKeyCreated     = "key.created"
	ActionKeyRolled      = "key.rolled"
	ActionKeyRevoked     = "key.revoked"
	ActionKeyUpdated     = "key.updated"
	ActionKeyDisabled    = "key.disabled"
	ActionKeyEnabled     = "key.enabled"
	ActionSessionRevoked = "session.revoked"
)

// AuditFilter selects audit events. Empty fields match everything.
type AuditFilter struct {
	Owners       []string // any of these tenants
	Actor        string
	Action       string
	Target       string
	Since, Until time.Time
	Limit        int    // 1..1000, default 50
	Cursor       string // from the previous page
}

// Usage is one batch entry: a key's checks in one hour, and its latest use.
type Usage struct {
	KeyID    string
	Hour     time.Time // truncated to the hour, UTC
	Count    int64
	LastUsed time.Time
}

// HourlyUsage is a key's number of checks in one hour.
type HourlyUsage struct {
	Hour  time.Time `json:"hour"`
	Count int64     `json:"count"`
}

// RevokedSession is a logged-out session: every token carrying its id is
// refused until ExpiresAt.
type RevokedSession struct {
	SessionID string    `json:"session_id"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Reason    string    `json:"reason,omitempty"`
}

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

// ValidSessionID reports whether s can be a session id (Clerk: sess_...).
func ValidSessionID(s string) bool { return sessionIDPattern.MatchString(s) }

// NewKeyID returns a public key id: key_ and 20 base62 characters.
func NewKeyID() (string, error) {
	const n = 20
	buf := make([]byte, 4+n)
	copy(buf, "key_")
	var rnd [32]byte
	for i := 4; i < len(buf); {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", err
		}
		for _, b := range rnd {
			if b < 248 && i < len(buf) {
				buf[i] = base62Alphabet[b%62]
				i++
			}
		}
	}
	return string(buf), nil
}
