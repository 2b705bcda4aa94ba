package main

import (
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/odin-scan/odin-authz/internal/telemetry/otlptest"
	"github.com/odin-scan/odin-authz/internal/testenv"
)

// TestAuthzExportsTraces runs `odin authz --otlp-endpoint` against a real
// OTLP/gRPC receiver: a Check's span arrives on the batch schedule, and
// the spans still queued when the replica stops are flushed by its drain.
func TestAuthzExportsTraces(t *testing.T) {
	db := testenv.Postgres(t)
	t.Setenv("ODIN_DATABASE_URL", db)
	key, _, err := odin(t, "keys", "create", "--name", "trace", "--owner", "user_trace", "--scopes", "read")
	if err != nil {
		t.Fatalf("create key: %v", err)
	}
	key = strings.TrimSpace(key)
	recv, endpoint := otlptest.StartGRPC(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"authz", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--ops-addr", "",
			"--otlp-endpoint", endpoint, "--rate-limit-disabled"}, io.Discard, logs)
	}()
	addr := waitLog(t, logs, regexp.MustCompile(`"msg":"odin authz serving","grpc":"([^"]+)"`))
	if !strings.Contains(logs.String(), `"msg":"tracing on"`) {
		t.Errorf("no 'tracing on' log line:\n%s", logs)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(trace string) {
		t.Helper()
		md := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
		resp, err := client.Check(md, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/scans", Headers: map[string]string{
				":path": "/v1/scans", "authorization": "Bearer " + key, "x-request-id": "req-" + trace[:8]}},
		}}})
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("Check: %v %v", resp, err)
		}
	}
	byTrace := func(trace string) func(otlptest.Span) bool {
		return func(s otlptest.Span) bool { return s.TraceID == trace }
	}

	const first, second = "11111111111111111111111111111111", "22222222222222222222222222222222"
	check(first)
	s, ok := recv.Wait(15*time.Second, byTrace(first)) // the batch processor exports every 5 s
	if !ok {
		t.Fatalf("no span within 15s of a Check; logs:\n%s", logs)
	}
	if s.Resource["service.name"] != "odin-authz" || !strings.HasPrefix(s.Resource["service.instance.id"], "r-") ||
		s.Attributes["odin.decision"] != "allow" || s.Attributes["odin.request_id"] != "req-11111111" || s.ParentSpanID != "00f067aa0ba902b7" {
		t.Errorf("span %+v", s)
	}
	for k, v := range s.Attributes {
		if strings.Contains(v, key) {
			t.Errorf("attribute %s carries the key", k)
		}
	}

	check(second)
	cancel() // SIGTERM: drain, then flush
	testenv.WaitStopped(t, done, 30*time.Second, "odin authz")
	if _, ok := recv.Wait(0, byTrace(second)); !ok {
		t.Errorf("the span of the last Check was not flushed at shutdown; received %d spans", len(recv.Spans()))
	}
}

// TestAuthzTracingOffByDefault: no endpoint anywhere, no tracing.
func TestAuthzTracingOffByDefault(t *testing.T) {
	t.Setenv("ODIN_DATABASE_URL", testenv.Postgres(t))
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ODIN_OTLP_ENDPOINT"} {
		t.Setenv(v, "")
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"authz", "--grpc-addr", "127.0.0.1:0", "--http-addr", "", "--ops-addr", ""}, io.Discard, logs)
	}()
	waitLog(t, logs, regexp.MustCompile(`"msg":"odin authz serving"`))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "tracing on") {
		t.Errorf("tracing on without an endpoint:\n%s", logs)
	}
}

// waitLog waits for a log line matching re and returns its first group.
func waitLog(t *testing.T, logs *testenv.LogBuffer, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
	}
	t.Fatalf("no log line matching %s in 30s:\n%s", re, logs)
	return ""
}
