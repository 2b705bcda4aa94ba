package console

import (
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/admin"
)

// A session lasts its lifetime from sign-in, not a moment more; ending it
// makes its cookie worthless; past the cap the one closest to its end goes.
func TestSessions(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	s := newSessions(10*time.Minute, 2)
	id, se := s.create(admin.Principal{UserID: "user_a"}, now)
	if len(id) < 43 || se.csrf == "" || se.csrf == id {
		t.Fatalf("session id %q, csrf %q", id, se.csrf)
	}
	if got := s.get(id, now.Add(10*time.Minute-time.Second)); got != se {
		t.Fatal("a live session was not found")
	}
	if s.get(id, now.Add(10*time.Minute)) != nil {
		t.Fatal("a session outlived its lifetime")
	}
	if s.get("", now) != nil || s.get("forged", now) != nil {
		t.Fatal("an empty or unknown cookie found a session")
	}
	a, _ := s.create(admin.Principal{UserID: "a"}, now)
	s.end(a)
	if s.get(a, now) != nil {
		t.Fatal("an ended session is still there")
	}
	first, _ := s.create(admin.Principal{UserID: "1"}, now)
	second, _ := s.create(admin.Principal{UserID: "2"}, now.Add(time.Minute))
	third, _ := s.create(admin.Principal{UserID: "3"}, now.Add(2*time.Minute))
	if s.get(first, now.Add(2*time.Minute)) != nil || s.get(second, now.Add(2*time.Minute)) == nil || s.get(third, now.Add(2*time.Minute)) == nil {
		t.Fatal("past the cap, the session closest to its end was not the one dropped")
	}
}

// A one-time link signs in once, within its lifetime.
func TestSignInLinks(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	s := newSessions(time.Minute, 10)
	l := s.newLink(admin.OperatorPrincipal(), 15*time.Minute, now)
	if p, ok := s.useLink(l, now.Add(time.Minute)); !ok || !p.Operator {
		t.Fatalf("a fresh link: %v %+v", ok, p)
	}
	if _, ok := s.useLink(l, now.Add(time.Minute)); ok {
		t.Fatal("a link worked twice")
	}
	old := s.newLink(admin.OperatorPrincipal(), 15*time.Minute, now)
	if _, ok := s.useLink(old, now.Add(15*time.Minute)); ok {
		t.Fatal("an expired link worked")
	}
	if _, ok := s.useLink("forged", now); ok {
		t.Fatal("an unknown link worked")
	}
}

func TestEqual(t *testing.T) {
	if equal("", "") || equal("a", "") || equal("", "a") || equal("a", "b") || !equal("abc", "abc") {
		t.Fatal("equal is wrong")
	}
}
