package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const nginxConf = "../../envoy/nginx/nginx.conf"

// TestNGINX runs envoy/nginx/nginx.conf, with only its three addresses
// replaced, in front of odin authz's forward-auth port.
func TestNGINX(t *testing.T) {
	t.Parallel()
	bin, shipped := shippedNGINX(t)

	w := newWorld(t, shippedMode(t, nginxConf))
	up := startEcho(t)
	runForwardAuthCases(t, w, up, func(authz string) (*process, string) {
		return startNGINX(t, bin, shipped, authz, up.Addr)
	})
}

// shippedNGINX finds nginx and reads envoy/nginx/nginx.conf, checked with
// `nginx -t` (checkNGINXModules).
func shippedNGINX(t *testing.T) (bin, conf string) {
	t.Helper()
	bin = findTool(t, "nginx", "ODIN_NGINX_BIN", "nginx", "/usr/sbin/nginx")
	shipped, err := os.ReadFile(nginxConf)
	if err != nil {
		t.Fatal(err)
	}
	checkNGINXModules(t, bin, string(shipped))
	return bin, string(shipped)
}

// checkNGINXModules runs `nginx -t` on the shipped file: a missing
// headers-more module is a missing tool, any other error a broken file.
func checkNGINXModules(t *testing.T, bin, conf string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-t", "-p", dir+"/", "-c", path, "-e", "stderr", "-g", "pid "+dir+"/nginx.pid;").CombinedOutput()
	switch {
	case err == nil:
	case strings.Contains(string(out), "headers_more") || strings.Contains(string(out), "more_clear_input_headers"):
		unavailable(t, "NGINX's headers-more module is not installed (apt-get install libnginx-mod-http-headers-more-filter):\n"+string(out))
	default:
		t.Fatalf("nginx -t rejects %s: %v\n%s", nginxConf, err, out)
	}
}

// startNGINX renders the shipped config with the test's addresses and runs
// it in the foreground.
func startNGINX(t *testing.T, bin, shipped, authz, upstream string) (*process, string) {
	t.Helper()
	listen := loopbackAddr(t)
	conf := shipped
	for _, r := range []struct{ old, new string }{
		{"server 127.0.0.1:9002;", "server " + authz + ";"},
		{"server 127.0.0.1:8080;", "server " + upstream + ";"},
		{"listen 8000;", "listen " + listen + ";"},
	} {
		if strings.Count(conf, r.old) != 1 {
			t.Fatalf("%s: %q must appear exactly once (the test replaces it)", nginxConf, r.old)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", path, "-e", "stderr", "-g", "daemon off; pid "+dir+"/nginx.pid;")
	cmd.Env = append(os.Environ(), "TZ=UTC")
	return startProcess(t, "nginx", cmd, listen), "http://" + listen
}
