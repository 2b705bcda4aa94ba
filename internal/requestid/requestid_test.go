package requestid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{
		"req-abc123":                           true,
		"0f8fad5b-d9cb-469f-a165-70867728950e": true,
		strings.Repeat("a", MaxLen):            true,
		"":                                     false,
		strings.Repeat("a", MaxLen+1):          false,
		"req abc":                              false,
		"req-\tabc":                            false,
		"req-\x00":                             false,
		"req-\x7f":                             false,
		"req-\xff":                             false,
		"req-é":                                false,
	} {
		if got := Valid(id); got != want {
			t.Errorf("Valid(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestFromHeader(t *testing.T) {
	if got := FromHeader("req-kept"); got != "req-kept" {
		t.Errorf("a valid id was replaced: %q", got)
	}
	a, b := FromHeader("bad\x01"), FromHeader("")
	if !Valid(a) || !Valid(b) || a == b || !strings.HasPrefix(a, "req-") || len(a) != len("req-")+24 {
		t.Errorf("fresh ids %q, %q", a, b)
	}
}

// FuzzFromHeader: whatever a client sends, the id used is valid, and it is
// the client's exactly when that one is valid.
func FuzzFromHeader(f *testing.F) {
	for _, s := range []string{"", "req-abc", "req-\xff", "a b", strings.Repeat("x", MaxLen+1), "\x00", "req-\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := FromHeader(in)
		if !Valid(got) {
			t.Fatalf("FromHeader(%q) = %q, not valid", in, got)
		}
		if (got == in) != Valid(in) {
			t.Fatalf("FromHeader(%q) = %q; Valid(in) = %v", in, got, Valid(in))
		}
	})
}
