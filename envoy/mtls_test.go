package envoy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"
)

// mtlsFile is the front proxy calling odin authz with mutual TLS, and
// mtlsCluster its authz cluster.
const (
	mtlsFile    = "envoy-grpc-mtls.yaml"
	mtlsCluster = "odin_authz"
	// sdsMount is where envoy-grpc-mtls.yaml expects envoy/mtls/ mounted.
	sdsMount = "/etc/envoy/mtls/"
)

// readSDS reads an SDS file named by its path inside the Envoy container,
// from envoy/mtls/.
func readSDS(path string) ([]byte, error) {
	rel, ok := strings.CutPrefix(path, sdsMount)
	if !ok || rel == "" || strings.Contains(rel, "/") {
		return nil, fmt.Errorf("SDS file %q is not in %s (where envoy/mtls/ is mounted)", path, sdsMount)
	}
	return os.ReadFile(filepath.Join("mtls", rel))
}

func TestEnvoyMTLS(t *testing.T) {
	if err := checkUpstreamMTLS(loadBootstrap(t, mtlsFile), mtlsCluster, readSDS); err != nil {
		t.Errorf("%s:\n%v", mtlsFile, err)
	}
}

// The mTLS file is envoy-grpc.yaml with a transport socket on the authz
// cluster, and nothing else: the two cannot drift apart.
func TestEnvoyMTLSMatchesPlain(t *testing.T) {
	plain, mtls := loadBootstrap(t, "envoy-grpc.yaml"), loadBootstrap(t, mtlsFile)
	clusterNamed(t, mtls, mtlsCluster).TransportSocket = nil
	if diff := cmp.Diff(plain, mtls, protocmp.Transform()); diff != "" {
		t.Errorf("%s differs from envoy-grpc.yaml in more than the transport socket (-plain, +mtls):\n%s", mtlsFile, diff)
	}
}

// checkUpstreamMTLS checks that cluster calls odin authz over TLS the way
// the server accepts it: h2 by ALPN (grpc-go refuses a client without it),
// an SNI, a client certificate, and a validation context that trusts a CA
// and requires the SNI name in the server's certificate. Certificates
// delivered by file-based SDS are read with read and checked too.
func checkUpstreamMTLS(b *bootstrapv3.Bootstrap, cluster string, read func(string) ([]byte, error)) error {
	i := slices.IndexFunc(b.GetStaticResources().GetClusters(), func(c *clusterv3.Cluster) bool { return c.GetName() == cluster })
	if i < 0 {
		return fmt.Errorf("no cluster %q", cluster)
	}
	ts := b.GetStaticResources().GetClusters()[i].GetTransportSocket()
	if ts == nil {
		return fmt.Errorf("cluster %q has no transport_socket: checks would go in plain text", cluster)
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
		return fmt.Errorf("cluster %q: transport_socket is not an UpstreamTlsContext: %w", cluster, err)
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("cluster %q: "+format, append([]any{cluster}, args...)...))
	}
	common := u.GetCommonTlsContext()
	if u.GetSni() == "" {
		fail("UpstreamTlsContext has no sni: the server's name is neither sent nor checked")
	}
	if !slices.Contains(common.GetAlpnProtocols(), "h2") {
		fail("alpn_protocols %v does not offer h2; grpc-go refuses a TLS client without it", common.GetAlpnProtocols())
	}
	if v := common.GetTlsParams().GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO && v < tlsv3.TlsParameters_TLSv1_2 {
		fail("tls_minimum_protocol_version %v: odin authz accepts TLSv1_2 and up", v)
	}

	certs := common.GetTlsCertificates()
	for _, sds := range common.GetTlsCertificateSdsSecretConfigs() {
		s, err := loadSDSSecret(sds, read)
		if err != nil {
			fail("%v", err)
			continue
		}
		if s.GetTlsCertificate() == nil {
			fail("SDS secret %q holds no tls_certificate", sds.GetName())
			continue
		}
		certs = append(certs, s.GetTlsCertificate())
	}
	if len(certs) == 0 {
		fail("no client certificate (tls_certificates or tls_certificate_sds_secret_configs): odin authz with --tls-client-ca-file refuses the connection")
	}
	for _, tc := range certs {
		if tc.GetCertificateChain().GetFilename() == "" || tc.GetPrivateKey().GetFilename() == "" {
			fail("client certificate without a certificate_chain and private_key filename")
		}
	}

	var vc *tlsv3.CertificateValidationContext
	switch {
	case common.GetValidationContext() != nil:
		vc = common.GetValidationContext()
	case common.GetValidationContextSdsSecretConfig() != nil:
		s, err := loadSDSSecret(common.GetValidationContextSdsSecretConfig(), read)
		if err != nil {
			fail("%v", err)
			break
		}
		if vc = s.GetValidationContext(); vc == nil {
			fail("SDS secret %q holds no validation_context", s.GetName())
		}
	default:
		fail("no validation_context or validation_context_sds_secret_config: the server's certificate would not be verified")
	}
	if vc != nil {
		if vc.GetTrustedCa().GetFilename() == "" {
			fail("validation context has no trusted_ca file: no CA to verify odin authz's certificate against")
		}
		if !sanMatches(vc.GetMatchTypedSubjectAltNames(), u.GetSni()) {
			fail("validation context has no DNS subject alt name matcher for the sni %q: any certificate from the CA would be accepted", u.GetSni())
		}
	}
	return errors.Join(errs...)
}

func sanMatches(ms []*tlsv3.SubjectAltNameMatcher, name string) bool {
	for _, m := range ms {
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_DNS && name != "" && stringMatches(m.GetMatcher(), name) {
			return true
		}
	}
	return false
}

// loadSDSSecret reads the file a file-based SDS config names: a
// DiscoveryResponse with exactly one Secret, named as the config names it
// (Envoy refuses another name).
func loadSDSSecret(sds *tlsv3.SdsSecretConfig, read func(string) ([]byte, error)) (*tlsv3.Secret, error) {
	path := sds.GetSdsConfig().GetPathConfigSource().GetPath()
	if path == "" {
		return nil, fmt.Errorf("SDS secret %q: not from a file (path_config_source)", sds.GetName())
	}
	data, err := read(path)
	if err != nil {
		return nil, fmt.Errorf("SDS secret %q: %w", sds.GetName(), err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("SDS file %s: %w", path, err)
	}
	var resp discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(js, &resp); err != nil {
		return nil, fmt.Errorf("SDS file %s: %w", path, err)
	}
	if n := len(resp.GetResources()); n != 1 {
		return nil, fmt.Errorf("SDS file %s: %d resources, want one Secret", path, n)
	}
	s := &tlsv3.Secret{}
	if err := resp.GetResources()[0].UnmarshalTo(s); err != nil {
		return nil, fmt.Errorf("SDS file %s: not a Secret: %w", path, err)
	}
	if err := s.ValidateAll(); err != nil {
		return nil, fmt.Errorf("SDS file %s: %w", path, err)
	}
	if s.GetName() != sds.GetName() {
		return nil, fmt.Errorf("SDS file %s: secret name %q, but the config asks for %q", path, s.GetName(), sds.GetName())
	}
	return s, nil
}

func TestEnvoyMTLSBrokenFail(t *testing.T) {
	editTLS := func(edit func(*tlsv3.UpstreamTlsContext)) func(*testing.T, *bootstrapv3.Bootstrap) {
		return func(t *testing.T, b *bootstrapv3.Bootstrap) {
			editTyped(t, clusterNamed(t, b, mtlsCluster).GetTransportSocket().GetTypedConfig(), edit)
		}
	}
	sdsEdit := func(file, old, replacement string) func(string) ([]byte, error) {
		return func(path string) ([]byte, error) {
			data, err := readSDS(path)
			if err != nil || !strings.HasSuffix(path, file) {
				return data, err
			}
			if !strings.Contains(string(data), old) {
				return nil, fmt.Errorf("test edit: %q not in %s", old, path)
			}
			return []byte(strings.Replace(string(data), old, replacement, 1)), nil
		}
	}
	tests := []struct {
		name    string
		mutate  func(*testing.T, *bootstrapv3.Bootstrap)
		read    func(string) ([]byte, error)
		wantErr string
	}{
		{name: "plain text", wantErr: "no transport_socket", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
			clusterNamed(t, b, mtlsCluster).TransportSocket = nil
		}},
		{name: "no ALPN", wantErr: "does not offer h2", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) { u.GetCommonTlsContext().AlpnProtocols = nil })},
		{name: "ALPN http/1.1 only", wantErr: "does not offer h2", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().AlpnProtocols = []string{"http/1.1"}
		})},
		{name: "no SNI", wantErr: "no sni", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) { u.Sni = "" })},
		{name: "SNI not the certificate's name", wantErr: `subject alt name matcher for the sni "other"`, mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) { u.Sni = "other" })},
		{name: "TLS 1.0 allowed", wantErr: "tls_minimum_protocol_version", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().GetTlsParams().TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_0
		})},
		{name: "no client certificate", wantErr: "no client certificate", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().TlsCertificateSdsSecretConfigs = nil
		})},
		{name: "server certificate not verified", wantErr: "would not be verified", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().ValidationContextType = nil
		})},
		{name: "SDS file missing", wantErr: "nope.yaml", mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetSdsConfig().GetPathConfigSource().Path = sdsMount + "nope.yaml"
		})},
		{name: "SDS file outside the mount", wantErr: "not in " + sdsMount, mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().GetValidationContextSdsSecretConfig().GetSdsConfig().GetPathConfigSource().Path = "/etc/envoy/ca-sds.yaml"
		})},
		{name: "SDS secret of another name", wantErr: `but the config asks for "renamed"`, mutate: editTLS(func(u *tlsv3.UpstreamTlsContext) {
			u.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].Name = "renamed"
		})},
		{name: "SDS CA without trusted_ca", wantErr: "no trusted_ca", read: sdsEdit("ca-sds.yaml", "trusted_ca:", "crl:")},
		{name: "SDS CA without SAN matcher", wantErr: "subject alt name matcher", read: sdsEdit("ca-sds.yaml", "exact: authz", "exact: admin")},
		{name: "SDS client certificate without key", wantErr: "private_key filename", read: sdsEdit("client-sds.yaml", "private_key:", "password:")},
		{name: "SDS client file holds the CA", wantErr: "holds no tls_certificate", read: func(path string) ([]byte, error) {
			data, err := readSDS(strings.Replace(path, "client-sds", "ca-sds", 1))
			return []byte(strings.Replace(string(data), "odin_authz_ca", "odin_authz_client", 1)), err
		}},
		{name: "SDS typo", wantErr: "unknown field", read: sdsEdit("client-sds.yaml", "certificate_chain:", "certificate_chian:")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := loadBootstrap(t, mtlsFile)
			if tt.mutate != nil {
				tt.mutate(t, b)
			}
			read := readSDS
			if tt.read != nil {
				read = tt.read
			}
			err := checkUpstreamMTLS(b, mtlsCluster, read)
			if err == nil {
				t.Fatalf("broken config accepted; want an error mentioning %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error does not mention %q:\n%v", tt.wantErr, err)
			}
		})
	}
}
