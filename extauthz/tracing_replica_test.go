package extauthz_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// Trace contexts: Envoy's (gRPC metadata, when its tracing is on) and the
// client's (the checked request's own headers).
const (
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"
	userTraceID  = "0af7651916cd43dd8448eb211c80319c"
	userSpanID   = "b7ad6b7169203331"
	b3TraceID    = "80f198ee56343ba864fe8b2a57d3eff7"
	b3SpanID     = "e457b5a2e4d86bd1"
)

func traceparent(trace, span string) string { return "00-" + trace + "-" + span + "-01" }

// startTraced starts a replica whose spans go to an in-process recorder.
func startTraced(t *testing.T, cfg authzsvc.Config) (*authztest.Replica, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	cfg.Tracing = telemetry.Config{Processor: rec}
	return authztest.StartReplica(t, cfg), rec
}

// endedSpan waits for the one span of trace to end: the server ends it
// after the answer is on its way.
func endedSpan(t *testing.T, rec *tracetest.SpanRecorder, trace string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == trace {
				found = append(found, s)
			}
		}
		if len(found) == 1 {
			return found[0]
		}
		if len(found) > 1 || time.Now().After(deadline) {
			t.Fatalf("%d spans of trace %s, want 1 (all: %d)", len(found), trace, len(rec.Ended()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// spanAttrs flattens a span's attributes, and fails if any carries one of
// the secrets.
func spanAttrs(t *testing.T, s sdktrace.ReadOnlySpan, secrets ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		v := kv.Value.String()
		m[string(kv.Key)] = v
		for _, secret := range secrets {
			if strings.Contains(v, secret) {
				t.Errorf("attribute %s = %q carries a credential", kv.Key, v)
			}
		}
	}
	if strings.Contains(s.Name(), "odin_sk_") || strings.Contains(s.Status().Description, "odin_sk_") {
		t.Errorf("span name or status carries a credential: %q %q", s.Name(), s.Status().Description)
	}
	return m
}

func wantAttrs(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestCheckSpans(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	r, rec := startTraced(t, f.Config())
	key, k := f.CreateKey(t, keystore.NewKey{UserID: "user_trace", Scopes: []string{"scans:read", "scans:write"}})
	forged := key[:len(key)-3] + "000"

	t.Run("parent from Envoy's gRPC metadata", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", traceparent(envoyTraceID, envoySpanID))
		resp, err := r.Client.Check(ctx, authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-trace-allow"}))
		if err != nil || authztest.HTTPStatus(resp) != 200 {
			t.Fatalf("Check: %v %v", resp, err)
		}
		s := endedSpan(t, rec, envoyTraceID)
		if s.Parent().SpanID().String() != envoySpanID || !s.Parent().IsRemote() || s.SpanKind().String() != "server" {
			t.Errorf("parent %s remote %v kind %s, want Envoy's span", s.Parent().SpanID(), s.Parent().IsRemote(), s.SpanKind())
		}
		wantAttrs(t, spanAttrs(t, s, key), map[string]string{
			"odin.request_id": "req-trace-allow", "odin.decision": "allow", "odin.credential": "api_key",
			"odin.key_id": k.ID, "odin.user_id": "user_trace", "odin.request.method": "GET", "odin.request.path": "/v1/scans",
			"rpc.response.status_code": "OK",
		})
	})

	t.Run("parent from the checked request's traceparent", func(t *testing.T) {
		resp, err := r.Client.Check(t.Context(), authztest.EnvoyRequest("POST", "/v1/scans", map[string]string{
			"api-key": forged, "x-request-id": "req-trace-deny", "traceparent": traceparent(userTraceID, userSpanID)}))
		if err != nil || authztest.HTTPStatus(resp) != 401 {
			t.Fatalf("Check: %v %v", resp, err)
		}
		s := endedSpan(t, rec, userTraceID)
		if s.Parent().SpanID().String() != userSpanID {
			t.Errorf("parent %s, want the request's %s", s.Parent().SpanID(), userSpanID)
		}
		a := spanAttrs(t, s, key, forged, forged[len(forged)-12:])
		wantAttrs(t, a, map[string]string{"odin.request_id": "req-trace-deny", "odin.decision": "UNAUTHORIZED", "odin.credential": "api_key", "odin.request.method": "POST"})
		if a["odin.key_id"] != "" || a["odin.user_id"] != "" {
			t.Errorf("a denial names no key or user: %v", a)
		}
	})

	t.Run("B3 of the checked request", func(t *testing.T) {
		if _, err := r.Client.Check(t.Context(), authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{
			"x-b3-traceid": b3TraceID, "x-b3-spanid": b3SpanID, "x-b3-sampled": "1"})); err != nil {
			t.Fatal(err)
		}
		s := endedSpan(t, rec, b3TraceID)
		wantAttrs(t, spanAttrs(t, s), map[string]string{"odin.decision": "UNAUTHORIZED", "odin.credential": "none", "odin.reason": "missing"})
	})
}

func TestCheckSpanJWT(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	is := authztest.NewIssuer(t)
	r, rec := startTraced(t, authztest.JWTConfig(f, is))
	tok := is.Token(t, devissuer.Claims{Subject: "user_jwt", SessionID: "sess_jwt1", AuthorizedParty: "https://app.odin.test"})
	if _, err := r.Client.Check(t.Context(), authztest.EnvoyRequest("GET", "/v1/scans", map[string]string{
		"authorization": "Bearer " + tok, "traceparent": traceparent(userTraceID, userSpanID)})); err != nil {
		t.Fatal(err)
	}
	s := endedSpan(t, rec, userTraceID)
	wantAttrs(t, spanAttrs(t, s, tok, strings.Split(tok, ".")[2]), map[string]string{"odin.decision": "allow", "odin.credential": "jwt", "odin.user_id": "user_jwt"})
}

func TestForwardAuthSpans(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	key, k := f.CreateKey(t, keystore.NewKey{UserID: "user_fwd", Scopes: []string{"scans:read"}})
	tests := []struct {
		name    string
		mode    string // --forwarded-headers
		headers map[string]string
		trace   string
		parent  string
		want    map[string]string
	}{
		{"NGINX with traceparent", "original", map[string]string{"Traceparent": traceparent(envoyTraceID, envoySpanID), "X-Original-URI": "/v1/scans?cursor=abc", "X-Original-Method": "GET", "Api-Key": key},
			envoyTraceID, envoySpanID, map[string]string{"odin.decision": "allow", "odin.key_id": k.ID, "odin.request.path": "/v1/scans", "odin.request.method": "GET", "http.response.status_code": "200"}},
		{"Caddy with B3 (zipkin tracer)", "forwarded", map[string]string{"X-B3-Traceid": b3TraceID, "X-B3-Spanid": b3SpanID, "X-B3-Sampled": "1", "X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/v1/scans/1", "Authorization": "Bearer " + key},
			b3TraceID, b3SpanID, map[string]string{"odin.decision": "FORBIDDEN", "odin.reason": "missing_scope", "odin.request.method": "DELETE", "http.response.status_code": "403"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.Config()
			cfg.ForwardedHeaders = tt.mode
			r, rec := startTraced(t, cfg)
			req, _ := http.NewRequest("GET", r.HTTPURL+"/auth", nil)
			req.Header.Set("X-Request-Id", "req-fwd-trace")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := endedSpan(t, rec, tt.trace)
			if s.Name() != "forward-auth" || s.Parent().SpanID().String() != tt.parent {
				t.Errorf("span %q parent %s, want forward-auth under %s", s.Name(), s.Parent().SpanID(), tt.parent)
			}
			tt.want["odin.request_id"] = "req-fwd-trace"
			wantAttrs(t, spanAttrs(t, s, key), tt.want)
		})
	}
}
