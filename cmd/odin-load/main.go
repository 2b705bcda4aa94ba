// Command odin-load is the load-test harness of Odin authz: it measures
// `odin authz` against a do-nothing ext_authz baseline under the same load
// (gRPC Check through the ghz runner, HTTP forward-auth through vegeta) and
// reports each figure as a ratio to the baseline. See BENCHMARKS.md.
//
// It is a binary of its own so that `odin` does not carry the load
// generators and their dependencies.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/odin-scan/odin-authz/internal/cmdmain"
)

const usage = `odin-load: load tests for Odin authz, every figure against a baseline.

Usage: odin-load <command> [flags]

Commands:
  run        seed, start the servers, run the scenarios, print the report (odin-load run -h)
  seed       create, migrate and seed the load database only (odin-load seed -h)
  baseline   serve the do-nothing ext_authz baseline (started by run itself)
  capacity   size a deployment from run reports: replicas, Redis, PostgreSQL, memory (odin-load capacity -h)
`

func main() { cmdmain.Main("odin-load", run) }

// run dispatches a command line. Only main exits.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	command, err := cmdmain.Command(args, usage, stderr)
	if err != nil {
		return err
	}
	switch command {
	case "run":
		return runLoad(ctx, args[1:], stdout, stderr)
	case "seed":
		return runSeed(ctx, args[1:], stderr)
	case "baseline":
		return runBaseline(ctx, args[1:], stderr)
	case "capacity":
		return runCapacity(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", command)
}
