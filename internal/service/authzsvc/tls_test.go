package authzsvc_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/internal/tlsreload"
	"github.com/odin-scan/odin-authz/internal/tlsreload/devpki"
	"github.com/odin-scan/odin-authz/keystore"
)

// tlsFiles is a CA, odin authz's certificate and Envoy's client
// certificate, the server's files as a deployment mounts them.
type tlsFiles struct {
	ca                *devpki.CA
	server, envoy     *devpki.Leaf
	certFile, keyFile string
	caFile            string
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	dir := t.TempDir()
	ca, err := devpki.NewCA("authz test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsFiles{ca: ca, server: serverCert(t, ca), envoy: clientCert(t, ca),
		certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"), caFile: filepath.Join(dir, "ca.crt")}
	renameInto(t, p.certFile, p.server.CertPEM)
	renameInto(t, p.keyFile, p.server.KeyPEM)
	renameInto(t, p.caFile, ca.CertPEM)
	return p
}

func serverCert(t *testing.T, ca *devpki.CA) *devpki.Leaf {
	t.Helper()
	l, err := ca.Server([]string{"authz", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func clientCert(t *testing.T, ca *devpki.CA) *devpki.Leaf {
	t.Helper()
	l, err := ca.Client("envoy", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// renameInto replaces path as cert-manager or a Secret volume update does.
func renameInto(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// envoyTLS is the client side of Envoy's UpstreamTlsContext in
// envoy/envoy-grpc-mtls.yaml: trust ca, SNI and SAN "authz", present
// client (none when nil). gRPC adds ALPN h2, as alpn_protocols does there.
func envoyTLS(t *testing.T, ca *devpki.CA, client *devpki.Leaf) *tls.Config {
	t.Helper()
	cfg, err := ca.ClientTLS(client)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "authz"
	return cfg
}

// tlsCheck sends one Check on a new connection and returns the answer and
// the serial number of the certificate the server presented.
func tlsCheck(t *testing.T, addr string, cfg *tls.Config, headers map[string]string) (*authv3.CheckResponse, string, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return checkOn(conn, headers)
}

func checkOn(conn *grpc.ClientConn, headers map[string]string) (*authv3.CheckResponse, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, authztest.EnvoyRequest("GET", "/v1/scans", headers), grpc.Peer(&p))
	if err != nil {
		return nil, "", err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return resp, "", nil
	}
	return resp, info.State.PeerCertificates[0].SerialNumber.String(), nil
}

// Envoy calls Check over mutual TLS: allowed with its client certificate,
// refused without one or with one from another CA; forward-auth takes the
// same TLS; the ops port stays plain HTTP for probes.
func TestMutualTLSAsEnvoy(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	files := newTLSFiles(t)
	cfg := f.Config()
	cfg.TLS = &tlsreload.Config{CertFile: files.certFile, KeyFile: files.keyFile, ClientCAFile: files.caFile, Interval: 20 * time.Millisecond}
	r := authztest.StartReplica(t, cfg) // its own plain-text client is never used
	grpcAddr, httpAddr := r.Conn.Target(), strings.TrimPrefix(r.HTTPURL, "http://")
	key, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_tls"})
	creds := map[string]string{"api-key": key}

	resp, serial, err := tlsCheck(t, grpcAddr, envoyTLS(t, files.ca, files.envoy), creds)
	if err != nil {
		t.Fatalf("Check over mutual TLS: %v", err)
	}
	if got := authztest.HTTPStatus(resp); got != 200 {
		t.Errorf("status %d, want 200", got)
	}
	if want := files.server.Cert.SerialNumber.String(); serial != want {
		t.Errorf("server certificate serial %s, want %s", serial, want)
	}

	stranger, err := devpki.NewCA("stranger CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*tls.Config{
		"no client certificate":              envoyTLS(t, files.ca, nil),
		"client certificate from another CA": envoyTLS(t, files.ca, clientCert(t, stranger)),
	} {
		if _, _, err := tlsCheck(t, grpcAddr, cfg, creds); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: err = %v, want Unavailable (handshake refused)", name, err)
		}
	}
	plain, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, _, err := checkOn(plain, creds); status.Code(err) != codes.Unavailable {
		t.Errorf("plain-text client: err = %v, want Unavailable", err)
	}

	// Forward-auth: the same TLS and client certificates.
	get := func(cfg *tls.Config) (*http.Response, error) {
		req, _ := http.NewRequest("GET", "https://"+httpAddr+"/v1/scans", nil)
		req.Header.Set("api-key", key)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		return c.Do(req)
	}
	if resp, err := get(envoyTLS(t, files.ca, files.envoy)); err != nil {
		t.Errorf("forward-auth over mutual TLS: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("forward-auth over mutual TLS: status %d", resp.StatusCode)
		}
	}
	if resp, err := get(envoyTLS(t, files.ca, nil)); err == nil {
		resp.Body.Close()
		t.Errorf("forward-auth without a client certificate: status %d, want a refused handshake", resp.StatusCode)
	}

	// The ops port: plain HTTP, no client certificate, for kubelet probes.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(r.OpsURL + path)
		if err != nil {
			t.Fatalf("ops %s over plain HTTP: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("ops %s: status %d", path, resp.StatusCode)
		}
	}
}

// A TLS client that does not offer h2 by ALPN gets no HTTP/2 from the gRPC
// port (grpc-go enforces ALPN): why envoy-grpc-mtls.yaml sets
// alpn_protocols. The same client offering h2 gets the server's SETTINGS.
func TestGRPCOverTLSNeedsALPN(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	files := newTLSFiles(t)
	cfg := f.Config()
	cfg.TLS = &tlsreload.Config{CertFile: files.certFile, KeyFile: files.keyFile, ClientCAFile: files.caFile}
	r := authztest.StartReplica(t, cfg)
	firstFrame := func(alpn []string) (byte, error) {
		c := envoyTLS(t, files.ca, files.envoy)
		c.NextProtos = alpn
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.Conn.Target(), c)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		// The HTTP/2 client preface and an empty SETTINGS frame.
		preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
		if _, err := conn.Write(preface); err != nil {
			return 0, err
		}
		header := make([]byte, 9)
		if _, err := io.ReadFull(conn, header); err != nil {
			return 0, err
		}
		return header[3], nil // the frame type
	}
	if typ, err := firstFrame([]string{"h2"}); err != nil || typ != 4 {
		t.Errorf("with ALPN h2: first frame type %d, err %v; want SETTINGS (4)", typ, err)
	}
	if typ, err := firstFrame(nil); err == nil {
		t.Errorf("without ALPN: got a frame of type %d, want the connection closed", typ)
	}
}

// Certificates are replaced while the replica serves: new connections get
// the new certificate, an open connection keeps working, a corrupt file is
// refused and counted, and a new client CA takes over from the old one.
func TestTLSRotation(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	files := newTLSFiles(t)
	cfg := f.Config()
	cfg.TLS = &tlsreload.Config{CertFile: files.certFile, KeyFile: files.keyFile, ClientCAFile: files.caFile, Interval: 20 * time.Millisecond}
	r := authztest.StartReplica(t, cfg)
	grpcAddr := r.Conn.Target()
	key, _ := f.CreateKey(t, keystore.NewKey{UserID: "user_tls"})
	creds := map[string]string{"api-key": key}
	loads := func(result string) float64 {
		return r.Counter(t, "odin_tls_certificate_loads_total", map[string]string{"result": result})
	}
	waitLoads := func(result string, n float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for loads(result) < n {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %v %s loads (have %v)\n%s", n, result, loads(result), r.Logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	old, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(envoyTLS(t, files.ca, files.envoy))))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, serial, err := checkOn(old, creds); err != nil || serial != files.server.Cert.SerialNumber.String() {
		t.Fatalf("before rotation: serial %s, err %v", serial, err)
	}

	next := serverCert(t, files.ca)
	renameInto(t, files.keyFile, next.KeyPEM)
	renameInto(t, files.certFile, next.CertPEM)
	waitLoads("ok", 2)
	if _, serial, err := tlsCheck(t, grpcAddr, envoyTLS(t, files.ca, files.envoy), creds); err != nil || serial != next.Cert.SerialNumber.String() {
		t.Errorf("new connection after rotation: serial %s, err %v; want %s", serial, err, next.Cert.SerialNumber)
	}
	if resp, serial, err := checkOn(old, creds); err != nil || authztest.HTTPStatus(resp) != 200 || serial != files.server.Cert.SerialNumber.String() {
		t.Errorf("connection made before rotation: serial %s, err %v; want it still working on %s", serial, err, files.server.Cert.SerialNumber)
	}

	// A corrupt certificate file: refused, counted, the pair in force stays.
	renameInto(t, files.certFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"))
	waitLoads("error", 1)
	if _, serial, err := tlsCheck(t, grpcAddr, envoyTLS(t, files.ca, files.envoy), creds); err != nil || serial != next.Cert.SerialNumber.String() {
		t.Errorf("after a corrupt file: serial %s, err %v; want %s still served", serial, err, next.Cert.SerialNumber)
	}
	if !strings.Contains(r.Logs.String(), "reload failed, keeping the certificate in force") {
		t.Errorf("the refused file is not logged:\n%s", r.Logs.String())
	}
	for _, k := range [][]byte{files.server.KeyPEM, next.KeyPEM, files.envoy.KeyPEM} {
		if b64 := bytes.Split(k, []byte("\n"))[1]; strings.Contains(r.Logs.String(), string(b64[:16])) {
			t.Fatal("private key material in the logs")
		}
	}

	// A new client CA (and a server certificate from it): Envoy's new client
	// certificate is accepted, its old one refused.
	ca2, err := devpki.NewCA("next CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server2 := serverCert(t, ca2)
	renameInto(t, files.caFile, ca2.CertPEM)
	renameInto(t, files.keyFile, server2.KeyPEM)
	renameInto(t, files.certFile, server2.CertPEM)
	waitLoads("ok", 3)
	if resp, _, err := tlsCheck(t, grpcAddr, envoyTLS(t, ca2, clientCert(t, ca2)), creds); err != nil || authztest.HTTPStatus(resp) != 200 {
		t.Errorf("client of the new CA: err %v", err)
	}
	if _, _, err := tlsCheck(t, grpcAddr, envoyTLS(t, ca2, files.envoy), creds); status.Code(err) != codes.Unavailable {
		t.Errorf("client of the replaced CA: err = %v, want Unavailable", err)
	}
}

func TestTLSRefusesBadFilesAtStart(t *testing.T) {
	files := newTLSFiles(t)
	_, err := authzsvc.New(context.Background(), authzsvc.Config{DatabaseURL: "postgres://nobody@127.0.0.1:1/none",
		TLS: &tlsreload.Config{CertFile: files.certFile, KeyFile: filepath.Join(t.TempDir(), "missing.key")}}, authztest.DiscardLogger())
	if err == nil || !strings.Contains(err.Error(), "missing.key") {
		t.Fatalf("err = %v, want one naming the missing key file", err)
	}
}

// serveForBench starts a replica with cfg on loopback listeners and
// returns its gRPC address.
func serveForBench(b *testing.B, cfg authzsvc.Config) string {
	b.Helper()
	l := testenv.Listen(b)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := authzsvc.New(ctx, cfg, authztest.DiscardLogger())
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, authzsvc.Listeners{GRPC: l}) }()
	b.Cleanup(func() { cancel(); <-done })
	return l.Addr().String()
}

// BenchmarkCheckTransport is a cached-key Check over one long-lived
// connection, as Envoy keeps it, in plain text, TLS and mutual TLS: the
// transport's share of a check. BenchmarkCheckTransport/mtls-handshake
// opens a new connection per check: the price of a connection, paid once
// per Envoy worker and replica, and again after an idle close.
func BenchmarkCheckTransport(b *testing.B) {
	f := authztest.NewFixture(b, authztest.NoRedis)
	key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read"}, Tier: "pro"})
	creds := map[string]string{"api-key": key}
	dir := b.TempDir()
	ca, err := devpki.NewCA("bench CA", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	server, _ := ca.Server([]string{"authz"}, time.Hour)
	envoy, _ := ca.Client("envoy", time.Hour)
	files := map[string][]byte{"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": ca.CertPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	clientTLS := func(withCert bool) *tls.Config {
		var client *devpki.Leaf
		if withCert {
			client = envoy
		}
		cfg, err := ca.ClientTLS(client)
		if err != nil {
			b.Fatal(err)
		}
		cfg.ServerName = "authz"
		return cfg
	}
	serverTLS := func(mutual bool) *tlsreload.Config {
		c := &tlsreload.Config{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
		if mutual {
			c.ClientCAFile = filepath.Join(dir, "ca.crt")
		}
		return c
	}
	for _, bc := range []struct {
		name      string
		server    *tlsreload.Config
		client    credentials.TransportCredentials
		handshake bool
	}{
		{"plain", nil, insecure.NewCredentials(), false},
		{"tls", serverTLS(false), credentials.NewTLS(clientTLS(false)), false},
		{"mtls", serverTLS(true), credentials.NewTLS(clientTLS(true)), false},
		{"mtls-handshake", serverTLS(true), credentials.NewTLS(clientTLS(true)), true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := f.Config()
			cfg.TLS = bc.server
			addr := serveForBench(b, cfg)
			dial := func() *grpc.ClientConn {
				conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(bc.client))
				if err != nil {
					b.Fatal(err)
				}
				return conn
			}
			conn := dial()
			defer conn.Close()
			if resp, _, err := checkOn(conn, creds); err != nil || authztest.HTTPStatus(resp) != 200 {
				b.Fatalf("warm-up check: %v", err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c := conn
				if bc.handshake {
					c = dial()
				}
				if _, _, err := checkOn(c, creds); err != nil {
					b.Fatal(err)
				}
				if bc.handshake {
					c.Close()
				}
			}
		})
	}
}
