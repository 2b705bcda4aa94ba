package main

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/odin-scan/odin-authz/internal/tlsreload"
)

// tlsServerFlags are the TLS flags of a server command (odin authz, odin
// admin). envPrefix names their variables: ODIN_TLS_* for authz,
// ODIN_ADMIN_TLS_* for admin, so that one environment shared by both
// never turns on mutual TLS on the admin API by accident.
type tlsServerFlags struct {
	certFile, keyFile, clientCAFile string
	interval                        time.Duration
}

func (t *tlsServerFlags) bind(f *flags, envPrefix, what string) {
	f.String(&t.certFile, "tls-cert-file", envPrefix+"TLS_CERT_FILE", "", "PEM certificate (then intermediates) to serve "+what+" over TLS; needs --tls-key-file; empty: plain text")
	f.String(&t.keyFile, "tls-key-file", envPrefix+"TLS_KEY_FILE", "", "PEM private key of --tls-cert-file")
	f.String(&t.clientCAFile, "tls-client-ca-file", envPrefix+"TLS_CLIENT_CA_FILE", "", "PEM bundle of CAs whose client certificates are accepted: turns on mutual TLS (a client without one is refused)")
	f.Duration(&t.interval, "tls-reload-interval", envPrefix+"TLS_RELOAD_INTERVAL", tlsreload.DefaultInterval, "how often the certificate, key and client CA files are checked for a change (also reloaded on SIGHUP); negative: SIGHUP only")
}

// config returns the TLS configuration, or nil when no TLS flag is set.
func (t *tlsServerFlags) config() (*tlsreload.Config, error) {
	switch {
	case t.certFile == "" && t.keyFile == "" && t.clientCAFile == "":
		return nil, nil
	case t.certFile == "" && t.keyFile == "":
		return nil, errors.New("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file: the server's own certificate")
	case t.keyFile == "":
		return nil, errors.New("--tls-cert-file needs --tls-key-file")
	case t.certFile == "":
		return nil, errors.New("--tls-key-file needs --tls-cert-file")
	}
	if t.interval == 0 {
		return nil, errors.New("--tls-reload-interval must not be 0 (negative: reload on SIGHUP only)")
	}
	return &tlsreload.Config{CertFile: t.certFile, KeyFile: t.keyFile, ClientCAFile: t.clientCAFile, Interval: t.interval}, nil
}

// tlsClientFlags are the TLS flags of a client command (odin check, odin
// healthcheck).
type tlsClientFlags struct {
	on    bool
	files tlsreload.ClientFiles
}

func (t *tlsClientFlags) bind(f *flags, envPrefix string) {
	f.Bool(&t.on, "tls", envPrefix+"TLS", false, "use TLS, trusting the system's CAs (implied by any other --tls-* flag and by an https:// URL)")
	f.String(&t.files.CAFile, "tls-ca-file", envPrefix+"TLS_CA_FILE", "", "PEM bundle of the CAs that sign the server's certificate (e.g. odin devcerts' ca.pem); empty: the system's")
	f.String(&t.files.CertFile, "tls-cert-file", envPrefix+"TLS_CERT_FILE", "", "client certificate (PEM) for a server with mutual TLS; needs --tls-key-file")
	f.String(&t.files.KeyFile, "tls-key-file", envPrefix+"TLS_KEY_FILE", "", "private key (PEM) of --tls-cert-file")
	f.String(&t.files.ServerName, "tls-server-name", envPrefix+"TLS_SERVER_NAME", "", "name the server's certificate must carry (and SNI), e.g. authz; empty: the host dialled")
}

// requested reports whether a TLS flag is set.
func (t *tlsClientFlags) requested() bool { return t.on || t.files != (tlsreload.ClientFiles{}) }

// config returns the client TLS configuration; nil, without error, when
// TLS is not requested.
func (t *tlsClientFlags) config() (*tls.Config, error) {
	if !t.requested() {
		return nil, nil
	}
	return tlsreload.ClientConfig(t.files)
}
