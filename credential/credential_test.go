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
