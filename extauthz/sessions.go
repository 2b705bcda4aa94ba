package extauthz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// SessionOptions configure the session cache. Zero values take the defaults.
type SessionOptions struct {
	// TTL caps how long a verified token is cached (SPEC §5: 15 minutes, or
	// until the token's exp, whichever is sooner).
	TTL time.Duration
	// Size is the LRU's number of entries, default 100000.
	Size int
	// Leeway is the clock skew allowed on exp, the verifier's.
	Leeway time.Duration
	// DefaultScopes are the scopes of a token that carries no permissions
	// (a personal account without an organisation).
	DefaultScopes []string
}

// Sessions authenticates Clerk session JWTs: a verified token is cached
// (LRU, then Redis) keyed by a hash of the token — never the token — so
// repeated requests skip signature verification; every hit still checks the
// token's expiry and whether its session was logged out.
type Sessions struct {
	verifier *jwtauth.Verifier
	revoked  *keystore.RevokedSessions
	redis    *keystore.Redis // optional
	lru      *lru.Cache[[sha256.Size]byte, *sessionEntry]
	opts     SessionOptions
	hits     [3]prometheus.Counter // lru, redis, verified
}

// sessionEntry is a verified token.
type sessionEntry struct {
	principal *Principal
	deadline  time.Time // exp plus leeway: refused from then on
	until     time.Time // cached until
}

// NewSessions builds the session cache. redis may be nil; reg may be nil.
func NewSessions(v *jwtauth.Verifier, revoked *keystore.RevokedSessions, redis *keystore.Redis, opts SessionOptions, reg prometheus.Registerer) (*Sessions, error) {
	if opts.TTL <= 0 {
		opts.TTL = 15 * time.Minute
	}
	if opts.Size <= 0 {
		opts.Size = 100_000
	}
	l, err := lru.New[[sha256.Size]byte, *sessionEntry](opts.Size)
	if err != nil {
		return nil, err
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_authz_session_lookups_total",
		Help: "Session token checks by the tier that answered: lru, redis, verified (signature checked).",
	}, []string{"tier"})
	if err := reg.Register(hits); err != nil {
		return nil, err
	}
	s := &Sessions{verifier: v, revoked: revoked, redis: redis, lru: l, opts: opts}
	for i, t := range []string{"lru", "redis", "verified"} {
		s.hits[i] = hits.WithLabelValues(t)
	}
	return s, nil
}

// Ready reports whether JWTs can be answered: a key set is loaded and the
// revoked sessions are known.
func (s *Sessions) Ready() bool { return s.verifier.Ready() && s.revoked.Loaded() }

// authenticate fills d for a bearer token that is not an API key.
func (s *Sessions) authenticate(ctx context.Context, d *Decision, token string, now time.Time) {
	// Hash the token's bytes in place: a []byte(token) copy would allocate
	// on every request, and Sum256 only reads.
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	e, ok := s.lru.Get(h)
	if ok && now.Before(e.until) {
		s.hits[0].Inc()
	} else {
		var reason string
		var outcome Outcome
		if e, outcome, reason = s.load(ctx, h, token, now); e == nil {
			d.Outcome, d.Reason = outcome, reason
			return
		}
	}
	if !now.Before(e.deadline) {
		d.Outcome, d.Reason = DenyUnauthorized, "jwt_expired"
		return
	}
	revoked, err := s.revoked.IsRevoked(e.principal.SessionID, now)
	switch {
	case err != nil:
		d.Outcome, d.Reason = DenyUnavailable, "sessions_unavailable"
	case revoked:
		d.Outcome, d.Reason = DenyUnauthorized, "session_revoked"
	default:
		d.Outcome, d.Principal = Allow, e.principal
	}
}

// load finds a token in Redis or verifies it, and caches the result.
func (s *Sessions) load(ctx context.Context, h [sha256.Size]byte, token string, now time.Time) (*sessionEntry, Outcome, string) {
	name := "jwt:" + hex.EncodeToString(h[:])
	if s.redis != nil {
		if raw, ok := s.redis.GetRaw(ctx, name); ok {
			if e := decodeSession(raw); e != nil && now.Before(e.until) {
				s.hits[1].Inc()
				s.lru.Add(h, e)
				return e, Allow, ""
			}
		}
	}
	sess, err := s.verifier.Verify(ctx, token)
	switch {
	case errors.Is(err, jwtauth.ErrInvalidToken):
		return nil, DenyUnauthorized, "jwt_" + jwtauth.Reason(err)
	case err != nil: // key set unavailable, or the caller gave up
		return nil, DenyUnavailable, "jwt_" + jwtauth.Reason(err)
	}
	s.hits[2].Inc()
	// A revocation record lives Retention; a longer-lived token could
	// outlive it, so such tokens are refused outright.
	issued := sess.IssuedAt
	if issued.IsZero() {
		issued = now
	}
	if sess.Expiry.Sub(issued) > s.revoked.Retention() {
		return nil, DenyUnauthorized, "jwt_lifetime_too_long"
	}
	if sess.SessionID != "" && s.revoked.CheckMirror(ctx, sess.SessionID, now) {
		return nil, DenyUnauthorized, "session_revoked"
	}
	e := &sessionEntry{
		principal: NewPrincipal(Identity{
			Method: "jwt", Subject: sess.Subject, OrgID: sess.OrgID, SessionID: sess.SessionID,
			Scopes: orDefault(sess.Permissions, s.opts.DefaultScopes), Tier: sess.Tier,
		}),
		deadline: sess.Expiry.Add(s.opts.Leeway),
		until:    now.Add(s.opts.TTL),
	}
	if e.deadline.Before(e.until) {
		e.until = e.deadline
	}
	s.lru.Add(h, e)
	if s.redis != nil {
		if raw, err := encodeSession(e); err == nil {
			s.redis.SetRaw(ctx, name, raw, e.until.Sub(now))
		}
	}
	return e, Allow, ""
}

// cachedSession is the Redis form of a verified token: the identity, not the
// token.
type cachedSession struct {
	Identity Identity `json:"identity"`
	Deadline int64    `json:"deadline"`
	Until    int64    `json:"until"`
}

func encodeSession(e *sessionEntry) ([]byte, error) {
	return json.Marshal(cachedSession{Identity: e.principal.Identity, Deadline: e.deadline.UnixNano(), Until: e.until.UnixNano()})
}

func decodeSession(raw []byte) *sessionEntry {
	var c cachedSession
	if json.Unmarshal(raw, &c) != nil || c.Identity.Method != "jwt" || c.Identity.Subject == "" {
		return nil
	}
	return &sessionEntry{principal: NewPrincipal(c.Identity), deadline: time.Unix(0, c.Deadline), until: time.Unix(0, c.Until)}
}

func orDefault(scopes, def []string) []string {
	if len(scopes) == 0 {
		return def
	}
	return scopes
}
