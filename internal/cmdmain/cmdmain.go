// Package cmdmain is what the main packages of odin and odin-load share: a
// command line run under a context that SIGINT and SIGTERM cancel, its
// command read or its usage shown, and its error made an exit code.
package cmdmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main runs run with the command line under a context cancelled on SIGINT
// and SIGTERM, and exits as Exit says.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code := Exit(err, name, os.Stderr); code != 0 {
		os.Exit(code)
	}
}

// Exit is the exit code of a command that returned err: 0 for nil and
// flag.ErrHelp; otherwise, with "name: err" printed to stderr, the code of
// an error with an ExitCode method (odin check: 1 denied, 2 error; a change
// not confirmed on every replica: 3), else 1.
func Exit(err error, name string, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, name+":", err)
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	return 1
}

// Command returns the command args name. With no command it shows usage on
// stderr and returns the error "no command given"; asked for help (-h,
// --help, help), it shows usage and returns flag.ErrHelp.
func Command(args []string, usage string, stderr io.Writer) (string, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return "", errors.New("no command given")
		}
		return "", flag.ErrHelp
	}
	return args[0], nil
}
