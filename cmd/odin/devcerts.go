package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/internal/tlsreload/devpki"
)

const devCertsSummary = `DEVELOPMENT ONLY: write a CA, a server certificate and a client certificate
(ECDSA P-256, PEM) to --dir, to try TLS and mutual TLS between Envoy (or odin
check) and odin authz / odin admin:

  ca.pem, ca-key.pem          the CA (trust ca.pem on both sides)
  server.pem, server-key.pem  for odin authz / odin admin (--hosts as SANs)
  client.pem, client-key.pem  for Envoy or odin check (mutual TLS)

Run it again on the same --dir to issue new server and client certificates
under the same CA: a running server picks them up within --tls-reload-interval
(or at once on SIGHUP). Production certificates come from your own PKI.`

// devCertFiles are the names odin devcerts writes in --dir.
var devCertFiles = struct{ caCert, caKey, serverCert, serverKey, clientCert, clientKey string }{
	"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem",
}

// devCertsConfig is what odin devcerts' flags set.
type devCertsConfig struct {
	dir, clientName   string
	hosts             []string
	validFor, caValid time.Duration
}

// devCertsFlagSet defines odin devcerts' flags, writing to c.
func devCertsFlagSet(c *devCertsConfig) *flags {
	f := newFlags("devcerts", devCertsSummary)
	f.String(&c.dir, "dir", "", "", "directory to write to (created if missing; required)")
	c.hosts = []string{"authz", "admin", "localhost", "127.0.0.1", "::1"}
	f.List(&c.hosts, "hosts", "", "names and IP addresses of the server certificate (default authz,admin,localhost,127.0.0.1,::1)")
	f.String(&c.clientName, "client-name", "", "envoy", "subject (and DNS SAN) of the client certificate")
	f.Duration(&c.validFor, "valid-for", "", 30*24*time.Hour, "validity of the server and client certificates")
	f.Duration(&c.caValid, "ca-valid-for", "", 365*24*time.Hour, "validity of a new CA")
	return f
}

func runDevCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var c devCertsConfig
	f, err := parseFlags(&c, devCertsFlagSet, args, stderr)
	if err != nil {
		return err
	}
	dir, clientName, hosts, validFor, caValid := c.dir, c.clientName, c.hosts, c.validFor, c.caValid
	if err := f.noArgs(); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("devcerts: --dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	ca, created, err := loadOrCreateCA(path(devCertFiles.caCert), path(devCertFiles.caKey), caValid)
	if err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	server, err := ca.Server(hosts, validFor)
	if err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	client, err := ca.Client(clientName, validFor)
	if err != nil {
		return fmt.Errorf("devcerts: %w", err)
	}
	// Keys first, each file renamed into place: a server polling the files
	// never reads half a file, and loads the pair once both are in place.
	for _, w := range []struct {
		name string
		data []byte
		mode fs.FileMode
	}{
		{devCertFiles.serverKey, server.KeyPEM, 0o600}, {devCertFiles.serverCert, server.CertPEM, 0o644},
		{devCertFiles.clientKey, client.KeyPEM, 0o600}, {devCertFiles.clientCert, client.CertPEM, 0o644},
	} {
		if err := writeFileAtomic(path(w.name), w.data, w.mode); err != nil {
			return fmt.Errorf("devcerts: %w", err)
		}
	}

	verb := "reused"
	if created {
		verb = "created"
	}
	caCert, caKey := path(devCertFiles.caCert), path(devCertFiles.caKey)
	srvCert, srvKey := path(devCertFiles.serverCert), path(devCertFiles.serverKey)
	cliCert, cliKey := path(devCertFiles.clientCert), path(devCertFiles.clientKey)
	fmt.Fprintf(stdout, "CA %s:  %s (key %s)\n", verb, caCert, caKey)
	fmt.Fprintf(stdout, "server:  %s (key %s)  for %s, serial %x, until %s\n", srvCert, srvKey,
		strings.Join(hosts, ","), server.Cert.SerialNumber, server.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "client:  %s (key %s)  %q, serial %x\n\n", cliCert, cliKey, clientName, client.Cert.SerialNumber)
	fmt.Fprintf(stdout, "  odin authz --tls-cert-file %s --tls-key-file %s --tls-client-ca-file %s\n", srvCert, srvKey, caCert)
	fmt.Fprintf(stdout, "  odin check --tls-ca-file %s --tls-cert-file %s --tls-key-file %s --tls-server-name %s --key odin_sk_...\n",
		caCert, cliCert, cliKey, hosts[0])
	return nil
}

// loadOrCreateCA reuses the CA in certPath and keyPath, or makes one when
// neither file exists.
func loadOrCreateCA(certPath, keyPath string, validFor time.Duration) (ca *devpki.CA, created bool, err error) {
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := devpki.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("reuse the CA in %s: %w", certPath, err)
		}
		return ca, false, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, false, certErr
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, false, keyErr
	default:
		return nil, false, fmt.Errorf("only one of %s and %s exists: remove it or restore the other", certPath, keyPath)
	}
	if ca, err = devpki.NewCA("Odin authz development CA", validFor); err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(keyPath, ca.KeyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// writeFileAtomic writes data to a new file next to path and renames it
// into place.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing there
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
