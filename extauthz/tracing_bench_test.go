package extauthz_test

import (
	"context"
	"net"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/keystore"
)

// discardExporter stands for a collector: spans go through the batch
// processor as in production, and are then dropped.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// tracingModes are the configurations compared: off (the default), on with
// every new trace sampled, and on with none sampled (ratio 0, no parent).
var tracingModes = []struct {
	name  string
	ratio string // "" = tracing off
}{{"off", ""}, {"sampled", "1"}, {"unsampled", "0"}}

func tracingConfig(ratio string) telemetry.Config {
	if ratio == "" {
		return telemetry.Config{}
	}
	return telemetry.Config{Processor: sdktrace.NewBatchSpanProcessor(discardExporter{}), SampleRatio: ratio}
}

// BenchmarkCheckGRPCTracing is a cached-key Check over a loopback gRPC
// connection, so that the stats handler and interceptor (installed only
// with tracing on) are in the figure.
func BenchmarkCheckGRPCTracing(b *testing.B) {
	for _, mode := range tracingModes {
		b.Run(mode.name, func(b *testing.B) {
			f := authztest.NewFixture(b, authztest.NoRedis)
			cfg := f.Config()
			cfg.DisableRateLimit = true
			cfg.Tracing = tracingConfig(mode.ratio)
			ctx, cancel := context.WithCancel(context.Background())
			svc, err := authzsvc.New(ctx, cfg, authztest.DiscardLogger())
			if err != nil {
				b.Fatal(err)
			}
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			done := make(chan error, 1)
			go func() { done <- svc.Serve(ctx, authzsvc.Listeners{GRPC: l}) }()
			b.Cleanup(func() { cancel(); <-done })
			conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)
			key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read"}, Tier: "pro"})
			req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
			if resp, err := client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
				b.Fatalf("not allowed: %v %v", resp, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := client.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckTraceDecision is CheckServer.Check called directly (no
// transport), with no span in the context (tracing off: one context
// lookup) and under a recording span (the decision's attributes built and
// set).
func BenchmarkCheckTraceDecision(b *testing.B) {
	f := authztest.NewFixture(b, authztest.NoRedis)
	cfg := f.Config()
	cfg.DisableRateLimit = true
	svc, err := authzsvc.New(b.Context(), cfg, authztest.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	srv := extauthz.NewCheckServer(svc.Authorizer(), extauthz.CheckOptions{StripCredential: true, Logger: authztest.DiscardLogger()})
	key, _ := f.CreateKey(b, keystore.NewKey{UserID: "user_bench", Scopes: []string{"scans:read"}, Tier: "pro"})
	req := authztest.EnvoyRequest("GET", "/v1/scans?page=2", map[string]string{"authorization": "Bearer " + key, "x-request-id": "req-bench"})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewBatchSpanProcessor(discardExporter{})))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tracer := tp.Tracer("bench")
	b.Run("off", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			srv.Check(ctx, req)
		}
	})
	b.Run("recording", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, span := tracer.Start(context.Background(), "Check")
			srv.Check(ctx, req)
			span.End()
		}
	})
}
