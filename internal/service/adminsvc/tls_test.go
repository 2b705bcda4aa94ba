package adminsvc_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/internal/tlsreload/devpki"
)

// tlsAdmin is an admin API serving TLS from files in a temporary directory.
type tlsAdmin struct {
	url               string
	ca                *devpki.CA
	certFile, keyFile string
	logs              *testenv.LogBuffer
}

func startTLSAdmin(t *testing.T, db string, ca *devpki.CA, clientCA string) *tlsAdmin {
	t.Helper()
	dir := t.TempDir()
	a := &tlsAdmin{ca: ca, certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), logs: &testenv.LogBuffer{}}
	a.rotate(t)
	cfg := adminsvc.Config{DatabaseURL: db, OperatorToken: admintest.OperatorToken, Scopes: []string{"scans:read"},
		TLS: &tlsreload.Config{CertFile: a.certFile, KeyFile: a.keyFile, ClientCAFile: clientCA, Interval: 20 * time.Millisecond}}
	l := testenv.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := adminsvc.New(ctx, cfg, slog.New(slog.NewJSONHandler(a.logs, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	a.url = "https://" + l.Addr().String()
	return a
}

// rotate writes a new server certificate, renamed into place; it returns
// its serial number.
func (a *tlsAdmin) rotate(t *testing.T) string {
	t.Helper()
	leaf, err := a.ca.Server([]string{"admin", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{a.keyFile: leaf.KeyPEM, a.certFile: leaf.CertPEM} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	return leaf.Cert.SerialNumber.String()
}

// get calls the API trusting the CA and presenting client (none when nil);
// it returns the status and the server certificate's serial number.
func (a *tlsAdmin) get(t *testing.T, path string, client *devpki.Leaf) (int, string, error) {
	t.Helper()
	cfg, err := a.ca.ClientTLS(client)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	req, _ := http.NewRequest("GET", a.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
}

func TestAdminOverTLS(t *testing.T) {
	db := testenv.Postgres(t)
	ca, err := devpki.NewCA("admin test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := startTLSAdmin(t, db, ca, "")
	for _, path := range []string{"/v1/keys", "/healthz", "/readyz", "/metrics"} {
		if status, _, err := a.get(t, path, nil); err != nil || status != 200 {
			t.Errorf("GET %s over TLS: status %d, err %v", path, status, err)
		}
	}
	resp, err := http.Get(strings.Replace(a.url, "https://", "http://", 1) + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered 200 on the TLS port")
		}
	}

	// Rotation: the next connection gets the new certificate.
	serial := a.rotate(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, got, err := a.get(t, "/healthz", nil)
		if err == nil && got == serial {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving serial %s (err %v), want the rotated %s", got, err, serial)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdminOverMutualTLS(t *testing.T) {
	db := testenv.Postgres(t)
	ca, err := devpki.NewCA("admin test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	a := startTLSAdmin(t, db, ca, caFile)
	operator, err := ca.Client("operator", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, err := a.get(t, "/v1/keys", operator); err != nil || status != 200 {
		t.Errorf("with a client certificate: status %d, err %v", status, err)
	}
	if status, _, err := a.get(t, "/healthz", nil); err == nil {
		t.Errorf("without a client certificate: status %d, want a refused handshake", status)
	}
	stranger, err := devpki.NewCA("stranger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := stranger.Client("operator", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, err := a.get(t, "/healthz", other); err == nil {
		t.Errorf("with a certificate from another CA: status %d, want a refused handshake", status)
	}
	if !strings.Contains(a.logs.String(), `"mutual_tls":true`) {
		t.Errorf("start-up log does not say mutual TLS is on:\n%s", a.logs.String())
	}
}
