package keystore

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const (
	testSecret  = "0123456789abcdef0123456789abcdef-current"
	otherSecret = "0123456789abcdef0123456789abcdef-other"
)

func mustMAC(t testing.TB, current, previous string) *entryMAC {
	t.Helper()
	m, err := newEntryMAC(current, previous)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A sealed value opens under its own name and secret only: any change to
// the version, the MAC, the payload or the name is refused, as is a value
// sealed with another secret or one never sealed (what a writer without the
// secret can put in Redis).
func TestEntryMACRefusesTampering(t *testing.T) {
	m := mustMAC(t, testSecret, "")
	const name = "odin:key:aaaa"
	payload := []byte(`{"k":{"id":"key_1","scopes":["scans:read"]},"u":1,"w":1}`)
	sealed := m.seal(name, payload)
	if got, ok := m.open(name, sealed); !ok || !bytes.Equal(got, payload) {
		t.Fatalf("open(seal) = %q, %v; want the payload", got, ok)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name, key string
		raw       []byte
	}{
		{"version byte", name, flip(0)},
		{"MAC", name, flip(5)},
		{"payload", name, flip(len(sealed) - 3)},
		{"copied under another name", "odin:key:bbbb", sealed},
		{"another prefix", "other:key:aaaa", sealed},
		{"name bytes moved into the payload", "odin:key:aaa", append([]byte{}, sealed...)},
		{"plain JSON, as written before", name, payload},
		{"sealed with another secret", name, mustMAC(t, otherSecret, "").seal(name, payload)},
		{"truncated", name, sealed[:20]},
		{"empty", name, nil},
	} {
		if got, ok := m.open(tc.key, tc.raw); ok {
			t.Errorf("%s: opened (%q); want refused", tc.name, got)
		}
	}
}

// During a rotation the previous secret is still accepted on read, and
// every write uses the current one.
func TestEntryMACRotation(t *testing.T) {
	const name = "odin:jwt:00"
	payload := []byte(`{}`)
	old := mustMAC(t, otherSecret, "")
	rotating := mustMAC(t, testSecret, otherSecret)
	if _, ok := rotating.open(name, old.seal(name, payload)); !ok {
		t.Error("an entry sealed with the previous secret is refused during the rotation")
	}
	if _, ok := old.open(name, rotating.seal(name, payload)); ok {
		t.Error("a rotating process sealed with the previous secret; want the current one")
	}
	if _, ok := mustMAC(t, testSecret, "").open(name, old.seal(name, payload)); ok {
		t.Error("the previous secret is accepted after the rotation ended")
	}
}

func TestEntryMACSecretLength(t *testing.T) {
	for _, tc := range []struct{ current, previous string }{
		{"", ""},
		{strings.Repeat("x", MinMACSecret-1), ""},
		{testSecret, "short"},
	} {
		if _, err := newEntryMAC(tc.current, tc.previous); err == nil {
			t.Errorf("newEntryMAC(%d bytes, %d bytes) accepted; want an error", len(tc.current), len(tc.previous))
		}
	}
	if _, err := OpenRedis(RedisOptions{URL: "redis://127.0.0.1:6379/0"}, NewMetrics(nil), nil); !errors.Is(err, ErrMACSecret) {
		t.Errorf("OpenRedis without a MAC secret: %v, want ErrMACSecret", err)
	}
	if _, err := OpenRedis(RedisOptions{URL: "redis://127.0.0.1:6379/0", MACSecret: "too-short"}, NewMetrics(nil), nil); !errors.Is(err, ErrMACSecret) {
		t.Errorf("OpenRedis with a short MAC secret: %v, want ErrMACSecret", err)
	}
	if _, err := newEntryMAC(strings.Repeat("x", MinMACSecret), ""); err != nil {
		t.Errorf("a secret of exactly %d bytes: %v", MinMACSecret, err)
	}
}

// A secret never shows in the errors about it.
func TestEntryMACErrorsHideSecret(t *testing.T) {
	_, err := newEntryMAC("not-long-enough-secret", "")
	if err == nil || strings.Contains(err.Error(), "not-long-enough-secret") {
		t.Errorf("error %v; want one that does not quote the secret", err)
	}
}

// BenchmarkEntryMACOpen is the verification of one cached key record, the
// work the MAC adds to every Redis-tier hit.
func BenchmarkEntryMACOpen(b *testing.B) {
	m := mustMAC(b, testSecret, "")
	name := "odin:key:" + strings.Repeat("ab", 32)
	payload := []byte(`{"k":{"id":"key_01JBENCHMARK000000000000","user_id":"user_bench","name":"bench","hint":"odin_sk_AbCd…wxyz","scopes":["scans:read","scans:write"],"tier":"pro","created_at":"2026-01-01T00:00:00Z"},"u":1767225600000000000,"w":1767225570000000000}`)
	sealed := m.seal(name, payload)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := m.open(name, sealed); !ok {
			b.Fatal("refused")
		}
	}
}

// BenchmarkEntryMACSeal is the sealing of the same record, on every write.
func BenchmarkEntryMACSeal(b *testing.B) {
	m := mustMAC(b, testSecret, "")
	name := "odin:key:" + strings.Repeat("ab", 32)
	payload := bytes.Repeat([]byte("x"), 260)
	b.ReportAllocs()
	for b.Loop() {
		m.seal(name, payload)
	}
}
