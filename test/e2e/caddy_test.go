package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const caddyfile = "../../envoy/caddy/Caddyfile"

// TestCaddy runs envoy/caddy/Caddyfile as shipped, configured through its
// environment variables, in front of odin authz's forward-auth port.
func TestCaddy(t *testing.T) {
	t.Parallel()
	bin := findCaddy(t)
	w := newWorld(t, shippedMode(t, caddyfile))
	up := startEcho(t)
	runForwardAuthCases(t, w, up, func(authz string) (*process, string) {
		return startCaddy(t, bin, authz, up.Addr)
	})
}

func findCaddy(t *testing.T) string {
	t.Helper()
	return findTool(t, "caddy (GOBIN=$(go env GOPATH)/bin go install github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9)",
		"ODIN_CADDY_BIN", "caddy", gopathBin("caddy"))
}

// startCaddy runs the shipped Caddyfile with the test's addresses in its
// environment, Caddy's own state in a temporary home.
func startCaddy(t *testing.T, bin, authz, upstream string) (*process, string) {
	t.Helper()
	conf, err := filepath.Abs(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	listen := loopbackAddr(t)
	host, port, _ := net.SplitHostPort(listen)
	home := t.TempDir()
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(),
		"ODIN_AUTHZ="+authz, "ODIN_UPSTREAM="+upstream, "ODIN_CADDY_PORT="+port, "ODIN_CADDY_BIND="+host,
		"HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home, "TZ=UTC")
	return startProcess(t, "caddy", cmd, listen), "http://" + listen
}
