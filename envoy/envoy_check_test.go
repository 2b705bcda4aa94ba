package envoy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Every "@type" used in the bootstraps must be linked in, or protojson cannot
	// resolve it. Add the extension's package here when a config starts using it.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
)

// identityHeaders are the headers odin authz sets on the upstream request when
// it allows one (docs/CONTRACT.md, "Identity headers").
var identityHeaders = []string{
	"x-odin-auth-method", "x-odin-subject", "x-odin-org-id", "x-odin-key-id",
	"x-odin-session-id", "x-odin-scopes", "x-odin-tier",
}

// The ext_authz timeout must outlast the server's store deadlines (so a slow
// store ends as the server's 503 JSON, not as an Envoy timeout) yet stay well
// under a client's patience.
const (
	minAuthzTimeout = 250 * time.Millisecond
	maxAuthzTimeout = 2 * time.Second
)

// httpProtocolOptionsKey is the typed_extension_protocol_options key Envoy
// reads a cluster's upstream HTTP settings from.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// parseBootstrap turns an Envoy YAML bootstrap into its proto, rejecting
// unknown fields and unresolvable "@type"s as Envoy does.
func parseBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("decode bootstrap: %w", err)
	}
	return b, nil
}

// checkBootstrap validates b against Envoy's schema, every typed_config
// included, then checks what the schema cannot see. It reports every problem
// it finds, not only the first.
func checkBootstrap(b *bootstrapv3.Bootstrap) error {
	var errs []error
	if err := b.ValidateAll(); err != nil {
		errs = append(errs, fmt.Errorf("bootstrap: %w", err))
	}
	w := &walker{}
	w.message("bootstrap", b.ProtoReflect())
	errs = append(errs, w.errs...)
	for _, d := range w.deprecated {
		errs = append(errs, fmt.Errorf("%s: deprecated field or value; Envoy may reject it", d))
	}

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if _, dup := clusters[c.GetName()]; dup {
			errs = append(errs, fmt.Errorf("duplicate cluster name %q", c.GetName()))
		}
		clusters[c.GetName()] = c
	}
	for _, r := range w.refs {
		if _, ok := clusters[r.cluster]; !ok {
			errs = append(errs, fmt.Errorf("%s: unknown cluster %q", r.path, r.cluster))
		}
	}
	if err := checkAdmin(b.GetAdmin()); err != nil {
		errs = append(errs, err)
	}

	var hcms int
	for _, tc := range w.typed {
		if h, ok := tc.msg.(*hcmv3.HttpConnectionManager); ok {
			hcms++
			errs = append(errs, checkHCM(tc.path, h, clusters)...)
		}
	}
	if hcms == 0 {
		errs = append(errs, errors.New("no http_connection_manager found"))
	}
	return errors.Join(errs...)
}

// checkAdmin keeps Envoy's admin interface off the network.
func checkAdmin(a *bootstrapv3.Admin) error {
	if a == nil {
		return nil
	}
	addr := a.GetAddress().GetSocketAddress().GetAddress()
	if addr != "127.0.0.1" && addr != "::1" {
		return fmt.Errorf("admin: listens on %q; bind it to 127.0.0.1", addr)
	}
	return nil
}

// checkHCM checks one HTTP connection manager: filter order, request ids, the
// x-odin-* scrubbing and the ext_authz settings.
func checkHCM(path string, h *hcmv3.HttpConnectionManager, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	if g := h.GetGenerateRequestId(); g != nil && !g.GetValue() {
		errs = append(errs, fmt.Errorf("%s: generate_request_id is false; the server needs x-request-id", path))
	}
	// The edge appends the true peer to x-forwarded-for and sanitizes
	// client-sent x-envoy-* headers: what odin authz's client address of a
	// key restricted to certain networks rests on, over http_service.
	if !h.GetUseRemoteAddress().GetValue() {
		errs = append(errs, fmt.Errorf("%s: use_remote_address is not true; this Envoy is the edge (docs/DEPLOYMENT.md, \"The client address\")", path))
	}
	if !hasAuthzUnavailableBody(h.GetLocalReplyConfig()) {
		errs = append(errs, fmt.Errorf("%s: local_reply_config has no mapper giving ext_authz 503 replies (UAEX) the UNAVAILABLE JSON body", path))
	}

	filters := h.GetHttpFilters()
	authz, scrub := -1, -1
	for i, f := range filters {
		msg, err := f.GetTypedConfig().UnmarshalNew()
		if err != nil {
			continue // already reported by the walker
		}
		switch m := msg.(type) {
		case *extauthzv3.ExtAuthz:
			if authz >= 0 {
				errs = append(errs, fmt.Errorf("%s: more than one ext_authz filter", path))
			}
			authz = i
			errs = append(errs, checkExtAuthz(fmt.Sprintf("%s.http_filters[%d]", path, i), m, clusters)...)
		case *routerv3.Router:
			if i != len(filters)-1 {
				errs = append(errs, fmt.Errorf("%s: router at http_filters[%d] has filters after it; the router must be the last filter", path, i))
			}
		case *headermutationv3.HeaderMutation:
			if scrub < 0 && removesOdinHeaders(m) {
				scrub = i
			}
		}
	}
	if n := len(filters); n == 0 || !filters[n-1].GetTypedConfig().MessageIs(&routerv3.Router{}) {
		errs = append(errs, fmt.Errorf("%s: the router must be the last http filter", path))
	}
	switch {
	case authz < 0:
		errs = append(errs, fmt.Errorf("%s: no ext_authz filter", path))
	case scrub < 0 || scrub > authz:
		errs = append(errs, fmt.Errorf("%s: no header_mutation filter before ext_authz removing client-sent x-odin-* headers", path))
	}
	return errs
}

// checkExtAuthz checks the settings that make an ext_authz filter fail closed
// and talk to the server the way docs/CONTRACT.md and Envoy's documentation describe.
func checkExtAuthz(path string, e *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(path+": ext_authz "+format, args...))
	}
	if e.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		fail("transport_api_version is %v; it must be V3", e.GetTransportApiVersion())
	}
	if e.GetFailureModeAllow() {
		fail("failure_mode_allow is true; an outage would let every request in")
	}
	if c := e.GetStatusOnError().GetCode(); c != typev3.StatusCode_ServiceUnavailable {
		fail("status_on_error is %v; an outage must reach the client as 503", c)
	}
	checkTimeout := func(d interface{ AsDuration() time.Duration }, isNil bool) {
		switch {
		case isNil:
			fail("timeout is not set (Envoy's 200ms default is shorter than the server's store deadlines)")
		case d.AsDuration() < minAuthzTimeout || d.AsDuration() > maxAuthzTimeout:
			fail("timeout %v is outside [%v, %v]", d.AsDuration(), minAuthzTimeout, maxAuthzTimeout)
		}
	}

	switch {
	case e.GetGrpcService() != nil:
		g := e.GetGrpcService()
		checkTimeout(g.GetTimeout(), g.GetTimeout() == nil)
		name := g.GetEnvoyGrpc().GetClusterName()
		if name == "" {
			fail("grpc_service must use envoy_grpc with a cluster_name")
			break
		}
		if c, ok := clusters[name]; ok && !explicitHTTP2(c) {
			fail("cluster %q has no explicit http2_protocol_options in %s; gRPC needs HTTP/2", name, httpProtocolOptionsKey)
		}
	case e.GetHttpService() != nil:
		hs := e.GetHttpService()
		checkTimeout(hs.GetServerUri().GetTimeout(), hs.GetServerUri().GetTimeout() == nil)
		if hs.GetPathPrefix() != "" || hs.GetPathOverride() != "" {
			fail("http_service rewrites the path (path_prefix %q, path_override %q); the server reads the original path", hs.GetPathPrefix(), hs.GetPathOverride())
		}
		resp := hs.GetAuthorizationResponse()
		for _, want := range []struct {
			field   string
			list    *matcherv3.ListStringMatcher
			headers []string
		}{
			{"allowed_headers", e.GetAllowedHeaders(), []string{"api-key", "x-request-id", "x-forwarded-for"}},
			{"allowed_upstream_headers", resp.GetAllowedUpstreamHeaders(), identityHeaders},
			{"allowed_client_headers", resp.GetAllowedClientHeaders(), []string{"content-type", "www-authenticate", "retry-after"}},
			{"allowed_client_headers_on_success", resp.GetAllowedClientHeadersOnSuccess(), []string{"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"}},
		} {
			for _, h := range want.headers {
				if !listMatches(want.list, h) {
					fail("%s does not let %q through", want.field, h)
				}
			}
		}
	default:
		fail("has neither grpc_service nor http_service")
	}
	return errs
}

// explicitHTTP2 reports whether a cluster is configured to speak HTTP/2
// (prior knowledge), as a gRPC upstream must.
func explicitHTTP2(c *clusterv3.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
	if !ok {
		return false
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(opts); err != nil {
		return false
	}
	return opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// removesOdinHeaders reports whether a header_mutation filter removes every
// request header starting with x-odin-.
func removesOdinHeaders(h *headermutationv3.HeaderMutation) bool {
	for _, m := range h.GetMutations().GetRequestMutations() {
		k := m.GetRemoveOnMatch().GetKeyMatcher()
		if k != nil && stringMatches(k, "x-odin-subject") && stringMatches(k, "x-odin-anything-else") && !stringMatches(k, "x-request-id") {
			return true
		}
	}
	return false
}

// hasAuthzUnavailableBody reports whether some local reply mapper rewrites
// ext_authz's own 503 replies (response flag UAEX) into the UNAVAILABLE JSON body.
func hasAuthzUnavailableBody(c *hcmv3.LocalReplyConfig) bool {
	for _, m := range c.GetMappers() {
		var flags []string
		var codes []uint32
		collectFilter(m.GetFilter(), &flags, &codes)
		body := m.GetBodyFormatOverride().GetJsonFormat().GetFields()
		code := body["error"].GetStructValue().GetFields()["code"].GetStringValue()
		if slices.Contains(flags, "UAEX") && slices.Contains(codes, 503) && code == "UNAVAILABLE" && body["requestId"] != nil {
			return true
		}
	}
	return false
}

// collectFilter gathers the response flags and the status codes (op EQ) an
// access-log filter, or an and_filter of them, requires.
func collectFilter(f *accesslogv3.AccessLogFilter, flags *[]string, codes *[]uint32) {
	switch {
	case f.GetAndFilter() != nil:
		for _, sub := range f.GetAndFilter().GetFilters() {
			collectFilter(sub, flags, codes)
		}
	case f.GetResponseFlagFilter() != nil:
		*flags = append(*flags, f.GetResponseFlagFilter().GetFlags()...)
	case f.GetStatusCodeFilter() != nil:
		if c := f.GetStatusCodeFilter().GetComparison(); c.GetOp() == accesslogv3.ComparisonFilter_EQ {
			*codes = append(*codes, c.GetValue().GetDefaultValue())
		}
	}
}

// listMatches reports whether any pattern of l matches s, as Envoy's header
// list matchers do.
func listMatches(l *matcherv3.ListStringMatcher, s string) bool {
	for _, p := range l.GetPatterns() {
		if stringMatches(p, s) {
			return true
		}
	}
	return false
}

// stringMatches evaluates the literal forms of an Envoy StringMatcher (regexes
// are not used in these configs and never match here).
func stringMatches(m *matcherv3.StringMatcher, s string) bool {
	fold := func(x string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(x)
		}
		return x
	}
	s = fold(s)
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(s, fold(p.Contains))
	}
	return false
}

// typedConfig is one unpacked google.protobuf.Any and where it was found.
type typedConfig struct {
	path string
	msg  proto.Message
}

// clusterRef is a place in the config that names a cluster.
type clusterRef struct {
	path, cluster string
}

// walker visits every message of a config, unpacking each Any, validating it
// (Bootstrap.ValidateAll stops at Any fields) and collecting cluster
// references and deprecated fields on the way.
type walker struct {
	typed      []typedConfig
	refs       []clusterRef
	deprecated []string
	errs       []error
}

func (w *walker) message(path string, m protoreflect.Message) {
	switch v := m.Interface().(type) {
	case *anypb.Any:
		inner, err := v.UnmarshalNew()
		if err != nil {
			w.errs = append(w.errs, fmt.Errorf("%s: unpack %s: %w", path, v.GetTypeUrl(), err))
			return
		}
		if val, ok := inner.(interface{ ValidateAll() error }); ok {
			if err := val.ValidateAll(); err != nil {
				w.errs = append(w.errs, fmt.Errorf("%s (%s): %w", path, v.GetTypeUrl(), err))
			}
		}
		w.typed = append(w.typed, typedConfig{path, inner})
		w.message(path, inner.ProtoReflect())
		return
	case *corev3.GrpcService_EnvoyGrpc:
		w.refs = append(w.refs, clusterRef{path, v.GetClusterName()})
	case *corev3.HttpUri:
		w.refs = append(w.refs, clusterRef{path, v.GetCluster()})
	case *routev3.RouteAction:
		if c := v.GetCluster(); c != "" {
			w.refs = append(w.refs, clusterRef{path, c})
		}
	case *routev3.WeightedCluster_ClusterWeight:
		w.refs = append(w.refs, clusterRef{path, v.GetName()})
	}

	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		w.checkDeprecated(p, fd, v)
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				w.message(fmt.Sprintf("%s[%d]", p, i), v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				w.message(fmt.Sprintf("%s[%s]", p, k.String()), mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			w.message(p, v.Message())
		}
		return true
	})
}

// checkDeprecated records a set field, or enum value, marked deprecated in
// Envoy's protos: Envoy warns about those and rejects some by default.
func (w *walker) checkDeprecated(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if fd.Options().(*descriptorpb.FieldOptions).GetDeprecated() {
		w.deprecated = append(w.deprecated, path)
		return
	}
	if fd.Enum() == nil || fd.IsList() || fd.IsMap() {
		return
	}
	if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil && ev.Options().(*descriptorpb.EnumValueOptions).GetDeprecated() {
		w.deprecated = append(w.deprecated, fmt.Sprintf("%s=%s", path, ev.Name()))
	}
}

// envoyFiles lists the Envoy bootstraps in this directory.
func envoyFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Envoy YAML files found (err %v)", err)
	}
	return files
}

func loadBootstrap(t *testing.T, file string) *bootstrapv3.Bootstrap {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseBootstrap(data)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return b
}
