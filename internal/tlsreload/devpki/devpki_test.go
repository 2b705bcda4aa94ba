package devpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	ca, err := NewCA("dev CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server([]string{"authz", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("envoy", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "authz"}); err != nil {
		t.Errorf("server certificate for authz: %v", err)
	}
	if err := srv.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("server certificate for 127.0.0.1: %v", err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("client certificate verifies as a server certificate")
	}
	for _, l := range []*Leaf{srv, cli} {
		if _, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM); err != nil {
			t.Errorf("%s: PEM pair: %v", l.Cert.Subject.CommonName, err)
		}
	}
	if srv.Cert.SerialNumber.Cmp(cli.Cert.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	if got := srv.Cert.IPAddresses; len(got) != 1 || !got[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs %v", got)
	}

	// A CA written out and read back issues certificates the first one trusts.
	again, err := LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	next, err := again.Server([]string{"authz"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "authz"}); err != nil {
		t.Errorf("certificate from the reloaded CA: %v", err)
	}
	if _, err := LoadCA(srv.CertPEM, srv.KeyPEM); err == nil {
		t.Error("LoadCA accepted a server certificate")
	}
	if _, err := LoadCA(ca.CertPEM, []byte("nope")); err == nil {
		t.Error("LoadCA accepted a garbage key")
	}
	if _, err := ca.Server(nil, time.Hour); err == nil {
		t.Error("server certificate without hosts")
	}
	if _, err := ca.Client("x", 0); err == nil {
		t.Error("zero validity accepted")
	}
}
