package extauthz

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

type ctxKey int

// grpcLikeContext is a context as deep as the one grpc-go hands a handler
// (peer, stream, metadata, ...), where a span lookup walks every layer.
func grpcLikeContext() context.Context {
	ctx := context.Background()
	for i := range 8 {
		ctx = context.WithValue(ctx, ctxKey(i), i)
	}
	return ctx
}

const tracedKey = "odin_sk_live_abcdefghijklmnopqrstuvwxyz0123456789"

func tracedDecision() (Decision, Request) {
	d := Decision{Outcome: Allow, Reason: "", RequestID: "req-1",
		Credential: Credential{Kind: CredentialAPIKey, Value: tracedKey, InAuthorization: true},
		Principal:  NewPrincipal(Identity{Method: "api_key", Subject: "user_1", KeyID: "key_1", Scopes: []string{"read"}})}
	r := Request{Method: "GET", Path: "/v1/scans?api_key=" + tracedKey, Headers: MapHeaders{"authorization": "Bearer " + tracedKey}}
	return d, r
}

func TestTraceDecision(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	d, r := tracedDecision()
	ctx, span := tp.Tracer("test").Start(grpcLikeContext(), "Check")
	traceDecision(ctx, &d, &r)
	span.End()
	denied := Decision{Outcome: DenyUnavailable, Reason: "store_unavailable", RequestID: "req-2", Credential: d.Credential, Principal: d.Principal}
	ctx, span = tp.Tracer("test").Start(context.Background(), "Check")
	traceDecision(ctx, &denied, &r)
	span.End()

	ended := rec.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans", len(ended))
	}
	want := []map[string]string{
		{"odin.request_id": "req-1", "odin.decision": "allow", "odin.credential": "api_key", "odin.key_id": "key_1", "odin.user_id": "user_1",
			"odin.request.method": "GET", "odin.request.path": "/v1/scans"},
		{"odin.request_id": "req-2", "odin.decision": "UNAVAILABLE", "odin.reason": "store_unavailable", "odin.credential": "api_key",
			"odin.request.method": "GET", "odin.request.path": "/v1/scans"},
	}
	for i, s := range ended {
		got := map[string]string{}
		for _, kv := range s.Attributes() {
			got[string(kv.Key)] = kv.Value.String()
			if strings.Contains(kv.Value.String(), tracedKey) {
				t.Errorf("attribute %s carries the key", kv.Key)
			}
		}
		if len(got) != len(want[i]) {
			t.Errorf("span %d attributes %v, want %v", i, got, want[i])
		}
		for k, v := range want[i] {
			if got[k] != v {
				t.Errorf("span %d: %s = %q, want %q", i, k, got[k], v)
			}
		}
	}
	if ended[1].Status().Code.String() != "Error" {
		t.Errorf("an UNAVAILABLE answer is an error span, got %v", ended[1].Status())
	}
}

// BenchmarkTraceDecision is what Check and forward-auth pay for tracing:
// off (no span in the context: one lookup through it), and the cost of the
// decision's attributes on a recording span.
func BenchmarkTraceDecision(b *testing.B) {
	d, r := tracedDecision()
	b.Run("off", func(b *testing.B) {
		ctx := grpcLikeContext()
		b.ReportAllocs()
		for b.Loop() {
			traceDecision(ctx, &d, &r)
		}
	})
	tracer := sdktrace.NewTracerProvider().Tracer("bench")
	b.Run("span only", func(b *testing.B) { // the baseline of the next one
		ctx := grpcLikeContext()
		b.ReportAllocs()
		for b.Loop() {
			_, span := tracer.Start(ctx, "Check")
			span.End()
		}
	})
	b.Run("span and decision", func(b *testing.B) {
		ctx := grpcLikeContext()
		b.ReportAllocs()
		for b.Loop() {
			sctx, span := tracer.Start(ctx, "Check")
			traceDecision(sctx, &d, &r)
			span.End()
		}
	})
}
