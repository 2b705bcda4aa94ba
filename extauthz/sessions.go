package extauthz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/credential"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// DefaultSessionTTL caps how long a verified token is cached by default.
const DefaultSessionTTL = 15 * time.Minute

// DefaultSessionScopes are the scopes odin authz gives a session token that
// carries no permissions unless configured otherwise: read and write, full
// access under the built-in default policy.
func DefaultSessionScopes() []string { return []string{"read", "write"} }

// SessionOptions configure the session cache. Zero values take the defaults.
type SessionOptions struct {
	// TTL caps how long a verified token is cached (docs/CONTRACT.md (sessions): 15 minutes, or
	// until the token's exp, whichever is sooner).
	TTL time.Duration
	// Size is the LRU's number of entries, default 100000.
	Size int
	// Leeway is the clock skew allowed on exp, the verifier's.
	Leeway time.Duration
	// DefaultScopes are the scopes of a token that carries no permissions
	// (a personal account without an organisation).
	DefaultScopes []string
	// AllowNoSessionID admits tokens without sid (credential.Admission).
	AllowNoSessionID bool
	// WriteQueue is how many verified sessions may wait to be written to
	// Redis, default 4096; more are not cached there (and counted).
	WriteQueue int
}

// minRedisSessionTTL is the least time a verified session has left for it
// to be written to Redis: a token about to expire (Clerk's live a minute)
// would be gone before another replica could use the entry.
const minRedisSessionTTL = 5 * time.Second

// Sessions authenticates Clerk session JWTs: a verified token is cached
// (LRU, then Redis) keyed by a hash of the token — never the token — so
// repeated requests skip signature verification; every hit still checks the
// token's expiry, that the key which verified it is still in the JWKS, and
// whether its session was logged out. Admission is odin admin's rule too.
type Sessions struct {
	verifier  *jwtauth.Verifier
	revoked   *keystore.RevokedSessions
	admission credential.Admission
	redis     *keystore.Redis     // optional
	writer    *keystore.RawWriter // writes verified sessions to redis, off the request path
	lru       *lru.Cache[[sha256.Size]byte, *sessionEntry]
	opts      SessionOptions
	hits      [3]prometheus.Counter // lru, redis, verified
}

// sessionEntry is a verified token.
type sessionEntry struct {
	principal  *Principal
	signingKey string    // jwtauth.Session.SigningKey: the entry is void once the JWKS drops it
	deadline   time.Time // exp plus leeway: refused from then on
	until      time.Time // cached until
}

// NewSessions builds the session cache. redis may be nil; reg may be nil.
func NewSessions(v *jwtauth.Verifier, revoked *keystore.RevokedSessions, redis *keystore.Redis, opts SessionOptions, reg prometheus.Registerer) (*Sessions, error) {
	if opts.TTL <= 0 {
		opts.TTL = DefaultSessionTTL
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
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "odin_authz_session_cache_writes_dropped_total",
		Help: "Verified sessions not written to Redis: the write queue was full, or Redis unavailable or failing.",
	})
	if err := reg.Register(dropped); err != nil {
		return nil, err
	}
	s := &Sessions{verifier: v, revoked: revoked, redis: redis, lru: l, opts: opts,
		admission: credential.Admission{Revoked: revoked, AllowNoSessionID: opts.AllowNoSessionID}}
	if redis != nil {
		s.writer = redis.NewRawWriter(keystore.RawWriterOptions{Capacity: opts.WriteQueue, Dropped: dropped})
	}
	for i, t := range []string{"lru", "redis", "verified"} {
		s.hits[i] = hits.WithLabelValues(t)
	}
	return s, nil
}

// Ready reports whether JWTs can be answered: a key set is loaded and the
// revoked sessions are known.
func (s *Sessions) Ready() bool { return s.verifier.Ready() && s.revoked.Loaded() }

var _ Authenticator = (*Sessions)(nil)

// Authenticate implements Authenticator for a bearer token that is not an
// API key.
func (s *Sessions) Authenticate(ctx context.Context, token string, now time.Time) Authentication {
	var wait time.Duration // for Redis, summed by load
	a := s.authenticate(ctx, token, now, &wait)
	a.StoreWait = wait
	return a
}

func (s *Sessions) authenticate(ctx context.Context, token string, now time.Time, wait *time.Duration) Authentication {
	// Hash the token's bytes in place: a []byte(token) copy would allocate
	// on every request, and Sum256 only reads.
	h := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	e, ok := s.lru.Get(h)
	admitted := false // the admission rule ran just now, revoked-session check included
	if ok && now.Before(e.until) && s.verifier.HasSigningKey(e.signingKey) {
		s.hits[0].Inc()
	} else {
		// Missing, stale, or verified with a key the JWKS no longer holds:
		// such an entry is worth nothing, the token is judged afresh.
		var refusal Authentication
		if e, admitted, refusal = s.load(ctx, h, token, now, wait); e == nil {
			return refusal
		}
	}
	if !now.Before(e.deadline) {
		return denied(DenyUnauthorized, "jwt_expired")
	}
	if admitted {
		return allowed(e.principal)
	}
	v, reason := s.admission.Recheck(e.principal.SessionID, now)
	return fromVerdict(v, reason, e.principal)
}

// fromVerdict is the Authentication of an admission verdict: a refused
// session is a 401, one that cannot be judged a 503.
func fromVerdict(v credential.Verdict, reason string, p *Principal) Authentication {
	switch v {
	case credential.Admitted:
		return allowed(p)
	case credential.Refused:
		return denied(DenyUnauthorized, reason)
	}
	return denied(DenyUnavailable, reason)
}

// load finds a token in Redis or verifies it, and caches the result. A
// Redis entry, written by any replica, is used only when this replica's key
// set holds the key that verified it; otherwise the token is verified here,
// which refreshes the key set for a kid it does not know. admitted reports
// that the token was verified and admitted here (credential.Admission.Admit,
// whose revoked-session check the caller need not repeat); an entry from
// Redis still needs that check. When e is nil, refusal says why.
//
// A first sight costs one Redis round trip: the cached entry and the
// revoked-session mirror are read together, for the sid the token names
// before its signature is checked (the mirror's answer counts only if the
// verified token names the same sid); the verified session is written to
// Redis in the background (keystore.RawWriter).
func (s *Sessions) load(ctx context.Context, h [sha256.Size]byte, token string, now time.Time, wait *time.Duration) (e *sessionEntry, admitted bool, refusal Authentication) {
	name := "jwt:" + hex.EncodeToString(h[:])
	var mirror keystore.MirrorRead
	if s.redis != nil {
		began := time.Now()
		raw, ok, m := s.revoked.ReadWithMirror(ctx, s.redis, name, jwtauth.PeekSessionID(token))
		*wait += time.Since(began)
		if ok {
			if e := decodeSession(raw); e != nil && now.Before(e.until) && s.verifier.HasSigningKey(e.signingKey) {
				s.hits[1].Inc()
				s.lru.Add(h, e)
				return e, false, Authentication{}
			}
		}
		mirror = m
	}
	sess, v, reason := credential.Verify(ctx, s.verifier, token)
	if v != credential.Admitted {
		if v == credential.Refused { // an invalid token: whatever was cached for it goes
			s.lru.Remove(h)
		}
		return nil, false, fromVerdict(v, reason, nil)
	}
	s.hits[2].Inc()
	began := time.Now() // the mirror is read again when the verified sid is not the one peeked
	v, reason = s.admission.AdmitRead(ctx, sess, now, mirror)
	*wait += time.Since(began)
	if v != credential.Admitted {
		return nil, false, fromVerdict(v, reason, nil)
	}
	e = &sessionEntry{
		principal: NewPrincipal(Identity{
			Method: "jwt", Subject: sess.Subject, OrgID: sess.OrgID, SessionID: sess.SessionID,
			Scopes: orDefault(sess.Permissions, s.opts.DefaultScopes), Tier: sess.Tier, Actor: sess.Actor,
			Factors: sess.Factors,
		}),
		signingKey: sess.SigningKey,
		deadline:   sess.Expiry.Add(s.opts.Leeway),
		until:      now.Add(s.opts.TTL),
	}
	if e.deadline.Before(e.until) {
		e.until = e.deadline
	}
	s.lru.Add(h, e)
	if ttl := e.until.Sub(now); s.writer != nil && ttl >= minRedisSessionTTL {
		s.writer.Set(name, ttl, func() []byte {
			raw, err := encodeSession(e)
			if err != nil {
				return nil
			}
			return raw
		})
	}
	return e, true, Authentication{}
}

// FlushRedisWrites waits until the verified sessions queued for Redis have
// been written (or dropped): for tests, and for a drain that wants other
// replicas to find them.
func (s *Sessions) FlushRedisWrites() {
	if s.writer != nil {
		s.writer.Flush()
	}
}

// cachedSession is the Redis form of a verified token: the identity, not the
// token.
type cachedSession struct {
	Identity   Identity `json:"identity"`
	SigningKey string   `json:"signing_key"`
	Deadline   int64    `json:"deadline"`
	Until      int64    `json:"until"`
}

func encodeSession(e *sessionEntry) ([]byte, error) {
	return json.Marshal(cachedSession{Identity: e.principal.Identity, SigningKey: e.signingKey, Deadline: e.deadline.UnixNano(), Until: e.until.UnixNano()})
}

func decodeSession(raw []byte) *sessionEntry {
	var c cachedSession
	if json.Unmarshal(raw, &c) != nil || c.Identity.Method != "jwt" || c.Identity.Subject == "" {
		return nil
	}
	return &sessionEntry{principal: NewPrincipal(c.Identity), signingKey: c.SigningKey, deadline: time.Unix(0, c.Deadline), until: time.Unix(0, c.Until)}
}

func orDefault(scopes, def []string) []string {
	if len(scopes) == 0 {
		return def
	}
	return scopes
}
