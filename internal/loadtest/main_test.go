package loadtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/odin-scan/odin-authz/internal/testenv"
)

// childEnv is set in the environment of the test binary when a test starts
// it again as the baseline server.
const baselineChildEnv = "ODIN_LOAD_TEST_BASELINE_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(baselineChildEnv) == "1" {
		os.Exit(serveBaselineChild())
	}
	os.Exit(testenv.Main(m))
}

// serveBaselineChild is the test binary acting as `odin-load baseline`.
func serveBaselineChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts, err := ParseBaselineArgs(os.Args[1:], os.Stderr)
	if err == nil {
		err = ServeBaseline(ctx, opts, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// baselineSelf makes Config start this test binary as the baseline.
func baselineSelf(c *Config) {
	c.BaselineCommand = []string{os.Args[0]}
	c.BaselineEnv = []string{baselineChildEnv + "=1"}
}

var odinBinary struct {
	once sync.Once
	path string
	err  error
}

// buildOdin builds ./cmd/odin once per test binary, into a directory that
// outlives the tests that use it (removed by the OS's temp cleaning).
func buildOdin(t *testing.T) string {
	t.Helper()
	odinBinary.once.Do(func() {
		goTool := testenv.GoBinary()
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		dir, err := os.MkdirTemp("", "odin-load-test-")
		if err != nil {
			odinBinary.err = err
			return
		}
		path := filepath.Join(dir, "odin")
		out, err := exec.Command(goTool, "build", "-o", path, "github.com/odin-scan/odin-authz/cmd/odin").CombinedOutput()
		if err != nil {
			odinBinary.err = fmt.Errorf("go build ./cmd/odin: %v: %s", err, out)
			return
		}
		odinBinary.path = path
	})
	if odinBinary.err != nil {
		t.Fatal(odinBinary.err)
	}
	return odinBinary.path
}

func selfPID() int { return os.Getpid() }
