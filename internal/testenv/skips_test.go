package testenv

import (
	"strings"
	"testing"
)

// A skipped suite is summed up in one loud line per reason, with its count,
// and nothing is printed when nothing was skipped.
func TestSkipSummary(t *testing.T) {
	var l skipLog
	if got := l.summary("./test/e2e"); got != "" {
		t.Fatalf("summary of no skips = %q, want empty", got)
	}
	l.add("NGINX not found (set ODIN_TEST_NGINX, or put it on PATH)")
	l.add("Caddy not found\nsecond line")
	l.add("NGINX not found (set ODIN_TEST_NGINX, or put it on PATH)")
	want := "*** ./test/e2e: 2 test(s) SKIPPED: NGINX not found (set ODIN_TEST_NGINX, or put it on PATH)\n" +
		"*** ./test/e2e: 1 test(s) SKIPPED: Caddy not found second line\n"
	if got := l.summary("./test/e2e"); got != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
	if strings.Count(want, "\n") != 2 {
		t.Fatal("one line per reason")
	}
}
