package credential

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseBearer(t *testing.T) {
	type result struct{ Token, Reason string }
	tests := map[string]result{
		"Bearer abc":           {"abc", ""},
		"bearer\tabc":          {"abc", ""},
		"  BEARER \t abc  ":    {"abc", ""},
		"Bearerabc":            {"", ReasonNotBearer},
		"Bearer":               {"", ReasonNotBearer},
		"Bearer   ":            {"", ReasonNotBearer},
		"Basic abc":            {"", ReasonNotBearer},
		"Bearer a b":           {"", ReasonNonPrintable},
		"Bearer a,Bearer b":    {"", ReasonNonPrintable},
		"Bearer \x00":          {"", ReasonNonPrintable},
		"Bearer é":             {"", ReasonNonPrintable},
		"Bearer " + long(9000): {"", ReasonOversized},
	}
	got := map[string]result{}
	for in := range tests {
		tok, reason := ParseBearer(in)
		got[in] = result{tok, reason}
	}
	if diff := cmp.Diff(tests, got); diff != "" {
		t.Errorf("ParseBearer (-want, +got):\n%s", diff)
	}
	if tok, reason := ParseAPIKey(" \todin_sk_x "); tok != "odin_sk_x" || reason != "" {
		t.Errorf("ParseAPIKey = %q, %q", tok, reason)
	}
	if _, reason := ParseAPIKey("   "); reason != ReasonEmpty {
		t.Errorf("ParseAPIKey of spaces: reason %q, want %q", reason, ReasonEmpty)
	}
}

func long(n int) string { return strings.Repeat("a", n) }

// printableBytes is the plain rule printable implements eight bytes at a
// time: every byte from '!' to '~'.
func printableBytes(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// TestPrintableEveryByteAtEveryPosition puts each of the 256 byte values at
// each position of printable strings of every length up to 24 (three words
// and a tail), and checks the word-at-a-time check against the byte loop.
func TestPrintableEveryByteAtEveryPosition(t *testing.T) {
	for n := 1; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for b := 0; b < 256; b++ {
				buf := []byte(strings.Repeat("a", n))
				buf[pos] = byte(b)
				v := string(buf)
				if got, want := printable(v), printableBytes(v); got != want {
					t.Fatalf("printable(%q) = %v, want %v (byte %#x at %d of %d)", v, got, want, b, pos, n)
				}
			}
		}
	}
	// Two bytes at once: a borrow or carry from one byte must not hide or
	// fake another's.
	edges := []byte{0x00, 0x1f, 0x20, 0x21, 0x22, 0x7d, 0x7e, 0x7f, 0x80, 0xa0, 0xfe, 0xff}
	for _, a := range edges {
		for _, b := range edges {
			for pa := 0; pa < 8; pa++ {
				for pb := 0; pb < 8; pb++ {
					buf := []byte("abcdefgh")
					buf[pa], buf[pb] = a, b
					v := string(buf)
					if got, want := printable(v), printableBytes(v); got != want {
						t.Fatalf("printable(%q) = %v, want %v", v, got, want)
					}
				}
			}
		}
	}
}

// FuzzPrintable checks the word-at-a-time check against the byte loop.
func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"", "a", "abcdefgh", "eyJhbGciOiJSUzI1NiJ9.e30.sig", "odin_sk_\x7f", "abc def", "\xff\xfe", "abcdefg~!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got, want := printable(v), printableBytes(v); got != want {
			t.Fatalf("printable(%q) = %v, want %v", v, got, want)
		}
	})
}

func BenchmarkCheckPrintable(b *testing.B) {
	token := strings.Repeat("eyJhbGciOiJSUzI1NiIsImtpZCI6Imluc18x", 24) // a session token's length
	b.SetBytes(int64(len(token)))
	for b.Loop() {
		if CheckPrintable(token) != "" {
			b.Fatal("refused")
		}
	}
}
