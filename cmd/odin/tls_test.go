package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
)

// devCerts runs odin devcerts into a new directory and returns the paths of
// what it wrote, by name.
func devCerts(t *testing.T, args ...string) (dir string, path func(string) string) {
	t.Helper()
	dir = t.TempDir()
	if out, stderr, err := odin(t, append([]string{"devcerts", "--dir", dir}, args...)...); err != nil {
		t.Fatalf("devcerts: %v\n%s%s", err, out, stderr)
	}
	return dir, func(name string) string { return filepath.Join(dir, name) }
}

func TestDevCerts(t *testing.T) {
	dir, path := devCerts(t)
	for name, mode := range map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600, "client.pem": 0o644, "client-key.pem": 0o600,
	} {
		fi, err := os.Stat(path(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	r, err := tlsreload.New(tlsreload.Config{CertFile: path("server.pem"), KeyFile: path("server-key.pem"), ClientCAFile: path("ca.pem")}, nil, nil)
	if err != nil {
		t.Fatalf("the server files do not load: %v", err)
	}
	if got := r.Certificate().DNSNames; strings.Join(got, ",") != "authz,admin,localhost" {
		t.Errorf("DNS names %v", got)
	}
	if _, err := tlsreload.ClientConfig(tlsreload.ClientFiles{CAFile: path("ca.pem"), CertFile: path("client.pem"), KeyFile: path("client-key.pem")}); err != nil {
		t.Errorf("the client files do not load: %v", err)
	}

	// Again on the same directory: the same CA, new leaf certificates.
	ca, _ := os.ReadFile(path("ca.pem"))
	out, _, err := odin(t, "devcerts", "--dir", dir, "--hosts", "authz.odin.svc")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path("ca.pem")); !bytes.Equal(ca, again) || !strings.HasPrefix(out, "CA reused") {
		t.Errorf("second run did not reuse the CA:\n%s", out)
	}
	if want := "odin authz --tls-cert-file " + path("server.pem") + " --tls-key-file " + path("server-key.pem") + " --tls-client-ca-file " + path("ca.pem"); !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := r.Certificate().DNSNames; len(got) != 1 || got[0] != "authz.odin.svc" {
		t.Errorf("after a second run: DNS names %v, want the new certificate's", got)
	}

	if err := os.Remove(path("ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := odin(t, "devcerts", "--dir", dir); err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("CA without its key: err = %v", err)
	}
	if _, _, err := odin(t, "devcerts"); err == nil || !strings.Contains(err.Error(), "--dir is required") {
		t.Errorf("no --dir: err = %v", err)
	}
}

func TestTLSFlagErrors(t *testing.T) {
	_, path := devCerts(t)
	tests := []errorCase{
		{"authz certificate without key", []string{"authz", "--tls-cert-file", path("server.pem")}, nil, "--tls-cert-file needs --tls-key-file"},
		{"authz key without certificate", []string{"authz", "--tls-key-file", path("server-key.pem")}, nil, "--tls-key-file needs --tls-cert-file"},
		{"authz client CA alone", []string{"authz", "--tls-client-ca-file", path("ca.pem")}, nil, "needs --tls-cert-file and --tls-key-file"},
		{"authz zero reload interval", []string{"authz", "--tls-cert-file", path("server.pem"), "--tls-key-file", path("server-key.pem"), "--tls-reload-interval", "0s"}, nil, "must not be 0"},
		{"admin certificate without key (env)", []string{"admin", "--database-url", "postgres://nobody@127.0.0.1:1/none"}, map[string]string{"ODIN_ADMIN_TLS_CERT_FILE": path("server.pem")}, "--tls-cert-file needs --tls-key-file"},
		{"authz unreadable key", []string{"authz", "--database-url", "postgres://nobody@127.0.0.1:1/none", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--ops-addr", "",
			"--tls-cert-file", path("server.pem"), "--tls-key-file", path("nope.pem")}, nil, "nope.pem: no such file"},
		{"admin key not matching", []string{"admin", "--database-url", "postgres://nobody@127.0.0.1:1/none", "--admin-addr", "127.0.0.1:0",
			"--tls-cert-file", path("server.pem"), "--tls-key-file", path("client-key.pem")}, nil, "does not match"},
		{"check client certificate without key", []string{"check", "--tls-cert-file", path("client.pem")}, nil, "both its certificate file and its key file"},
		{"check TLS to an http:// URL", []string{"check", "--http", "http://127.0.0.1:1", "--tls-ca-file", path("ca.pem")}, nil, "need an https://"},
		{"healthcheck TLS to an http:// URL", []string{"healthcheck", "--url", "http://127.0.0.1:1/readyz", "--tls-ca-file", path("ca.pem")}, nil, "need an https://"},
	}
	wantErrors(t, tests)
	// The authz variables (ODIN_TLS_*) do not configure the admin API,
	// whose own are ODIN_ADMIN_TLS_*.
	t.Setenv("ODIN_TLS_CERT_FILE", path("server.pem"))
	t.Setenv("ODIN_TLS_CLIENT_CA_FILE", path("ca.pem"))
	var admin tlsServerFlags
	f := newFlags("admin", "")
	admin.bind(f, "ODIN_ADMIN_", "the admin API")
	if err := f.parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg, err := admin.config(); cfg != nil || err != nil {
		t.Errorf("admin TLS from ODIN_TLS_*: %+v, %v; want none", cfg, err)
	}
	if _, stderr, err := odin(t, "admin", "-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "ODIN_ADMIN_TLS_CLIENT_CA_FILE") {
		t.Errorf("admin -h: %v\n%s", err, stderr)
	}
}

// healthcheck and check reach servers with mutual TLS when given the CA and
// a client certificate, and fail cleanly without.
func TestClientsOverMutualTLS(t *testing.T) {
	_, path := devCerts(t)
	r, err := tlsreload.New(tlsreload.Config{CertFile: path("server.pem"), KeyFile: path("server-key.pem"), ClientCAFile: path("ca.pem")}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Odin-Subject", "user_tls")
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = r.ServerConfig("http/1.1")
	srv.StartTLS()
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) // a name in the certificate

	tlsArgs := []string{"--tls-ca-file", path("ca.pem"), "--tls-cert-file", path("client.pem"), "--tls-key-file", path("client-key.pem")}
	if _, _, err := odin(t, append([]string{"healthcheck", "--url", url + "/readyz"}, tlsArgs...)...); err != nil {
		t.Errorf("healthcheck over mutual TLS: %v", err)
	}
	if _, _, err := odin(t, "healthcheck", "--url", url+"/readyz", "--tls-ca-file", path("ca.pem")); err == nil {
		t.Error("healthcheck without a client certificate succeeded")
	}
	if _, _, err := odin(t, append([]string{"healthcheck", "--url", srv.URL + "/readyz", "--tls-server-name", "authz"}, tlsArgs...)...); err != nil {
		t.Errorf("healthcheck by IP with --tls-server-name: %v", err)
	}
	if _, _, err := odin(t, "healthcheck", "--url", url+"/readyz"); err == nil {
		t.Error("healthcheck trusting the system roots accepted the dev CA")
	}

	out, _, err := odin(t, append([]string{"check", "--http", url, "--key", "odin_sk_x"}, tlsArgs...)...)
	if err != nil || !strings.Contains(out, "x-odin-subject: user_tls") {
		t.Errorf("check over HTTPS with mutual TLS: %v\n%s", err, out)
	}
	if _, _, err := odin(t, "check", "--http", url, "--tls-ca-file", path("ca.pem")); exitCode(err) != 2 {
		t.Errorf("check without a client certificate: exit %d (%v), want 2", exitCode(err), err)
	}
}

// odin authz with the TLS flags, end to end: odin check over mutual TLS as
// Envoy would call it, refused without a client certificate, and the ops
// port still plain HTTP for odin healthcheck.
func TestAuthzServesMutualTLS(t *testing.T) {
	db := testenv.Postgres(t)
	t.Setenv("ODIN_DATABASE_URL", db)
	key, stderr, err := odin(t, "keys", "create", "--name", "tls", "--owner", "user_tls", "--scopes", "scans:read")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, stderr)
	}
	key = strings.TrimSpace(key)
	_, path := devCerts(t)
	grpcAddr, opsAddr := freeAddr(t), freeAddr(t)
	t.Setenv("ODIN_TLS_CLIENT_CA_FILE", path("ca.pem")) // flags and variables mix
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &testenv.LogBuffer{}
	go func() {
		done <- run(ctx, []string{"authz", "--grpc-addr", grpcAddr, "--http-addr", "", "--ops-addr", opsAddr, "--log-format", "text",
			"--tls-cert-file", path("server.pem"), "--tls-key-file", path("server-key.pem")}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("odin authz: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for odinHealthy(t, "http://"+opsAddr+"/healthz") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("odin authz did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	tlsArgs := []string{"--tls-ca-file", path("ca.pem"), "--tls-cert-file", path("client.pem"), "--tls-key-file", path("client-key.pem"), "--tls-server-name", "authz"}
	out, _, err := odin(t, append([]string{"check", "--grpc", grpcAddr, "--key", key, "--path", "/v1/scans"}, tlsArgs...)...)
	if err != nil || !strings.Contains(out, "ALLOWED (200)") {
		t.Errorf("check over mutual TLS: %v\n%s\n%s", err, out, logs.String())
	}
	if !strings.Contains(logs.String(), "mutual_tls=true") {
		t.Errorf("odin authz did not log mutual TLS on:\n%s", logs.String())
	}
	if _, _, err := odin(t, "check", "--grpc", grpcAddr, "--key", key, "--tls-ca-file", path("ca.pem"), "--tls-server-name", "authz"); exitCode(err) != 2 {
		t.Errorf("check without a client certificate: exit %d (%v), want 2", exitCode(err), err)
	}
	if _, _, err := odin(t, "check", "--grpc", grpcAddr, "--key", key); exitCode(err) != 2 {
		t.Errorf("plain-text check against the TLS port: exit %d (%v), want 2", exitCode(err), err)
	}
}

func odinHealthy(t *testing.T, url string) error {
	t.Helper()
	_, _, err := odin(t, "healthcheck", "--url", url)
	return err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
