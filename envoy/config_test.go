package envoy

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

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
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestEnvoyConfigsValid(t *testing.T) {
	for _, file := range envoyFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			if err := checkBootstrap(loadBootstrap(t, file)); err != nil {
				t.Errorf("%s is invalid:\n%v", file, err)
			}
		})
	}
}

// envoySummary is the shape of a front-proxy bootstrap, compared whole so a
// change to filters, clusters or mode shows up as one readable diff.
type envoySummary struct {
	Mode         string // "grpc" or "http"
	AuthzCluster string
	HTTPFilters  []string
	Clusters     []string
	Port         uint32
}

func TestEnvoyConfigShape(t *testing.T) {
	filters := []string{"envoy.filters.http.header_mutation", "envoy.filters.http.ext_authz", "envoy.filters.http.router"}
	want := map[string]envoySummary{
		"envoy-grpc.yaml":      {Mode: "grpc", AuthzCluster: "odin_authz", HTTPFilters: filters, Clusters: []string{"odin_authz", "upstream"}, Port: 8000},
		"envoy-http.yaml":      {Mode: "http", AuthzCluster: "odin_authz_http", HTTPFilters: filters, Clusters: []string{"odin_authz_http", "upstream"}, Port: 8000},
		"envoy-grpc-mtls.yaml": {Mode: "grpc", AuthzCluster: "odin_authz", HTTPFilters: filters, Clusters: []string{"odin_authz", "upstream"}, Port: 8000},
	}
	got := map[string]envoySummary{}
	for _, file := range envoyFiles(t) {
		got[file] = summarize(t, loadBootstrap(t, file))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Envoy configs (-want, +got):\n%s", diff)
	}
}

func summarize(t *testing.T, b *bootstrapv3.Bootstrap) envoySummary {
	t.Helper()
	s := envoySummary{Port: b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue()}
	for _, c := range b.GetStaticResources().GetClusters() {
		s.Clusters = append(s.Clusters, c.GetName())
	}
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		for _, f := range h.GetHttpFilters() {
			s.HTTPFilters = append(s.HTTPFilters, f.GetName())
		}
	})
	editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
		s.Mode, s.AuthzCluster = modeOf(e)
	})
	return s
}

// modeOf tells the gRPC from the HTTP ext_authz mode and names the cluster used.
func modeOf(e *extauthzv3.ExtAuthz) (mode, cluster string) {
	if e.GetHttpService() != nil {
		return "http", e.GetHttpService().GetServerUri().GetCluster()
	}
	return "grpc", e.GetGrpcService().GetEnvoyGrpc().GetClusterName()
}

// brokenEnvoy is a deliberately broken copy of a shipped config and the
// problem validation must report for it.
type brokenEnvoy struct {
	name    string
	only    string                                       // "grpc" or "http" to apply to one mode only
	yaml    func(string) string                          // edits the YAML text before parsing
	mutate  func(t *testing.T, b *bootstrapv3.Bootstrap) // edits the parsed config
	wantErr string                                       // must appear in the error (case, '_' ignored)
}

var brokenEnvoyCases = []brokenEnvoy{
	{name: "route to unknown cluster", wantErr: `unknown cluster "nope"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
			h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nope"}
		})
	}},
	{name: "ext_authz names unknown cluster", wantErr: `unknown cluster "nope"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			if g := e.GetGrpcService().GetEnvoyGrpc(); g != nil {
				g.ClusterName = "nope"
			} else {
				e.GetHttpService().GetServerUri().HttpUpstreamType = &corev3.HttpUri_Cluster{Cluster: "nope"}
			}
		})
	}},
	{name: "empty grpc cluster_name", only: "grpc", wantErr: "ClusterName", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.GetGrpcService().GetEnvoyGrpc().ClusterName = "" })
	}},
	{name: "duplicate cluster", wantErr: "duplicate cluster", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		cs := b.GetStaticResources().GetClusters()
		b.GetStaticResources().Clusters = append(cs, proto.Clone(cs[0]).(*clusterv3.Cluster))
	}},
	{name: "router before ext_authz", wantErr: "router must be the last", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		swapFilters(t, b, &extauthzv3.ExtAuthz{}, &routerv3.Router{})
	}},
	{name: "filter after router", wantErr: "router must be the last", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
			scrub := h.GetHttpFilters()[filterIndex(t, h, &headermutationv3.HeaderMutation{})]
			h.HttpFilters = append(h.HttpFilters, proto.Clone(scrub).(*hcmv3.HttpFilter))
		})
	}},
	{name: "no ext_authz filter", wantErr: "no ext_authz filter", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
			i := filterIndex(t, h, &extauthzv3.ExtAuthz{})
			h.HttpFilters = slices.Delete(h.HttpFilters, i, i+1)
		})
	}},
	{name: "missing stat_prefix", wantErr: "StatPrefix", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.StatPrefix = "" })
	}},
	{name: "status_on_error code 0", wantErr: "status_on_error", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.StatusOnError = &typev3.HttpStatus{Code: 0} })
	}},
	{name: "status_on_error left at 403", wantErr: "status_on_error", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.StatusOnError = nil })
	}},
	{name: "failure_mode_allow true", wantErr: "failure_mode_allow", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.FailureModeAllow = true })
	}},
	{name: "transport_api_version V2", wantErr: "transport_api_version", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		//lint:ignore SA1019 the test proves the deprecated V2 API is refused
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.TransportApiVersion = corev3.ApiVersion_V2 })
	}},
	{name: "transport_api_version unset", wantErr: "transport_api_version", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.TransportApiVersion = corev3.ApiVersion_AUTO })
	}},
	{name: "ext_authz timeout unset", wantErr: "timeout", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			if e.GetGrpcService() != nil {
				e.GetGrpcService().Timeout = nil
			} else {
				e.GetHttpService().GetServerUri().Timeout = nil
			}
		})
	}},
	{name: "ext_authz timeout 600s", wantErr: "timeout 10m0s is outside", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			if e.GetGrpcService() != nil {
				e.GetGrpcService().Timeout = durationpb.New(600 * time.Second)
			} else {
				e.GetHttpService().GetServerUri().Timeout = durationpb.New(600 * time.Second)
			}
		})
	}},
	{name: "authz cluster without protocol options", only: "grpc", wantErr: "gRPC needs HTTP/2", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		delete(clusterNamed(t, b, "odin_authz").TypedExtensionProtocolOptions, httpProtocolOptionsKey)
	}},
	{name: "authz cluster on HTTP/1.1", only: "grpc", wantErr: "gRPC needs HTTP/2", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		a := clusterNamed(t, b, "odin_authz").GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
		editTyped(t, a, func(o *upstreamhttpv3.HttpProtocolOptions) {
			o.GetExplicitHttpConfig().ProtocolConfig = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}
		})
	}},
	{name: "client x-odin headers not removed", wantErr: "removing client-sent x-odin", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
			i := filterIndex(t, h, &headermutationv3.HeaderMutation{})
			h.HttpFilters = slices.Delete(h.HttpFilters, i, i+1)
		})
	}},
	{name: "x-odin removal after ext_authz", wantErr: "removing client-sent x-odin", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		swapFilters(t, b, &headermutationv3.HeaderMutation{}, &extauthzv3.ExtAuthz{})
	}},
	{name: "x-odin removal of one exact name", wantErr: "removing client-sent x-odin", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
			editTyped(t, h.GetHttpFilters()[filterIndex(t, h, &headermutationv3.HeaderMutation{})].GetTypedConfig(), func(m *headermutationv3.HeaderMutation) {
				m.GetMutations().GetRequestMutations()[0].GetRemoveOnMatch().GetKeyMatcher().MatchPattern = nil
			})
		})
	}},
	{name: "request ids off", wantErr: "generate_request_id", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.GenerateRequestId = wrapperspb.Bool(false) })
	}},
	{name: "outage reply without JSON body", wantErr: "local_reply_config", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.LocalReplyConfig = nil })
	}},
	{name: "admin on all interfaces", wantErr: "admin", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		b.GetAdmin().GetAddress().GetSocketAddress().Address = "0.0.0.0"
	}},
	{name: "deprecated field", wantErr: "dns_refresh_rate: deprecated", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		//lint:ignore SA1019 the test proves deprecated fields are refused
		clusterNamed(t, b, "upstream").DnsRefreshRate = durationpb.New(time.Second)
	}},
	{name: "path_prefix set", only: "http", wantErr: "path_prefix", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.GetHttpService().PathPrefix = "/check" })
	}},
	{name: "identity header not passed upstream", only: "http", wantErr: `allowed_upstream_headers does not let "x-odin-tier"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			l := e.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders()
			l.Patterns = slices.DeleteFunc(l.Patterns, func(p *matcherv3.StringMatcher) bool { return p.GetExact() == "x-odin-tier" })
		})
	}},
	{name: "denial loses content-type", only: "http", wantErr: `allowed_client_headers does not let "content-type"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			l := e.GetHttpService().GetAuthorizationResponse().GetAllowedClientHeaders()
			l.Patterns = slices.DeleteFunc(l.Patterns, func(p *matcherv3.StringMatcher) bool { return p.GetExact() == "content-type" })
		})
	}},
	{name: "use_remote_address off", wantErr: "use_remote_address is not true", mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editHCM(t, b, func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = nil })
	}},
	{name: "x-forwarded-for not sent to authz", only: "http", wantErr: `allowed_headers does not let "x-forwarded-for"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) {
			l := e.GetAllowedHeaders()
			l.Patterns = slices.DeleteFunc(l.Patterns, func(p *matcherv3.StringMatcher) bool { return p.GetExact() == "x-forwarded-for" })
		})
	}},
	{name: "api-key not sent to authz", only: "http", wantErr: `allowed_headers does not let "api-key"`, mutate: func(t *testing.T, b *bootstrapv3.Bootstrap) {
		editExtAuthz(t, b, func(e *extauthzv3.ExtAuthz) { e.AllowedHeaders = nil })
	}},
	{name: "typo in a typed_config field", wantErr: "unknown field", yaml: func(s string) string {
		return strings.Replace(s, "stat_prefix: odin", "stat_prefx: odin", 1)
	}},
	{name: "unresolvable @type", wantErr: "unable to resolve", yaml: func(s string) string {
		return strings.Replace(s, "filters.http.router.v3.Router", "filters.http.nope.v3.Nope", 1)
	}},
}

func TestEnvoyBrokenConfigsFail(t *testing.T) {
	ran := map[string]int{}
	for _, file := range envoyFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		editExtAuthz(t, loadBootstrap(t, file), func(e *extauthzv3.ExtAuthz) { mode, _ = modeOf(e) })
		for _, tc := range brokenEnvoyCases {
			if tc.only != "" && tc.only != mode {
				continue
			}
			ran[tc.name]++
			t.Run(file+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				text := string(data)
				if tc.yaml != nil {
					if text = tc.yaml(text); text == string(data) {
						t.Fatal("YAML edit changed nothing")
					}
				}
				b, err := parseBootstrap([]byte(text))
				if err == nil {
					if tc.mutate != nil {
						tc.mutate(t, b)
					}
					err = checkBootstrap(b)
				}
				if err == nil {
					t.Fatalf("broken config accepted; want an error mentioning %q", tc.wantErr)
				}
				if !mentions(err, tc.wantErr) {
					t.Errorf("error does not mention %q:\n%v", tc.wantErr, err)
				}
			})
		}
	}
	for _, tc := range brokenEnvoyCases {
		if ran[tc.name] == 0 {
			t.Errorf("case %q applied to no config", tc.name)
		}
	}
}

// mentions reports whether err's text contains want, ignoring case and '_' so
// that "status_on_error" also finds the validator's "StatusOnError".
func mentions(err error, want string) bool {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "_", "") }
	return strings.Contains(norm(err.Error()), norm(want))
}

// editTyped unpacks a into T, lets edit change it and packs it back in place.
// It reports false, changing nothing, when a holds another type.
func editTyped[T proto.Message](t *testing.T, a *anypb.Any, edit func(T)) bool {
	t.Helper()
	msg, err := a.UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := msg.(T)
	if !ok {
		return false
	}
	edit(m)
	if err := a.MarshalFrom(m); err != nil {
		t.Fatal(err)
	}
	return true
}

// editHCM applies edit to the first HTTP connection manager of b.
func editHCM(t *testing.T, b *bootstrapv3.Bootstrap, edit func(*hcmv3.HttpConnectionManager)) {
	t.Helper()
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if editTyped(t, f.GetTypedConfig(), edit) {
					return
				}
			}
		}
	}
	t.Fatal("no http_connection_manager")
}

// editExtAuthz applies edit to the ext_authz filter of the first HTTP
// connection manager of b.
func editExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap, edit func(*extauthzv3.ExtAuthz)) {
	t.Helper()
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		editTyped(t, h.GetHttpFilters()[filterIndex(t, h, &extauthzv3.ExtAuthz{})].GetTypedConfig(), edit)
	})
}

// swapFilters swaps the HTTP filters of the types of x and y.
func swapFilters(t *testing.T, b *bootstrapv3.Bootstrap, x, y proto.Message) {
	t.Helper()
	editHCM(t, b, func(h *hcmv3.HttpConnectionManager) {
		fs := h.GetHttpFilters()
		i, j := filterIndex(t, h, x), filterIndex(t, h, y)
		fs[i], fs[j] = fs[j], fs[i]
	})
}

// filterIndex returns the index of the first HTTP filter whose typed_config
// has the type of like.
func filterIndex(t *testing.T, h *hcmv3.HttpConnectionManager, like proto.Message) int {
	t.Helper()
	for i, f := range h.GetHttpFilters() {
		if f.GetTypedConfig().MessageIs(like) {
			return i
		}
	}
	t.Fatalf("no %T http filter", like)
	return -1
}

func clusterNamed(t *testing.T, b *bootstrapv3.Bootstrap, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}
