package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"

	"github.com/odin-scan/odin-authz/admin"
)

// session is one signed-in browser: who signed in, the CSRF token its forms
// carry, and when it ends. It is kept in this process only: the cookie is
// a random identifier, and signing out deletes the state it names.
type session struct {
	principal admin.Principal
	csrf      string
	expires   time.Time
}

// sessions are the console's sessions and one-time sign-in links, keyed by
// the SHA-256 of their secret (a memory dump or a timing of the map does
// not give the cookie away).
type sessions struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int
	byID  map[[32]byte]*session
	links map[[32]byte]link
}

// link is a one-time sign-in link: used once, or not at all after expires.
type link struct {
	principal admin.Principal
	expires   time.Time
}

func newSessions(ttl time.Duration, max int) *sessions {
	return &sessions{ttl: ttl, max: max, byID: map[[32]byte]*session{}, links: map[[32]byte]link{}}
}

// randomToken is 256 bits from crypto/rand, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather than return short)
	return base64.RawURLEncoding.EncodeToString(b)
}

func digest(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// create starts a session for p and returns its cookie value and state.
// Past max live sessions, the oldest expiring ones make room.
func (s *sessions) create(p admin.Principal, now time.Time) (string, *session) {
	id := randomToken()
	se := &session{principal: p, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	for len(s.byID) >= s.max {
		var oldest [32]byte
		first := true
		for k, v := range s.byID {
			if first || v.expires.Before(s.byID[oldest].expires) {
				oldest, first = k, false
			}
		}
		delete(s.byID, oldest)
	}
	s.byID[digest(id)] = se
	return id, se
}

// get is the live session of a cookie value, nil when there is none.
func (s *sessions) get(id string, now time.Time) *session {
	if id == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.byID[digest(id)]
	if se == nil || !now.Before(se.expires) {
		delete(s.byID, digest(id))
		return nil
	}
	return se
}

// end deletes a session: its cookie is worthless from now on.
func (s *sessions) end(id string) {
	s.mu.Lock()
	delete(s.byID, digest(id))
	s.mu.Unlock()
}

// sweepLocked drops expired sessions and links.
func (s *sessions) sweepLocked(now time.Time) {
	for k, v := range s.byID {
		if !now.Before(v.expires) {
			delete(s.byID, k)
		}
	}
	for k, v := range s.links {
		if !now.Before(v.expires) {
			delete(s.links, k)
		}
	}
}

// newLink makes a one-time sign-in link secret for p, valid for ttl.
func (s *sessions) newLink(p admin.Principal, ttl time.Duration, now time.Time) string {
	secret := randomToken()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	s.links[digest(secret)] = link{principal: p, expires: now.Add(ttl)}
	return secret
}

// useLink consumes a one-time link: its principal, or false when it is
// unknown, used or expired.
func (s *sessions) useLink(secret string, now time.Time) (admin.Principal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := digest(secret)
	l, ok := s.links[d]
	delete(s.links, d)
	if !ok || !now.Before(l.expires) {
		return admin.Principal{}, false
	}
	return l.principal, true
}

// equal compares two secrets in constant time.
func equal(a, b string) bool {
	da, db := digest(a), digest(b)
	return a != "" && subtle.ConstantTimeCompare(da[:], db[:]) == 1
}
