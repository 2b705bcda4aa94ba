package telemetry

import (
	"net/http"
	"slices"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// ForwardAuthHandler traces forward-auth subrequests in spans named
// "forward-auth", parented by the traceparent or x-b3-* headers the proxy
// forwards. With tracing off it returns h itself.
func (p *Provider) ForwardAuthHandler(h http.Handler) http.Handler {
	if !p.Enabled() {
		return h
	}
	return otelhttp.NewHandler(h, "forward-auth", p.httpOptions(
		otelhttp.WithSpanNameFormatter(func(operation string, _ *http.Request) string { return operation }),
	)...)
}

// AdminHandler traces the admin API: one span per request, named by its
// route pattern ("POST /v1/keys/{id}/revoke"), with the request id the API
// answered with. Requests for the untraced paths (health probes, metrics
// scrapes) get no span. With tracing off it returns h itself.
func (p *Provider) AdminHandler(h http.Handler, untraced ...string) http.Handler {
	if !p.Enabled() {
		return h
	}
	routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r) // the muxes set r.Pattern on this very request
		span := trace.SpanFromContext(r.Context())
		if !span.IsRecording() {
			return
		}
		if i := strings.IndexByte(r.Pattern, '/'); i >= 0 {
			span.SetAttributes(semconv.HTTPRoute(r.Pattern[i:]))
		}
		if id := w.Header().Get("X-Request-Id"); id != "" {
			span.SetAttributes(AttrRequestID.String(id))
		}
	})
	return otelhttp.NewHandler(routed, "admin", p.httpOptions(
		otelhttp.WithFilter(func(r *http.Request) bool { return !slices.Contains(untraced, r.URL.Path) }),
	)...)
}

func (p *Provider) httpOptions(more ...otelhttp.Option) []otelhttp.Option {
	return append([]otelhttp.Option{
		otelhttp.WithTracerProvider(p.tp),
		otelhttp.WithPropagators(p.propagator),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // metrics are Prometheus'
	}, more...)
}
