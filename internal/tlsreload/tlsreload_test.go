package tlsreload

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/internal/tlsreload/devpki"
)

// pki is a CA with a server and a client certificate, written to files the
// way a deployment mounts them.
type pki struct {
	ca             *devpki.CA
	server, client *devpki.Leaf
	dir            string
	certFile       string
	keyFile        string
	caFile         string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: newCA(t, "test CA"), dir: t.TempDir()}
	p.server = serverLeaf(t, p.ca)
	p.client = clientLeaf(t, p.ca, "envoy")
	p.certFile, p.keyFile, p.caFile = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key"), filepath.Join(p.dir, "ca.crt")
	writeAtomic(t, p.certFile, p.server.CertPEM)
	writeAtomic(t, p.keyFile, p.server.KeyPEM)
	writeAtomic(t, p.caFile, p.ca.CertPEM)
	return p
}

func newCA(t *testing.T, name string) *devpki.CA {
	t.Helper()
	ca, err := devpki.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func serverLeaf(t *testing.T, ca *devpki.CA) *devpki.Leaf {
	t.Helper()
	l, err := ca.Server([]string{"authz", "localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func clientLeaf(t *testing.T, ca *devpki.CA, name string) *devpki.Leaf {
	t.Helper()
	l, err := ca.Client(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writeAtomic replaces path as cert-manager or a Secret volume does: a new
// file renamed into place.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// server is a TLS echo server on a Reloader.
type server struct {
	r    *Reloader
	addr string
	logs *testenv.LogBuffer
}

func startServer(t *testing.T, cfg Config) *server {
	t.Helper()
	logs := &testenv.LogBuffer{}
	r, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal) // never sent: the tests do not signal the test binary
	done := make(chan struct{})
	go func() { r.loop.Run(ctx, hup); close(done) }()
	l, err := tls.Listen("tcp", "127.0.0.1:0", r.ServerConfig("h2", "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Echo(l)
	t.Cleanup(func() { l.Close(); cancel(); <-done })
	return &server{r: r, addr: l.Addr().String(), logs: logs}
}

// dial makes a TLS connection as a client trusting ca, presenting client
// (when not nil), and proves it usable with one echo. The error is the
// handshake's or, under TLS 1.3 where the client finishes first, the echo's.
func dial(t *testing.T, addr string, ca *devpki.CA, client *devpki.Leaf) (*tls.Conn, error) {
	t.Helper()
	cfg, err := ca.ClientTLS(client)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName, cfg.NextProtos = "authz", []string{"h2"}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c *tls.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo mismatch")
	}
	return nil
}

func serial(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }

// eventually waits up to 10 s (a loaded machine) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}

func (s *server) loads(t *testing.T, result string) float64 {
	return value(t, s.r.metrics.Loads.WithLabelValues(result))
}

func TestServesCertificateWithALPN(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile})
	c, err := dial(t, s.addr, p.ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs := c.ConnectionState()
	if got, want := serial(c), p.server.Cert.SerialNumber.String(); got != want {
		t.Errorf("serial %s, want %s", got, want)
	}
	if cs.NegotiatedProtocol != "h2" {
		t.Errorf("ALPN %q, want h2 (gRPC needs it)", cs.NegotiatedProtocol)
	}
	if cs.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x", cs.Version)
	}
	if s.r.MutualTLS() {
		t.Error("MutualTLS without a client CA file")
	}
	if got := value(t, s.r.metrics.notAfter); got != float64(p.server.Cert.NotAfter.Unix()) {
		t.Errorf("not_after gauge %v, want %d", got, p.server.Cert.NotAfter.Unix())
	}

	// TLS 1.1 is refused.
	old := &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true} //nolint:gosec // the point of the test
	if c, err := tls.Dial("tcp", s.addr, old); err == nil {
		c.Close()
		t.Error("TLS 1.1 handshake accepted")
	}
}

// A new pair is used by new handshakes; a connection made before keeps
// working with the certificate it was made with.
func TestRotation(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile, Interval: 20 * time.Millisecond})
	before, err := dial(t, s.addr, p.ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	next := serverLeaf(t, p.ca)
	writeAtomic(t, p.keyFile, next.KeyPEM)
	writeAtomic(t, p.certFile, next.CertPEM)
	eventually(t, "the new certificate", func() bool { return s.r.Certificate().SerialNumber.Cmp(next.Cert.SerialNumber) == 0 })

	after, err := dial(t, s.addr, p.ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if got, want := serial(after), next.Cert.SerialNumber.String(); got != want {
		t.Errorf("new handshake: serial %s, want the new %s", got, want)
	}
	if err := echo(before); err != nil {
		t.Errorf("connection made before the rotation: %v", err)
	}
	if got, want := serial(before), p.server.Cert.SerialNumber.String(); got != want {
		t.Errorf("old connection: serial %s, want %s", got, want)
	}
	if ok, bad := s.loads(t, "ok"), s.loads(t, "error"); ok != 2 || bad != 0 {
		t.Errorf("loads ok=%v error=%v, want 2 and 0", ok, bad)
	}
	if got := value(t, s.r.metrics.notAfter); got != float64(next.Cert.NotAfter.Unix()) {
		t.Errorf("not_after gauge %v, want the new certificate's %d", got, next.Cert.NotAfter.Unix())
	}
}

// Files that do not make a valid pair are refused once each, logged without
// their contents, and the pair in force keeps serving.
func TestBadFilesKeepPairInForce(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile, Interval: 20 * time.Millisecond})
	other := serverLeaf(t, newCA(t, "other CA"))

	steps := []struct {
		name       string
		cert, key  []byte
		wantErrLog string
	}{
		{"garbage certificate", []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"), p.server.KeyPEM, "in certificate input"},
		{"key of another certificate", p.server.CertPEM, other.KeyPEM, "private key does not match public key"},
		{"empty key", p.server.CertPEM, nil, "in key input"},
	}
	for i, st := range steps {
		writeAtomic(t, p.certFile, st.cert)
		writeAtomic(t, p.keyFile, st.key)
		eventually(t, st.name+" refused", func() bool { return s.loads(t, "error") == float64(i+1) })
		if got := value(t, s.r.metrics.LastOK); got != 0 {
			t.Errorf("%s: last_load_ok %v, want 0", st.name, got)
		}
		c, err := dial(t, s.addr, p.ca, nil)
		if err != nil {
			t.Fatalf("%s: handshake failed: %v", st.name, err)
		}
		if got, want := serial(c), p.server.Cert.SerialNumber.String(); got != want {
			t.Errorf("%s: serial %s, want the pair in force %s", st.name, got, want)
		}
		c.Close()
		if !strings.Contains(s.logs.String(), st.wantErrLog) {
			t.Errorf("%s: log does not mention %q:\n%s", st.name, st.wantErrLog, s.logs.String())
		}
	}
	time.Sleep(100 * time.Millisecond) // several polls: a refused file is not reported again
	if err := s.r.Reload(); err == nil || !strings.Contains(err.Error(), "key input") {
		t.Errorf("Reload of the files in place: %v, want their error again", err)
	}
	if got := s.loads(t, "error"); got != float64(len(steps)) {
		t.Errorf("error loads %v, want %d (one per bad file)", got, len(steps))
	}

	// Put a good pair back: in force again, gauge back to 1.
	writeAtomic(t, p.certFile, p.server.CertPEM)
	writeAtomic(t, p.keyFile, p.server.KeyPEM)
	eventually(t, "the good pair", func() bool { return value(t, s.r.metrics.LastOK) == 1 })

	logs := s.logs.String()
	for _, secret := range [][]byte{p.server.KeyPEM, other.KeyPEM} {
		body := strings.Split(string(secret), "\n")[1] // first base64 line of the key
		if strings.Contains(logs, body[:20]) || strings.Contains(logs, "PRIVATE KEY-----") {
			t.Fatalf("key material in the logs:\n%s", logs)
		}
	}
}

// A certificate and key written one after the other, not atomically, are
// loaded together: the half-written state is never reported.
func TestHalfWrittenPairSettles(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile, Interval: 100 * time.Millisecond})
	next := serverLeaf(t, p.ca)
	if err := os.WriteFile(p.certFile, next.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.keyFile, next.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new certificate", func() bool { return s.r.Certificate().SerialNumber.Cmp(next.Cert.SerialNumber) == 0 })
	if got := s.loads(t, "error"); got != 0 {
		t.Errorf("error loads %v, want 0: the pair was caught half written\n%s", got, s.logs.String())
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, Interval: 20 * time.Millisecond})
	if !s.r.MutualTLS() {
		t.Fatal("MutualTLS false with a client CA file")
	}
	stranger := newCA(t, "stranger CA")
	if c, err := dial(t, s.addr, p.ca, nil); err == nil {
		c.Close()
		t.Error("client without a certificate accepted")
	}
	if c, err := dial(t, s.addr, p.ca, clientLeaf(t, stranger, "envoy")); err == nil {
		c.Close()
		t.Error("client with a certificate from another CA accepted")
	}
	c, err := dial(t, s.addr, p.ca, p.client)
	if err != nil {
		t.Fatalf("client with a certificate from the client CA: %v", err)
	}
	c.Close()

	// Rotate the client CA: the new CA's clients get in, the old one's not.
	next := newCA(t, "next client CA")
	writeAtomic(t, p.caFile, next.CertPEM)
	eventually(t, "the new client CA", func() bool { return s.loads(t, "ok") == 2 })
	if c, err := dial(t, s.addr, p.ca, clientLeaf(t, next, "envoy")); err != nil {
		t.Errorf("client of the new CA refused: %v", err)
	} else {
		c.Close()
	}
	if c, err := dial(t, s.addr, p.ca, p.client); err == nil {
		c.Close()
		t.Error("client of the replaced CA still accepted")
	}
	if got := value(t, s.r.metrics.caExpiry); got != float64(next.Cert.NotAfter.Unix()) {
		t.Errorf("client CA expiry gauge %v, want %d", got, next.Cert.NotAfter.Unix())
	}
}

func TestSIGHUPReloads(t *testing.T) {
	p := newPKI(t)
	r, err := New(Config{CertFile: p.certFile, KeyFile: p.keyFile, Interval: -1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal)
	go r.loop.Run(ctx, hup)
	next := serverLeaf(t, p.ca)
	writeAtomic(t, p.certFile, next.CertPEM)
	writeAtomic(t, p.keyFile, next.KeyPEM)
	time.Sleep(50 * time.Millisecond)
	if r.Certificate().SerialNumber.Cmp(p.server.Cert.SerialNumber) != 0 {
		t.Fatal("reloaded without polling or a signal")
	}
	hup <- os.Interrupt // any value: the channel stands for SIGHUP
	eventually(t, "the reload on SIGHUP", func() bool { return r.Certificate().SerialNumber.Cmp(next.Cert.SerialNumber) == 0 })
}

func TestNewRefusesBadFiles(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	writeAtomic(t, garbage, []byte("hello"))
	other := serverLeaf(t, p.ca)
	otherKey := filepath.Join(p.dir, "other.key")
	writeAtomic(t, otherKey, other.KeyPEM)
	missing := filepath.Join(p.dir, "missing.pem")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no key file", Config{CertFile: p.certFile}, "both required"},
		{"missing certificate", Config{CertFile: missing, KeyFile: p.keyFile}, "missing.pem: no such file"},
		{"missing key", Config{CertFile: p.certFile, KeyFile: missing}, "read key file"},
		{"key not matching", Config{CertFile: p.certFile, KeyFile: otherKey}, "does not match"},
		{"garbage certificate", Config{CertFile: garbage, KeyFile: p.keyFile}, "garbage.pem"},
		{"client CA without certificates", Config{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: garbage}, "no PEM CERTIFICATE"},
		{"missing client CA", Config{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: missing}, "read client CA file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), strings.Split(string(other.KeyPEM), "\n")[1][:20]) {
				t.Errorf("error quotes key material: %v", err)
			}
		})
	}
}

func TestClientConfig(t *testing.T) {
	p := newPKI(t)
	clientCert, clientKey := filepath.Join(p.dir, "client.crt"), filepath.Join(p.dir, "client.key")
	writeAtomic(t, clientCert, p.client.CertPEM)
	writeAtomic(t, clientKey, p.client.KeyPEM)
	s := startServer(t, Config{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile})

	cfg, err := ClientConfig(ClientFiles{CAFile: p.caFile, CertFile: clientCert, KeyFile: clientKey, ServerName: "authz"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", s.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(c); err != nil {
		t.Errorf("mutual TLS with ClientConfig: %v", err)
	}
	c.Close()

	for _, bad := range []ClientFiles{{CertFile: clientCert}, {KeyFile: clientKey}, {CAFile: clientKey}, {CAFile: filepath.Join(p.dir, "nope")}} {
		if _, err := ClientConfig(bad); err == nil {
			t.Errorf("ClientConfig(%+v) accepted", bad)
		}
	}
}
