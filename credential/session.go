package credential

import (
	"context"
	"errors"
	"time"

	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// Verdict is the answer of an admission check.
type Verdict uint8

// The verdicts: a session is admitted, refused (401), or cannot be judged
// because the revoked sessions are unknown (503, never an allow).
const (
	Admitted Verdict = iota
	Refused
	Unavailable
)

// The reasons a verified session token is not admitted. They are logged
// and used as trace attributes; none contains a claim's value.
const (
	// ReasonNoSessionID: the token has no sid, so it could never be logged
	// out (refused unless Admission.AllowNoSessionID).
	ReasonNoSessionID = "jwt_no_sid"
	// ReasonNoIssuedAt: the token has neither iat nor nbf, so its lifetime,
	// and whether it can outlive a revocation record, is unknown.
	ReasonNoIssuedAt = "jwt_no_iat"
	// ReasonLifetimeTooLong: the token lives longer than a revocation is
	// remembered, so it could outlive its session's logout.
	ReasonLifetimeTooLong = "jwt_lifetime_too_long"
	// ReasonSessionRevoked: the session was logged out.
	ReasonSessionRevoked = "session_revoked"
	// ReasonSessionsUnavailable: the revoked sessions were never loaded.
	ReasonSessionsUnavailable = "sessions_unavailable"
)

// Verify checks a session token's signature and claims with v. A token
// that is not valid is Refused; a verification that could not be made (the
// key set is unavailable, or the caller gave up) is Unavailable, never
// Refused, so an outage does not look like a bad token. The reason is
// "jwt_" and jwtauth.Reason. A verified token is Admitted by this step
// only: its session still has to pass Admission.Admit.
func Verify(ctx context.Context, v *jwtauth.Verifier, token string) (*jwtauth.Session, Verdict, string) {
	s, err := v.Verify(ctx, token)
	switch {
	case errors.Is(err, jwtauth.ErrInvalidToken):
		return nil, Refused, "jwt_" + jwtauth.Reason(err)
	case err != nil:
		return nil, Unavailable, "jwt_" + jwtauth.Reason(err)
	}
	return s, Admitted, ""
}

// Admission is the one rule by which odin authz and odin admin accept a
// session token that jwtauth verified: it must name its session (sid), so
// that logging the session out can refuse it; its lifetime, counted from
// iat (else nbf), must not exceed how long a revocation is remembered, so
// that no token outlives its session's revocation record; and its session
// must not be logged out.
type Admission struct {
	// Revoked is this process's copy of the logged-out sessions.
	Revoked *keystore.RevokedSessions
	// AllowNoSessionID admits tokens without sid, for issuers that have no
	// sessions. Such a token cannot be logged out: it works until its exp.
	AllowNoSessionID bool
}

// Admit judges a session that was just verified (first sight): the claim
// rules, then the revoked set, then the Redis mirror of revocations, which
// catches a logout whose bus message this process has not received yet.
func (a *Admission) Admit(ctx context.Context, s *jwtauth.Session, now time.Time) (Verdict, string) {
	return a.AdmitRead(ctx, s, now, keystore.MirrorRead{})
}

// AdmitRead is Admit with the Redis mirror's answer read ahead of the
// verification (keystore.RevokedSessions.ReadWithMirror): used when it is
// about s's session, so that a first sight costs no round trip of its own
// for the mirror; otherwise the mirror is asked as Admit does.
func (a *Admission) AdmitRead(ctx context.Context, s *jwtauth.Session, now time.Time, m keystore.MirrorRead) (Verdict, string) {
	if s.SessionID == "" && !a.AllowNoSessionID {
		return Refused, ReasonNoSessionID
	}
	issued := s.IssuedAt
	if issued.IsZero() {
		issued = s.NotBefore
	}
	if issued.IsZero() {
		return Refused, ReasonNoIssuedAt
	}
	if s.Expiry.Sub(issued) > a.Revoked.Retention() {
		return Refused, ReasonLifetimeTooLong
	}
	if v, reason := a.Recheck(s.SessionID, now); v != Admitted {
		return v, reason
	}
	if s.SessionID != "" && a.Revoked.CheckMirrorRead(ctx, s.SessionID, m, now) {
		return Refused, ReasonSessionRevoked
	}
	return Admitted, ""
}

// Recheck judges a session admitted before (a cached verification) on a
// new request: whether it has been logged out since. It is a read-locked
// map lookup, cheap enough for every request.
func (a *Admission) Recheck(sid string, now time.Time) (Verdict, string) {
	revoked, err := a.Revoked.IsRevoked(sid, now)
	switch {
	case err != nil:
		return Unavailable, ReasonSessionsUnavailable
	case revoked:
		return Refused, ReasonSessionRevoked
	}
	return Admitted, ""
}
