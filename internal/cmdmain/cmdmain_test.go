package cmdmain

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type codedError struct{ code int }

func (e *codedError) Error() string { return fmt.Sprintf("coded %d", e.code) }
func (e *codedError) ExitCode() int { return e.code }

func TestExit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"success", nil, 0, ""},
		{"help", fmt.Errorf("keys list: %w", flag.ErrHelp), 0, ""},
		{"failure", errors.New("boom"), 1, "tool: boom\n"},
		{"coded", fmt.Errorf("keys revoke: %w", &codedError{3}), 3, "tool: keys revoke: coded 3\n"},
	} {
		var stderr bytes.Buffer
		code := Exit(tc.err, "tool", &stderr)
		if code != tc.wantCode || stderr.String() != tc.wantStderr {
			t.Errorf("%s: Exit = %d, stderr %q; want %d, %q", tc.name, code, stderr.String(), tc.wantCode, tc.wantStderr)
		}
	}
}

func TestCommand(t *testing.T) {
	type result struct {
		Command, Err, Stderr string
		Help                 bool
	}
	for _, tc := range []struct {
		args []string
		want result
	}{
		{nil, result{Err: "no command given", Stderr: "usage\n"}},
		{[]string{"-h"}, result{Err: flag.ErrHelp.Error(), Stderr: "usage\n", Help: true}},
		{[]string{"--help", "x"}, result{Err: flag.ErrHelp.Error(), Stderr: "usage\n", Help: true}},
		{[]string{"help"}, result{Err: flag.ErrHelp.Error(), Stderr: "usage\n", Help: true}},
		{[]string{"keys", "-h"}, result{Command: "keys"}},
	} {
		var stderr bytes.Buffer
		cmd, err := Command(tc.args, "usage\n", &stderr)
		got := result{Command: cmd, Stderr: stderr.String(), Help: errors.Is(err, flag.ErrHelp)}
		if err != nil {
			got.Err = err.Error()
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Command(%q) (-want, +got):\n%s", tc.args, diff)
		}
	}
}
