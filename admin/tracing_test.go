package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/internal/testenv"
)

// TestAdminSpans: one span per API request, named by its route pattern,
// with the request id and status; none for probes and scrapes; never the
// operator token or a created key.
func TestAdminSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	svc, err := adminsvc.New(t.Context(), adminsvc.Config{
		DatabaseURL: testenv.Postgres(t), OperatorToken: admintest.OperatorToken, Scopes: []string{"scans:read"},
		Tracing: telemetry.Config{Processor: rec},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path string, body any, header ...string) (int, string) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+admintest.OperatorToken)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	do("GET", "/healthz", nil)
	do("GET", "/metrics", nil)
	status, out := do("POST", "/v1/keys", map[string]any{"name": "CI", "scopes": []string{"scans:read"}, "user_id": "user_a"},
		"X-Request-Id", "req-admin-trace", "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	var created struct{ Key, ID string }
	if err := json.Unmarshal([]byte(out), &created); status != 201 || err != nil || created.Key == "" {
		t.Fatalf("create: %d %s", status, out)
	}
	do("GET", "/v1/keys/"+created.ID, nil)

	var spans []sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); len(spans) < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		spans = rec.Ended()
	}
	time.Sleep(20 * time.Millisecond) // and no more
	if spans = rec.Ended(); len(spans) != 2 {
		t.Fatalf("%d spans, want 2 (none for /healthz and /metrics)", len(spans))
	}
	want := []struct{ name, route, status string }{
		{"POST /v1/keys", "/v1/keys", "201"},
		{"GET /v1/keys/{id}", "/v1/keys/{id}", "200"},
	}
	for i, s := range spans {
		a := map[string]string{}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.String()
			if v := kv.Value.String(); strings.Contains(v, admintest.OperatorToken) || strings.Contains(v, created.Key) {
				t.Errorf("attribute %s carries a secret", kv.Key)
			}
		}
		if s.Name() != want[i].name || a["http.route"] != want[i].route || a["http.response.status_code"] != want[i].status || a["odin.request_id"] == "" ||
			a["odin.actor"] != "operator" {
			t.Errorf("span %q %v, want %+v with a request id, actor operator", s.Name(), a, want[i])
		}
	}
	if got := spans[0].SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" || spans[0].Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("create span in trace %s under %s, want the caller's", got, spans[0].Parent().SpanID())
	}
	if got := spans[0].Attributes(); !hasAttr(got, "odin.request_id", "req-admin-trace") {
		t.Errorf("create span lacks the caller's request id: %v", got)
	}
}

func hasAttr(attrs []attribute.KeyValue, key, value string) bool {
	for _, kv := range attrs {
		if string(kv.Key) == key && kv.Value.String() == value {
			return true
		}
	}
	return false
}
