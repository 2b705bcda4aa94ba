// Package tlsreload serves TLS, and mutual TLS, from certificate files that
// may be replaced while the server runs (cert-manager, Vault agent, a
// Kubernetes Secret volume, `odin devcerts` run again).
//
// A Reloader loads a certificate/key pair and, optionally, a bundle of
// client CAs, and hands them to crypto/tls through GetConfigForClient, so
// every new handshake uses what is loaded now: no restart, no listener
// change. It polls the files' identity, size and modification time, and
// reloads on SIGHUP. A pair that cannot be used (half written, key not
// matching, garbage) is logged and counted and the pair in use stays in
// use; connections already open keep the certificate they were made with.
package tlsreload

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/odin-scan/odin-authz/internal/reload"
)

// DefaultInterval is how often the files are looked at when Config.Interval
// is zero. A stat of three files costs nothing; a Secret update takes far
// longer than this to reach a pod anyway.
const DefaultInterval = 5 * time.Second

// Config names the files a server's TLS comes from.
type Config struct {
	// CertFile holds the server certificate, then any intermediates (PEM);
	// KeyFile its private key (PEM, PKCS#1, PKCS#8 or SEC 1). Both required.
	CertFile, KeyFile string
	// ClientCAFile, when set, turns on mutual TLS: a client must present a
	// certificate signed by one of the CAs in this PEM bundle
	// (tls.RequireAndVerifyClientCert). Empty: clients are not asked for one.
	ClientCAFile string
	// Interval is how often the files are polled for a change (default
	// DefaultInterval); negative: never, only on SIGHUP or Reload.
	Interval time.Duration
}

// Reloader holds the certificate in force for concurrent handshakes and
// replaces it when the files change.
type Reloader struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	cur     atomic.Pointer[state]
	loop    *reload.Loop // serialises loads and triggers them; guards the fields below

	lastSum [32]byte // SHA-256 of the file contents last tried, good or bad
	lastErr error    // what trying them gave
}

// state is one loaded certificate (and client CA bundle): what a handshake
// uses. It is never modified once stored.
type state struct {
	cert      tls.Certificate
	leaf      *x509.Certificate
	clientCAs *x509.CertPool // nil: no client certificates asked
	caCount   int
	caExpiry  time.Time // earliest NotAfter among the client CAs
}

// New loads the files. A missing, unreadable or invalid file is an error:
// a server must not start without the certificate it was configured with.
// logger and reg may be nil.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Reloader, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: a certificate file and a key file are both required")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{cfg: cfg, log: logger, metrics: newMetrics(reg)}
	r.loop = reload.NewLoop(cfg.Interval, r.load, cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile)
	if err := r.loop.Reload(reload.Start); err != nil {
		return nil, err
	}
	return r, nil
}

// MutualTLS reports whether clients must present a certificate.
func (r *Reloader) MutualTLS() bool { return r.cfg.ClientCAFile != "" }

// Certificate returns the leaf certificate in force.
func (r *Reloader) Certificate() *x509.Certificate { return r.cur.Load().leaf }

// ServerConfig returns a server configuration that offers nextProtos by
// ALPN ("h2" for gRPC; "h2", "http/1.1" for an HTTP server) and takes the
// certificate, and the client CAs, in force at each handshake. TLS 1.2 is
// the minimum.
func (r *Reloader) ServerConfig(nextProtos ...string) *tls.Config {
	ep := &endpoint{r: r, protos: slices.Clone(nextProtos)}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         ep.protos,
		GetConfigForClient: ep.configForClient,
	}
}

// endpoint is one ServerConfig: its protocols, and the configuration built
// for the state last seen, so a handshake allocates nothing new until a
// reload.
type endpoint struct {
	r      *Reloader
	protos []string
	cache  atomic.Pointer[builtConfig]
}

type builtConfig struct {
	st  *state
	cfg *tls.Config
}

func (e *endpoint) configForClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	st := e.r.cur.Load()
	if c := e.cache.Load(); c != nil && c.st == st {
		return c.cfg, nil
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   e.protos,
		Certificates: []tls.Certificate{st.cert},
	}
	if st.clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = st.clientCAs, tls.RequireAndVerifyClientCert
	}
	e.cache.Store(&builtConfig{st, cfg})
	return cfg, nil
}

// Reload reads the files now and, when they make a valid pair, puts them in
// force. Files that cannot be used leave the pair in force; the failure is
// logged, counted and returned.
func (r *Reloader) Reload() error { return r.loop.Reload(reload.Explicit) }

// Watch reloads on SIGHUP and when the files change, until ctx ends
// (internal/reload). A change is loaded once it has held still for one
// poll, so a certificate and key written one after the other are loaded
// together, not reported as a mismatched pair.
func (r *Reloader) Watch(ctx context.Context) { r.loop.Watch(ctx) }

// load reads and parses the files and puts a valid pair in force; r.loop
// calls it, one load at a time. Contents identical to the last attempt (a touch, a rewrite with the
// same bytes) are not loaded, logged or counted again.
func (r *Reloader) load(trigger string) error {
	certPEM, keyPEM, caPEM, err := r.read()
	if err == nil {
		sum := contentSum(certPEM, keyPEM, caPEM)
		if sum == r.lastSum && r.cur.Load() != nil {
			return r.lastErr
		}
		r.lastSum = sum
		var st *state
		if st, err = r.parse(certPEM, keyPEM, caPEM); err == nil {
			r.lastErr = nil
			r.cur.Store(st)
			r.metrics.Loaded()
			r.metrics.inForce(st)
			r.logLoaded(st, trigger)
			return nil
		}
	} else {
		r.lastSum = [32]byte{}
	}
	r.lastErr = err
	r.metrics.Failed()
	if r.cur.Load() != nil {
		r.log.Error("tls: reload failed, keeping the certificate in force",
			"cert_file", r.cfg.CertFile, "key_file", r.cfg.KeyFile, "client_ca_file", r.cfg.ClientCAFile,
			"trigger", trigger, "error", err, "serial", serialOf(r.cur.Load().leaf))
	}
	return err
}

func (r *Reloader) read() (certPEM, keyPEM, caPEM []byte, err error) {
	if certPEM, err = os.ReadFile(r.cfg.CertFile); err != nil {
		return nil, nil, nil, fmt.Errorf("tls: read certificate file: %w", err)
	}
	if keyPEM, err = os.ReadFile(r.cfg.KeyFile); err != nil {
		return nil, nil, nil, fmt.Errorf("tls: read key file: %w", err)
	}
	if r.cfg.ClientCAFile != "" {
		if caPEM, err = os.ReadFile(r.cfg.ClientCAFile); err != nil {
			return nil, nil, nil, fmt.Errorf("tls: read client CA file: %w", err)
		}
	}
	return certPEM, keyPEM, caPEM, nil
}

// parse builds a state. Its errors name files, never their contents: the
// crypto/tls and crypto/x509 messages it wraps do not quote key material.
func (r *Reloader) parse(certPEM, keyPEM, caPEM []byte) (*state, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s with key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: certificate %s: %w", r.cfg.CertFile, err)
		}
	}
	st := &state{cert: pair, leaf: leaf}
	if r.cfg.ClientCAFile == "" {
		return st, nil
	}
	st.clientCAs = x509.NewCertPool()
	for rest := caPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA file %s: certificate %d: %w", r.cfg.ClientCAFile, st.caCount+1, err)
		}
		st.clientCAs.AddCert(c)
		if st.caCount == 0 || c.NotAfter.Before(st.caExpiry) {
			st.caExpiry = c.NotAfter
		}
		st.caCount++
	}
	if st.caCount == 0 {
		return nil, fmt.Errorf("tls: client CA file %s: no PEM CERTIFICATE found", r.cfg.ClientCAFile)
	}
	return st, nil
}

func (r *Reloader) logLoaded(st *state, trigger string) {
	fp := sha256.Sum256(st.leaf.Raw) // of the public certificate
	attrs := []any{"cert_file", r.cfg.CertFile, "trigger", trigger,
		"subject", st.leaf.Subject.CommonName, "dns_names", st.leaf.DNSNames, "serial", serialOf(st.leaf),
		"sha256", hex.EncodeToString(fp[:8]), "not_after", st.leaf.NotAfter.UTC(), "mutual_tls", st.clientCAs != nil}
	if st.clientCAs != nil {
		attrs = append(attrs, "client_ca_file", r.cfg.ClientCAFile, "client_cas", st.caCount)
	}
	r.log.Info("tls: certificate loaded", attrs...)
	if now := time.Now(); now.After(st.leaf.NotAfter) {
		r.log.Warn("tls: the certificate in force has expired; clients will refuse it", "cert_file", r.cfg.CertFile, "not_after", st.leaf.NotAfter.UTC())
	} else if now.Before(st.leaf.NotBefore) {
		r.log.Warn("tls: the certificate in force is not valid yet; clients will refuse it", "cert_file", r.cfg.CertFile, "not_before", st.leaf.NotBefore.UTC())
	}
}

func serialOf(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// contentSum identifies the three files' contents together.
func contentSum(parts ...[]byte) [32]byte {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// metrics are the Reloader's collectors: its loads, and the expiries of
// what is in force.
type metrics struct {
	*reload.Metrics
	notAfter prometheus.Gauge
	caExpiry prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg) // nil: not registered, for tests and one-shot commands
	return &metrics{
		Metrics: reload.NewMetrics(reg, prometheus.CounterOpts{
			Name: "odin_tls_certificate_loads_total",
			Help: "TLS certificate loads (at start, on a file change, on SIGHUP) by result (ok, error).",
		}, prometheus.GaugeOpts{
			Name: "odin_tls_certificate_last_load_ok",
			Help: "1 when the last TLS certificate load succeeded, 0 when the files in place are refused and an older certificate is in force.",
		}),
		notAfter: f.NewGauge(prometheus.GaugeOpts{
			Name: "odin_tls_certificate_not_after_timestamp_seconds",
			Help: "NotAfter of the TLS certificate in force, in Unix seconds: alert well before it.",
		}),
		caExpiry: f.NewGauge(prometheus.GaugeOpts{
			Name: "odin_tls_client_ca_not_after_timestamp_seconds",
			Help: "Earliest NotAfter among the client CAs in force (mutual TLS), in Unix seconds; 0 without mutual TLS.",
		}),
	}
}

// inForce records the expiries of the state just put in force.
func (m *metrics) inForce(st *state) {
	m.notAfter.Set(float64(st.leaf.NotAfter.Unix()))
	if st.clientCAs != nil {
		m.caExpiry.Set(float64(st.caExpiry.Unix()))
	} else {
		m.caExpiry.Set(0)
	}
}

// ClientFiles are what a client (odin check, odin healthcheck) needs to
// call a TLS server.
type ClientFiles struct {
	// CAFile is a PEM bundle of the CAs trusted to sign the server's
	// certificate; empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are the client certificate presented for mutual
	// TLS; both or neither.
	CertFile, KeyFile string
	// ServerName is the name checked against the server's certificate (and
	// sent as SNI); empty: the host dialled.
	ServerName string
}

// ClientConfig loads a client configuration from files, once.
func ClientConfig(f ClientFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		data, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tls: CA file %s: no PEM CERTIFICATE found", f.CAFile)
		}
	}
	switch {
	case f.CertFile != "" && f.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case f.CertFile != "" || f.KeyFile != "":
		return nil, errors.New("tls: a client certificate needs both its certificate file and its key file")
	}
	return cfg, nil
}
