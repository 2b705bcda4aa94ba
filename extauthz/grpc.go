package extauthz

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/odin-scan/odin-authz/internal/netallow"
)

// CheckServer implements envoy.service.auth.v3.Authorization on the
// decision core. A denial is a successful RPC carrying a DeniedHttpResponse:
// a gRPC error would be an outage to Envoy, answered with status_on_error and
// no body.
type CheckServer struct {
	authv3.UnimplementedAuthorizationServer
	authz   *Authorizer
	opts    CheckOptions
	trusted *netallow.Set
}

// CheckOptions configure the gRPC front end.
type CheckOptions struct {
	// StripCredential removes the credential header from the upstream
	// request.
	StripCredential bool
	// TrustedProxies are the load balancers in front of Envoy whose
	// x-forwarded-for is believed when Envoy's source.address is one of
	// them and an API key's network allowlist asks for the client's
	// address (EnvoyClient); none: source.address is the client.
	TrustedProxies []netip.Prefix
	// Logger receives the panics Check recovers from; nil: discarded.
	Logger *slog.Logger
}

// NewCheckServer returns the gRPC front end.
func NewCheckServer(a *Authorizer, opts CheckOptions) *CheckServer {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &CheckServer{authz: a, opts: opts, trusted: netallow.New(opts.TrustedProxies)}
}

var okStatus = &status.Status{}

// Check implements the Authorization service.
func (s *CheckServer) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, err error) {
	defer func() {
		// A panic here is a bug, but it must fail closed with our body, not
		// crash the replica or look like an outage to Envoy.
		if p := recover(); p != nil {
			s.opts.Logger.Error("panic in Check", "panic", p, "stack", string(debug.Stack()))
			d := Decision{Outcome: DenyUnavailable, Reason: "internal_error", RequestID: requestID(MapHeaders(nil))}
			resp, err = deniedResponse(&d), nil
		}
	}()
	r := checkRequest(req, s.trusted)
	d := s.authz.Decide(ctx, &r)
	traceDecision(ctx, &d, &r)
	if d.Outcome != Allow {
		return deniedResponse(&d), nil
	}
	return s.okResponse(&d, r.Headers), nil
}

// checkRequest reads what the decision needs from Envoy's CheckRequest.
// Envoy sends lower-case headers joined with ","; with encode_raw_headers it
// fills header_map instead, which is read the same way.
func checkRequest(req *authv3.CheckRequest, trusted *netallow.Set) Request {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	r := Request{Method: httpReq.GetMethod(), Path: httpReq.GetPath(), Host: httpReq.GetHost()}
	if hdrs := httpReq.GetHeaders(); len(hdrs) > 0 || httpReq.GetHeaderMap() == nil {
		r.Headers = MapHeaders(hdrs)
	} else {
		r.Headers = rawHeaders(httpReq.GetHeaderMap().GetHeaders())
	}
	r.Client = EnvoyClient(req.GetAttributes().GetSource().GetAddress(), r.Headers, trusted)
	return r
}

// rawHeaders adapts Envoy's header_map (encode_raw_headers: true), where
// repeated headers stay separate entries and values may be raw bytes.
type rawHeaders []*corev3.HeaderValue

func (h rawHeaders) value(hv *corev3.HeaderValue) string {
	if len(hv.GetRawValue()) > 0 {
		return string(hv.GetRawValue())
	}
	return hv.GetValue()
}

// Get implements Headers, joining repeats with "," as Envoy does.
func (h rawHeaders) Get(name string) string {
	var out string
	for _, hv := range h {
		if strings.EqualFold(hv.GetKey(), name) {
			if out != "" {
				out += ","
			}
			out += h.value(hv)
		}
	}
	return out
}

// Range implements Headers.
func (h rawHeaders) Range(fn func(name, value string) bool) {
	for _, hv := range h {
		if !fn(strings.ToLower(hv.GetKey()), h.value(hv)) {
			return
		}
	}
}

// okAnswer holds the three messages of an allowed answer in a single
// allocation.
type okAnswer struct {
	resp  authv3.CheckResponse
	oneof authv3.CheckResponse_OkResponse
	ok    authv3.OkHttpResponse
}

// okResponse attaches the principal's pre-encoded headers and metadata
// (Principal.wire) and the parts that depend on the request, the removal
// list and the rate-limit headers, encoded here to wire bytes: all of them
// are unknown fields of the returned messages, which protobuf marshals
// verbatim, so on the wire they are the fields themselves. A Go reader of
// the message in this process finds them among its unknown fields; a gRPC
// client (Envoy) decodes them as the fields they are. One allocation for
// the messages, one for the bytes.
func (s *CheckServer) okResponse(d *Decision, h Headers) *authv3.CheckResponse {
	p := d.Principal
	removal := p.remove.wire[removalIndex(d.Credential, s.opts.StripCredential)]
	strays := strayIdentityHeaders(p, h)
	size := p.okEnd + len(removal)
	for _, name := range strays {
		size += sizeString(fieldOkHeadersToRemove, name)
	}
	var rl rateLimitValues
	if d.HasRateLimit { // to the client, on success too
		rl = d.rateLimitValues()
		size += rl.size(fieldOkResponseHeaders)
	}
	b := make([]byte, 0, size)
	b = append(b, p.wire[:p.okEnd]...)
	b = append(b, removal...)
	for _, name := range strays {
		b = appendString(b, fieldOkHeadersToRemove, name)
	}
	if d.HasRateLimit {
		b = rl.append(b, fieldOkResponseHeaders)
	}
	a := new(okAnswer)
	a.ok.ProtoReflect().SetUnknown(b)
	a.oneof.OkResponse = &a.ok
	a.resp.Status, a.resp.HttpResponse = okStatus, &a.oneof
	a.resp.ProtoReflect().SetUnknown(p.wire[p.okEnd:])
	return &a.resp
}

// HeadersToRemove lists what must not reach the upstream: identity headers
// this principal has no value for, any other x-odin-* header the client
// sent, and the credential when it is stripped. In the common case (no
// stray x-odin-* header) it returns a list pre-rendered with the principal
// and allocates nothing.
func HeadersToRemove(p *Principal, h Headers, c Credential, strip bool) []string {
	base := p.remove.list(removalIndex(c, strip))
	extra := strayIdentityHeaders(p, h)
	if len(extra) == 0 {
		return base
	}
	return append(append(make([]string, 0, len(base)+len(extra)), base...), extra...)
}

// strayIdentityHeaders are the identity headers the client sent that p's
// removal list does not already name: x-odin-* names p has no header of
// its own for. Usually none, and then it allocates nothing.
func strayIdentityHeaders(p *Principal, h Headers) []string {
	m, ok := h.(MapHeaders)
	if !ok {
		return strayRangedHeaders(p, h)
	}
	var list []string
	for name := range m { // Envoy's map: iterated without a closure, which would put list on the heap
		if p.stray(name) {
			list = append(list, name)
		}
	}
	return list
}

func strayRangedHeaders(p *Principal, h Headers) []string {
	var list []string
	h.Range(func(name, _ string) bool {
		if p.stray(name) {
			list = append(list, name)
		}
		return true
	})
	return list
}

// stray reports whether a header the client sent claims to be an identity
// header that p neither sets nor already removes.
func (p *Principal) stray(name string) bool {
	return isIdentityHeader(name) && !p.sets(name) && !contains(p.Absent, name)
}

// isIdentityHeader reports whether a (lower-case) header name claims to be an
// identity header: x-odin-*, and also x_odin_* and mixes, which CGI-style
// frameworks read as the same HTTP_X_ODIN_* variable.
func isIdentityHeader(name string) bool {
	const n = len(IdentityHeaderPrefix)
	if len(name) <= n {
		return false
	}
	for i := 0; i < n; i++ {
		c, want := name[i], IdentityHeaderPrefix[i]
		if c != want && !(want == '-' && c == '_') {
			return false
		}
	}
	return true
}

func (p *Principal) sets(name string) bool {
	for _, h := range p.Headers {
		if h.Name == name {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func deniedResponse(d *Decision) *authv3.CheckResponse {
	info := outcomes[d.Outcome]
	hdrs := d.DenialHeaders()
	opts := make([]*corev3.HeaderValueOption, len(hdrs))
	for i, h := range hdrs {
		opts[i] = overwrite(h.Name, h.Value)
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(info.grpc), Message: string(info.code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Outcome.HTTPStatus())},
			Headers: opts,
			Body:    string(d.Body(time.Now())),
		}},
	}
}
