package authzsvc_test

import (
	"bytes"
	"context"
	"runtime/pprof"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
)

// TestTracingOffByDefault: a replica configured as before tracing existed
// serves forward-auth with the bare handler and runs no OpenTelemetry
// goroutine (and its gRPC server has no stats handler: GRPCServerOptions
// is empty, see the telemetry tests).
func TestTracingOffByDefault(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	r := authztest.StartReplica(t, f.Config())
	if _, ok := r.Svc.ForwardAuth().(*extauthz.ForwardAuth); !ok {
		t.Errorf("forward-auth handler is %T with tracing off, want *extauthz.ForwardAuth", r.Svc.ForwardAuth())
	}
	if r.Svc.Tracing().Enabled() || len(r.Svc.Tracing().GRPCServerOptions()) != 0 {
		t.Error("tracing on without an endpoint")
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") // Envoy's, as in the tracing tests
	if _, err := r.Client.Check(ctx, authztest.EnvoyRequest("GET", "/v1/scans", nil)); err != nil {
		t.Fatal(err)
	}
	var stacks bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2)
	if strings.Contains(stacks.String(), "go.opentelemetry.io") {
		t.Errorf("OpenTelemetry goroutines with tracing off:\n%s", stacks.String())
	}
}
