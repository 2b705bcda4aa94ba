// Package telemetry traces odin with OpenTelemetry: the Check and
// forward-auth spans of `odin authz` and the request spans of `odin admin`,
// exported over OTLP to a collector. Tracing is off unless an endpoint is
// configured, and off means off: no exporter, no goroutine, no gRPC stats
// handler or HTTP wrapper on the hot path.
//
// Incoming trace context is honoured in W3C tracecontext (and baggage) and
// B3 form (Envoy's zipkin tracer sends x-b3-*); the W3C traceparent wins when
// a request carries both.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"github.com/odin-scan/odin-authz/internal/buildinfo"
)

// Config is how a command traces. Its zero value is tracing off.
type Config struct {
	// Endpoint is the OTLP collector as a URL: http://collector:4317 for
	// gRPC (https:// for TLS), http://collector:4318 for HTTP, where a URL
	// without a path gets /v1/traces. Empty: tracing off.
	Endpoint string
	// Protocol is "grpc" (default) or "http/protobuf".
	Protocol string
	// Sampler is an OTEL_TRACES_SAMPLER name: parentbased_traceidratio
	// (default), parentbased_always_on, parentbased_always_off,
	// traceidratio, always_on or always_off. The parent-based samplers
	// follow the sampled flag Envoy (or the caller) propagates.
	Sampler string
	// SampleRatio is the fraction, 0 to 1, of new traces recorded by the
	// ratio samplers (default 1).
	SampleRatio string
	// ServiceName overrides the command's service.name (odin-authz,
	// odin-admin).
	ServiceName string
	// Disabled turns tracing off whatever the endpoint (OTEL_SDK_DISABLED).
	Disabled bool
	// Processor, when set, also receives every finished span and turns
	// tracing on without an endpoint: tests record spans in-process.
	Processor sdktrace.SpanProcessor
}

// FillFromEnv fills the fields still empty from the standard OpenTelemetry
// variables, read through getenv (main passes os.Getenv: no other code
// reads the environment). Called after flags are parsed, it gives the
// precedence: flag, then ODIN_* variable, then OTEL_* variable, then the
// default.
//
//	Endpoint     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else
//	             OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces for HTTP)
//	Protocol     OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL
//	Sampler      OTEL_TRACES_SAMPLER
//	SampleRatio  OTEL_TRACES_SAMPLER_ARG
//	ServiceName  OTEL_SERVICE_NAME
//	Disabled     OTEL_SDK_DISABLED=true
//
// The exporter's other settings (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
// _COMPRESSION, _CERTIFICATE), OTEL_RESOURCE_ATTRIBUTES and the batch
// processor's OTEL_BSP_* are read by the OpenTelemetry SDK itself.
func (c *Config) FillFromEnv(getenv func(string) string) {
	fill := func(p *string, names ...string) {
		for _, n := range names {
			if *p == "" {
				*p = strings.TrimSpace(getenv(n))
			}
		}
	}
	fill(&c.Protocol, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
	fill(&c.Endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); c.Endpoint == "" && base != "" {
		c.Endpoint = base
		if c.Protocol == protocolHTTP { // a base URL: the signal path is appended
			c.Endpoint = strings.TrimRight(base, "/") + "/v1/traces"
		}
	}
	fill(&c.Sampler, "OTEL_TRACES_SAMPLER")
	fill(&c.SampleRatio, "OTEL_TRACES_SAMPLER_ARG")
	fill(&c.ServiceName, "OTEL_SERVICE_NAME")
	if v, err := strconv.ParseBool(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); err == nil && v {
		c.Disabled = true
	}
}

// Enabled reports whether c turns tracing on.
func (c *Config) Enabled() bool {
	return !c.Disabled && (c.Endpoint != "" || c.Processor != nil)
}

const (
	protocolGRPC = "grpc"
	protocolHTTP = "http/protobuf"
)

// Resource names the process in every span it exports.
type Resource struct {
	// Service is the default service.name: odin-authz or odin-admin.
	Service string
	// Instance is service.instance.id: the replica id (the one the
	// invalidation bus knows, for odin authz).
	Instance string
}

// Provider is the tracing of one service. A Provider with tracing off (and
// a nil *Provider) is valid: its wrappers return what they are given.
type Provider struct {
	tp         *sdktrace.TracerProvider // nil: tracing off
	propagator propagation.TextMapPropagator
	log        *slog.Logger
}

// New builds the tracer provider cfg describes, or a Provider that traces
// nothing when cfg does not turn tracing on. Nothing connects yet: the OTLP
// exporters dial lazily, so an absent collector never delays start-up.
func New(ctx context.Context, cfg Config, res Resource, logger *slog.Logger) (*Provider, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{log: logger, propagator: Propagator()}
	if !cfg.Enabled() {
		return p, nil
	}
	sampler, err := newSampler(cfg.Sampler, cfg.SampleRatio)
	if err != nil {
		return nil, err
	}
	r, err := newResource(ctx, cfg, res)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(sampler), sdktrace.WithResource(r)}
	if cfg.Endpoint != "" {
		exp, err := newExporter(ctx, cfg.Endpoint, cfg.Protocol)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(&loggingExporter{SpanExporter: exp, log: logger}))
	}
	if cfg.Processor != nil {
		opts = append(opts, sdktrace.WithSpanProcessor(cfg.Processor))
	}
	p.tp = sdktrace.NewTracerProvider(opts...)
	logger.Info("tracing on", "endpoint", redactURL(cfg.Endpoint), "protocol", protocolOrDefault(cfg.Protocol),
		"sampler", samplerName(cfg.Sampler), "ratio", ratioOrDefault(cfg.SampleRatio))
	return p, nil
}

// Enabled reports whether p traces.
func (p *Provider) Enabled() bool { return p != nil && p.tp != nil }

// Shutdown flushes the spans still queued to the collector and stops the
// exporter; it is part of a service's drain. Without a deadline on ctx it
// waits at most 5 seconds.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// Propagator reads incoming trace context: B3 (single and multi-header),
// then W3C tracecontext and baggage, so a traceparent wins over x-b3-*.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(b3.New(), propagation.TraceContext{}, propagation.Baggage{})
}

func protocolOrDefault(p string) string {
	if p == "" {
		return protocolGRPC
	}
	return p
}

func samplerName(s string) string {
	if s == "" {
		return "parentbased_traceidratio"
	}
	return s
}

func ratioOrDefault(r string) string {
	if r == "" {
		return "1"
	}
	return r
}

func newExporter(ctx context.Context, endpoint, protocol string) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: want a URL such as http://collector:4317", redactURL(endpoint))
	}
	switch protocolOrDefault(protocol) {
	case protocolGRPC:
		return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(endpoint))
	case protocolHTTP:
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	default:
		return nil, fmt.Errorf("OTLP protocol %q: want grpc or http/protobuf", protocol)
	}
}

// redactURL drops any user info from an endpoint before it is logged.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

func newSampler(name, ratio string) (sdktrace.Sampler, error) {
	fraction := 1.0
	if ratio != "" {
		f, err := strconv.ParseFloat(ratio, 64)
		if err != nil || f < 0 || f > 1 {
			return nil, fmt.Errorf("trace sample ratio %q: want a number from 0 to 1", ratio)
		}
		fraction = f
	}
	switch samplerName(name) {
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(fraction)), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(fraction), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	}
	return nil, fmt.Errorf("trace sampler %q: want parentbased_traceidratio, parentbased_always_on, parentbased_always_off, traceidratio, always_on or always_off", name)
}

// newResource: our defaults first, then OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME (read by the SDK), then cfg.ServiceName.
func newResource(ctx context.Context, cfg Config, res Resource) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(res.Service), semconv.ServiceVersion(buildinfo.Read().Short())}
	if res.Instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(res.Instance))
	}
	opts := []resource.Option{resource.WithTelemetrySDK(), resource.WithHost(), resource.WithAttributes(attrs...), resource.WithFromEnv()}
	if cfg.ServiceName != "" {
		opts = append(opts, resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)))
	}
	r, err := resource.New(ctx, opts...)
	if errors.Is(err, resource.ErrPartialResource) { // e.g. a malformed OTEL_RESOURCE_ATTRIBUTES: keep the rest
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return r, nil
}

// loggingExporter reports failed exports on the service's own log (at most
// once a minute) instead of the OpenTelemetry global error handler, which
// would print unstructured lines: an absent collector must not flood logs.
type loggingExporter struct {
	sdktrace.SpanExporter
	log  *slog.Logger
	last atomic.Int64 // unix nanoseconds of the last report
}

func (e *loggingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	now := time.Now().UnixNano()
	if last := e.last.Load(); now-last >= int64(time.Minute) && e.last.CompareAndSwap(last, now) {
		e.log.Warn("trace export failed: spans dropped", "spans", len(spans), "error", err.Error())
	}
	return nil
}
