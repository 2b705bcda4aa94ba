package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/telemetry/otlptest"
)

// Trace contexts as Envoy and clients send them.
const (
	envoyTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpan   = "00f067aa0ba902b7"
	envoyParent = "00-" + envoyTrace + "-" + envoySpan + "-01"
	clientTrace = "0af7651916cd43dd8448eb211c80319c"
	clientSpan  = "b7ad6b7169203331"
	b3Trace     = "80f198ee56343ba864fe8b2a57d3eff7"
	b3Span      = "e457b5a2e4d86bd1"
	secret      = "odin_sk_live_s3cr3t0123456789abcdefghijklmnop"
)

func TestFillFromEnv(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://collector:4318/base/",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "http/protobuf",
		"OTEL_TRACES_SAMPLER":                "parentbased_always_on",
		"OTEL_TRACES_SAMPLER_ARG":            "0.25",
		"OTEL_SERVICE_NAME":                  "authz-eu",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "",
	}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name string
		in   telemetry.Config
		env  map[string]string // overrides
		want telemetry.Config
	}{
		{name: "all from OTEL_*; the base endpoint gets the signal path",
			want: telemetry.Config{Endpoint: "http://collector:4318/base/v1/traces", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SampleRatio: "0.25", ServiceName: "authz-eu"}},
		{name: "flags and ODIN_* win",
			in:   telemetry.Config{Endpoint: "http://odin-collector:4317", Protocol: "grpc", SampleRatio: "0.5"},
			want: telemetry.Config{Endpoint: "http://odin-collector:4317", Protocol: "grpc", Sampler: "parentbased_always_on", SampleRatio: "0.5", ServiceName: "authz-eu"}},
		{name: "the traces endpoint is used as is and beats the base one",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom"},
			want: telemetry.Config{Endpoint: "http://traces:4318/custom", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SampleRatio: "0.25", ServiceName: "authz-eu"}},
		{name: "a gRPC base endpoint is the host only",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
			want: telemetry.Config{Endpoint: "http://collector:4317", Protocol: "grpc", Sampler: "parentbased_always_on", SampleRatio: "0.25", ServiceName: "authz-eu"}},
		{name: "OTEL_SDK_DISABLED turns it off",
			in:   telemetry.Config{Endpoint: "http://odin-collector:4317"},
			env:  map[string]string{"OTEL_SDK_DISABLED": "true"},
			want: telemetry.Config{Endpoint: "http://odin-collector:4317", Protocol: "http/protobuf", Sampler: "parentbased_always_on", SampleRatio: "0.25", ServiceName: "authz-eu", Disabled: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in
			c.FillFromEnv(func(k string) string {
				if v, ok := tt.env[k]; ok {
					return v
				}
				return getenv(k)
			})
			if diff := cmp.Diff(tt.want, c); diff != "" {
				t.Errorf("(-want, +got)\n%s", diff)
			}
			if c.Enabled() == tt.want.Disabled {
				t.Errorf("Enabled() = %v with Disabled %v", c.Enabled(), tt.want.Disabled)
			}
		})
	}
}

// TestOffByDefault: no endpoint, no tracing: no exporter goroutine, no gRPC
// options, the handlers returned as given. Not parallel, so that the
// goroutine dump sees no other test's provider.
func TestOffByDefault(t *testing.T) {
	var cfg telemetry.Config
	cfg.FillFromEnv(func(string) string { return "" })
	p, err := telemetry.New(t.Context(), cfg, telemetry.Resource{Service: "odin-authz"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() {
		t.Fatal("tracing on without an endpoint")
	}
	if opts := p.GRPCServerOptions(); opts != nil {
		t.Errorf("GRPCServerOptions() = %d options, want none", len(opts))
	}
	h := http.NewServeMux()
	if got := p.ForwardAuthHandler(h); got != h {
		t.Error("ForwardAuthHandler wrapped the handler with tracing off")
	}
	if got := p.AdminHandler(h); got != h {
		t.Error("AdminHandler wrapped the handler with tracing off")
	}
	var stacks bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2)
	if strings.Contains(stacks.String(), "go.opentelemetry.io") {
		t.Errorf("OpenTelemetry goroutines with tracing off:\n%s", stacks.String())
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Error(err)
	}
	var nilProvider *telemetry.Provider
	if nilProvider.Enabled() || nilProvider.GRPCServerOptions() != nil || nilProvider.Shutdown(t.Context()) != nil {
		t.Error("a nil Provider must be tracing off")
	}
	if telemetry.Recording(t.Context()) {
		t.Error("Recording without a span")
	}
	telemetry.Annotate(t.Context(), telemetry.Decision{RequestID: "r"}) // no span: nothing to do, no panic
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []telemetry.Config{
		{Endpoint: "collector:4317"},
		{Endpoint: "ftp://collector:4317"},
		{Endpoint: "http://collector:4317", Protocol: "thrift"},
		{Endpoint: "http://collector:4317", Sampler: "sometimes"},
		{Endpoint: "http://collector:4317", SampleRatio: "1.5"},
		{Endpoint: "http://collector:4317", SampleRatio: "half"},
	} {
		if _, err := telemetry.New(t.Context(), c, telemetry.Resource{Service: "odin-authz"}, nil); err == nil {
			t.Errorf("New(%+v) = nil error", c)
		}
	}
}

// fakeAuthz answers Check the way extauthz does for tracing: it annotates
// the span in its context with the decision.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	id := h.GetHeaders()["x-request-id"]
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if hv.GetKey() == "x-request-id" {
			id = hv.GetValue()
		}
	}
	telemetry.Annotate(ctx, telemetry.Decision{RequestID: id, Code: "FORBIDDEN", Reason: "missing_scope",
		Credential: "api_key", KeyID: "key_must_not_show", Method: h.GetMethod(), Path: h.GetPath()})
	return &authv3.CheckResponse{Status: &status.Status{Code: 7}}, nil
}

type grpcEnv struct {
	rec    *tracetest.SpanRecorder
	authz  authv3.AuthorizationClient
	health healthpb.HealthClient
}

func startGRPC(t *testing.T, ratio string) *grpcEnv {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	p, err := telemetry.New(t.Context(), telemetry.Config{Processor: rec, SampleRatio: ratio}, telemetry.Resource{Service: "odin-authz"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(p.GRPCServerOptions()...)
	authv3.RegisterAuthorizationServer(srv, fakeAuthz{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcEnv{rec: rec, authz: authv3.NewAuthorizationClient(conn), health: healthpb.NewHealthClient(conn)}
}

func checkRequest(headers map[string]string, raw []*corev3.HeaderValue) *authv3.CheckRequest {
	h := map[string]string{":path": "/v1/scans?token=q", "authorization": "Bearer " + secret, "x-request-id": "req-trace-1"}
	for k, v := range headers {
		h[k] = v
	}
	hr := &authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/v1/scans?token=q", Headers: h}
	if raw != nil {
		hr.Headers, hr.HeaderMap = nil, &corev3.HeaderMap{Headers: raw}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: hr}}}
}

// waitEnded waits for n spans to have ended: the server ends a span after
// the response is on its way, so the client may see the answer first.
func waitEnded(t *testing.T, rec *tracetest.SpanRecorder, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans := rec.Ended()
		if len(spans) >= n || time.Now().After(deadline) {
			if len(spans) != n {
				t.Fatalf("%d spans ended, want %d", len(spans), n)
			}
			return spans
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func TestCheckSpanParent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		md        []string // gRPC metadata, as Envoy sends it with tracing on
		headers   map[string]string
		raw       []*corev3.HeaderValue
		wantTrace string // "" = a new root
		wantSpan  string
	}{
		{name: "W3C in gRPC metadata", md: []string{"traceparent", envoyParent}, wantTrace: envoyTrace, wantSpan: envoySpan},
		{name: "B3 in gRPC metadata", md: []string{"x-b3-traceid", b3Trace, "x-b3-spanid", b3Span, "x-b3-sampled", "1"}, wantTrace: b3Trace, wantSpan: b3Span},
		{name: "traceparent of the checked request",
			headers: map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"}, wantTrace: clientTrace, wantSpan: clientSpan},
		{name: "B3 of the checked request",
			headers: map[string]string{"x-b3-traceid": b3Trace, "x-b3-spanid": b3Span, "x-b3-sampled": "1"}, wantTrace: b3Trace, wantSpan: b3Span},
		{name: "b3 single header of the checked request",
			headers: map[string]string{"b3": b3Trace + "-" + b3Span + "-1"}, wantTrace: b3Trace, wantSpan: b3Span},
		{name: "raw header_map (encode_raw_headers)",
			raw:       []*corev3.HeaderValue{{Key: "Traceparent", RawValue: []byte("00-" + clientTrace + "-" + clientSpan + "-01")}, {Key: "x-request-id", Value: "req-trace-1"}},
			wantTrace: clientTrace, wantSpan: clientSpan},
		{name: "metadata wins over the checked request",
			md: []string{"traceparent", envoyParent}, headers: map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01"},
			wantTrace: envoyTrace, wantSpan: envoySpan},
		{name: "traceparent wins over B3",
			headers:   map[string]string{"traceparent": "00-" + clientTrace + "-" + clientSpan + "-01", "x-b3-traceid": b3Trace, "x-b3-spanid": b3Span, "x-b3-sampled": "1"},
			wantTrace: clientTrace, wantSpan: clientSpan},
		{name: "a malformed traceparent is ignored", headers: map[string]string{"traceparent": "00-zz-" + clientSpan + "-01"}},
		{name: "no context: a new root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := startGRPC(t, "1")
			ctx := t.Context()
			if tt.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			}
			if _, err := e.authz.Check(ctx, checkRequest(tt.headers, tt.raw)); err != nil {
				t.Fatal(err)
			}
			span := waitEnded(t, e.rec, 1)[0]
			if span.Name() != "envoy.service.auth.v3.Authorization/Check" {
				t.Errorf("span name %q", span.Name())
			}
			gotTrace, gotParent := span.SpanContext().TraceID().String(), span.Parent().SpanID().String()
			if tt.wantTrace == "" {
				if span.Parent().IsValid() {
					t.Errorf("parent %s/%s, want a root span", span.Parent().TraceID(), gotParent)
				}
			} else if gotTrace != tt.wantTrace || gotParent != tt.wantSpan || !span.Parent().IsRemote() {
				t.Errorf("trace %s parent %s, want %s %s (remote)", gotTrace, gotParent, tt.wantTrace, tt.wantSpan)
			}
			a := attrs(span)
			want := map[string]string{"odin.request_id": "req-trace-1", "odin.decision": "FORBIDDEN", "odin.reason": "missing_scope",
				"odin.credential": "api_key", "odin.request.method": "POST", "odin.request.path": "/v1/scans", "rpc.method": "envoy.service.auth.v3.Authorization/Check"}
			for k, v := range want {
				if a[k] != v {
					t.Errorf("attribute %s = %q, want %q", k, a[k], v)
				}
			}
			if _, ok := a["odin.key_id"]; ok {
				t.Error("a denial records no key id")
			}
			for k, v := range a {
				if strings.Contains(v, secret) || strings.Contains(v, "token=q") {
					t.Errorf("attribute %s = %q carries a secret or the query", k, v)
				}
			}
		})
	}
}

// TestOnlyCheckIsTraced: health checks (every few seconds from Envoy and
// Kubernetes) make no spans.
func TestOnlyCheckIsTraced(t *testing.T) {
	t.Parallel()
	e := startGRPC(t, "1")
	if _, err := e.health.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.authz.Check(t.Context(), checkRequest(nil, nil)); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, e.rec, 1)
	time.Sleep(50 * time.Millisecond)
	if n := len(e.rec.Ended()); n != 1 {
		t.Errorf("%d spans, want only Check's", n)
	}
}

// TestSampling: ratio 0 records no new trace but follows a sampled parent.
func TestSampling(t *testing.T) {
	t.Parallel()
	e := startGRPC(t, "0")
	if _, err := e.authz.Check(t.Context(), checkRequest(nil, nil)); err != nil {
		t.Fatal(err)
	}
	unsampled := "00-" + clientTrace + "-" + clientSpan + "-00"
	if _, err := e.authz.Check(t.Context(), checkRequest(map[string]string{"traceparent": unsampled}, nil)); err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", envoyParent)
	if _, err := e.authz.Check(ctx, checkRequest(nil, nil)); err != nil {
		t.Fatal(err)
	}
	spans := waitEnded(t, e.rec, 1)
	if got := spans[0].SpanContext().TraceID().String(); got != envoyTrace {
		t.Errorf("recorded trace %s, want only Envoy's sampled %s", got, envoyTrace)
	}
}

func TestForwardAuthSpan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		headers           map[string]string
		wantTrace, parent string
	}{
		{name: "traceparent", headers: map[string]string{"Traceparent": envoyParent}, wantTrace: envoyTrace, parent: envoySpan},
		{name: "B3 multi", headers: map[string]string{"X-B3-Traceid": b3Trace, "X-B3-Spanid": b3Span, "X-B3-Sampled": "1"}, wantTrace: b3Trace, parent: b3Span},
		{name: "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			p, err := telemetry.New(t.Context(), telemetry.Config{Processor: rec}, telemetry.Resource{Service: "odin-authz"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h := p.ForwardAuthHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				telemetry.Annotate(r.Context(), telemetry.Decision{RequestID: "req-fa", Credential: "jwt", UserID: "user_1", Method: "GET", Path: "/v1/scans"})
			}))
			req := httptest.NewRequest("GET", "/auth", nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			span := waitEnded(t, rec, 1)[0]
			if span.Name() != "forward-auth" {
				t.Errorf("name %q", span.Name())
			}
			if tt.wantTrace == "" && span.Parent().IsValid() || tt.wantTrace != "" && (span.SpanContext().TraceID().String() != tt.wantTrace || span.Parent().SpanID().String() != tt.parent) {
				t.Errorf("trace %s parent %s, want %q %q", span.SpanContext().TraceID(), span.Parent().SpanID(), tt.wantTrace, tt.parent)
			}
			if a := attrs(span); a["odin.decision"] != "allow" || a["odin.user_id"] != "user_1" || a["http.response.status_code"] != "200" {
				t.Errorf("attributes %v", a)
			}
		})
	}
}

func TestAdminSpan(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	p, err := telemetry.New(t.Context(), telemetry.Config{Processor: rec}, telemetry.Resource{Service: "odin-admin"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	api := http.NewServeMux() // the admin API's own mux, behind the service's
	api.HandleFunc("POST /v1/keys/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		telemetry.AnnotateActor(r.Context(), "org")
		w.Header().Set("X-Request-Id", "req-admin-1")
		w.WriteHeader(http.StatusOK)
	})
	outer := http.NewServeMux()
	outer.HandleFunc("GET /healthz", func(http.ResponseWriter, *http.Request) {})
	outer.Handle("/", api)
	h := p.AdminHandler(outer, "/healthz")
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/healthz", nil))
	req := httptest.NewRequest("POST", "/v1/keys/key_123/revoke", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	h.ServeHTTP(httptest.NewRecorder(), req)
	spans := waitEnded(t, rec, 1) // none for /healthz
	if spans[0].Name() != "POST /v1/keys/{id}/revoke" {
		t.Errorf("name %q, want the route pattern", spans[0].Name())
	}
	a := attrs(spans[0])
	want := map[string]string{"http.route": "/v1/keys/{id}/revoke", "odin.request_id": "req-admin-1", "odin.actor": "org", "http.response.status_code": "200"}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, a[k], v)
		}
	}
	for k, v := range a {
		if strings.Contains(v, secret) {
			t.Errorf("attribute %s carries the token", k)
		}
	}
}

// TestExport sends spans to a real OTLP receiver over both protocols; the
// batch is flushed by Shutdown.
func TestExport(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			start := otlptest.StartGRPC
			if protocol == "http/protobuf" {
				start = otlptest.StartHTTP
			}
			recv, endpoint := start(t)
			p, err := telemetry.New(t.Context(), telemetry.Config{Endpoint: endpoint, Protocol: protocol},
				telemetry.Resource{Service: "odin-authz", Instance: "r-test"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			h := p.ForwardAuthHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/auth", nil))
			if err := p.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			spans := recv.Spans()
			if len(spans) != 1 || spans[0].Name != "forward-auth" {
				t.Fatalf("received %+v, want the forward-auth span", spans)
			}
			if r := spans[0].Resource; r["service.name"] != "odin-authz" || r["service.instance.id"] != "r-test" || r["service.version"] == "" {
				t.Errorf("resource %v", r)
			}
		})
	}
}

// TestExportFailureIsLogged: with no collector the service logs (once) and
// carries on; Shutdown is bounded by its context.
func TestExportFailureIsLogged(t *testing.T) {
	t.Parallel()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	logs := &logBuffer{}
	p, err := telemetry.New(t.Context(), telemetry.Config{Endpoint: "http://" + addr, Protocol: "http/protobuf"},
		telemetry.Resource{Service: "odin-authz"}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p.ForwardAuthHandler(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/auth", nil))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_ = p.Shutdown(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if !strings.Contains(logs.String(), "trace export failed") {
		t.Errorf("no export failure logged:\n%s", logs.String())
	}
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
