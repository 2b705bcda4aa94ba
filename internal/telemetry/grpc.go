package telemetry

import (
	"context"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// checkMethod is the only RPC traced: health checks and reflection are not.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// GRPCServerOptions instrument Check: none when tracing is off, so the hot
// path carries no stats handler at all.
func (p *Provider) GRPCServerOptions() []grpc.ServerOption {
	if !p.Enabled() {
		return nil
	}
	h := &checkHandler{
		inner: otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(p.tp),
			otelgrpc.WithPropagators(p.propagator),
			otelgrpc.WithMeterProvider(noop.NewMeterProvider()), // metrics are Prometheus'
		),
		// The checked request's own headers are a fallback parent: trace
		// context only, never baggage from the client.
		fallback: propagation.NewCompositeTextMapPropagator(b3.New(), propagation.TraceContext{}),
	}
	return []grpc.ServerOption{grpc.StatsHandler(h), grpc.ChainUnaryInterceptor(h.intercept)}
}

// checkHandler runs otelgrpc's server handler for Check, with its span
// started only once the CheckRequest is decoded: Envoy puts the trace
// context in gRPC metadata only when its own tracing is on, and otherwise
// the checked request's headers (traceparent, x-b3-*) are the best parent.
// otelgrpc extracts from metadata after the fallback is in the context, so
// metadata wins when it has a context.
type checkHandler struct {
	inner    stats.Handler
	fallback propagation.TextMapPropagator
}

type pendingKey struct{}

// pendingCheck is one Check RPC between TagRPC and its decoded request.
// grpc-go calls TagRPC, the stats events and the handler of one RPC on the
// same goroutine, so it needs no lock.
type pendingCheck struct {
	info     *stats.RPCTagInfo
	inHeader *stats.InHeader // replayed once the span starts
	ctx      context.Context // otelgrpc's context, once started
}

func (h *checkHandler) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return h.inner.TagConn(ctx, info)
}

func (h *checkHandler) HandleConn(ctx context.Context, s stats.ConnStats) { h.inner.HandleConn(ctx, s) }

func (h *checkHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if info.FullMethodName != checkMethod {
		return ctx
	}
	return context.WithValue(ctx, pendingKey{}, &pendingCheck{info: info})
}

func (h *checkHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	p, ok := ctx.Value(pendingKey{}).(*pendingCheck)
	if !ok {
		return
	}
	if p.ctx == nil {
		switch s := s.(type) {
		case *stats.InHeader:
			p.inHeader = s
			return
		case *stats.End: // the request never reached the handler (bad message): trace it all the same
			h.start(ctx, p, nil)
		default: // Begin and InPayload: otelgrpc records nothing for them on a server
			return
		}
	}
	h.inner.HandleRPC(p.ctx, s)
}

// intercept starts the span, parented by the gRPC metadata or else by the
// checked request's headers, and runs Check under it.
func (h *checkHandler) intercept(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	p, ok := ctx.Value(pendingKey{}).(*pendingCheck)
	if !ok || p.ctx != nil {
		return next(ctx, req)
	}
	check, _ := req.(*authv3.CheckRequest)
	return next(h.start(ctx, p, check), req)
}

func (h *checkHandler) start(ctx context.Context, p *pendingCheck, req *authv3.CheckRequest) context.Context {
	if hr := req.GetAttributes().GetRequest().GetHttp(); hr != nil {
		ctx = h.fallback.Extract(ctx, checkedHeaders{hr})
	}
	p.ctx = h.inner.TagRPC(ctx, p.info)
	if p.inHeader != nil {
		h.inner.HandleRPC(p.ctx, p.inHeader)
		p.inHeader = nil
	}
	return p.ctx
}

// checkedHeaders reads the checked request's headers as Envoy sends them:
// lower-case keys in headers, or header_map with encode_raw_headers.
type checkedHeaders struct {
	http *authv3.AttributeContext_HttpRequest
}

func (c checkedHeaders) Get(key string) string {
	if v, ok := c.http.GetHeaders()[key]; ok {
		return v
	}
	for _, hv := range c.http.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), key) {
			if raw := hv.GetRawValue(); len(raw) > 0 {
				return string(raw)
			}
			return hv.GetValue()
		}
	}
	return ""
}

func (c checkedHeaders) Set(string, string) {}

func (c checkedHeaders) Keys() []string {
	var keys []string
	for k := range c.http.GetHeaders() {
		keys = append(keys, k)
	}
	for _, hv := range c.http.GetHeaderMap().GetHeaders() {
		keys = append(keys, strings.ToLower(hv.GetKey()))
	}
	return keys
}
