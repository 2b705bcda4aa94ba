// Package envoyproxy is a small HTTP reverse proxy that asks an
// envoy.service.auth.v3.Authorization server about every request the way
// Envoy's ext_authz HTTP filter does in gRPC mode, and applies the answer the
// way Envoy does. Envoy cannot run here; end-to-end tests put this proxy
// between a real HTTP client, a real `odin authz` replica (over real gRPC)
// and an upstream instead.
//
// It is faithful to the documented behaviour the server depends on (see
// ENVOY.md and Envoy's ext_authz sources), and to nothing more: one
// upstream, no routing, no body buffering (with_request_body), no
// failure_mode_allow, no query_parameters_to_set.
package envoyproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultTimeout is Envoy's default ext_authz grpc_service timeout.
const DefaultTimeout = 200 * time.Millisecond

// Options configure a Proxy.
type Options struct {
	// Upstream receives the allowed requests (Envoy's route cluster).
	Upstream *url.URL
	// Authz is the ext_authz grpc_service.
	Authz authv3.AuthorizationClient
	// Timeout bounds one Check; a Check that takes longer is an error.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// StatusOnError is what the client gets, with an empty body, when Check
	// fails or times out (status_on_error with failure_mode_allow false).
	// Zero means 403, Envoy's default.
	StatusOnError int
	// Observe, when set, is called with every Check exchange: tests read the
	// dynamic metadata, which Envoy would keep in the stream info.
	Observe func(*authv3.CheckRequest, *authv3.CheckResponse, error)
}

// Proxy is an http.Handler that authorizes each request over gRPC, then
// forwards the allowed ones to the upstream.
type Proxy struct {
	opts     Options
	upstream *httputil.ReverseProxy
	streamID atomic.Uint64
}

// New returns a Proxy.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil || opts.Authz == nil {
		return nil, errors.New("envoyproxy: an upstream and an authorization client are required")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.StatusOnError == 0 {
		opts.StatusOnError = http.StatusForbidden
	}
	p := &Proxy{opts: opts}
	p.upstream = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(opts.Upstream)
			pr.Out.Host = pr.In.Host // Envoy keeps :authority unless told to rewrite it
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			if ok, _ := resp.Request.Context().Value(okResponseKey{}).(*authv3.OkHttpResponse); ok != nil {
				ApplyHeaderMutations(resp.Header, ok.GetResponseHeadersToAdd())
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			// Envoy's answer when the upstream cannot be reached.
			w.Header().Set("content-type", "text/plain")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("upstream connect error or disconnect/reset before headers"))
		},
	}
	return p, nil
}

type okResponseKey struct{}

// ServeHTTP implements http.Handler: the HTTP connection manager's request
// id, then the ext_authz filter, then the router.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The connection manager generates x-request-id when the request has
	// none (generate_request_id defaults to true) and keeps a client's.
	if r.Header.Get("x-request-id") == "" {
		r.Header.Set("x-request-id", NewRequestID())
	}
	req := CheckRequest(r, p.streamID.Add(1))
	ctx, cancel := context.WithTimeout(r.Context(), p.opts.Timeout)
	resp, err := p.opts.Authz.Check(ctx, req)
	cancel()
	if p.opts.Observe != nil {
		p.opts.Observe(req, resp, err)
	}
	switch {
	case err != nil || resp == nil:
		// An outage, not a denial: status_on_error, empty body.
		w.Header().Set("content-length", "0")
		w.WriteHeader(p.opts.StatusOnError)
	case resp.GetStatus().GetCode() != 0:
		writeDenial(w, resp.GetDeniedResponse())
	default:
		ok := resp.GetOkResponse()
		ApplyHeaderMutations(r.Header, ok.GetHeaders())
		for _, name := range ok.GetHeadersToRemove() {
			if removable(name) {
				r.Header.Del(name)
			}
		}
		p.upstream.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), okResponseKey{}, ok)))
	}
}

// removable mirrors Envoy's HeaderUtility::isRemovableHeader: neither
// pseudo-headers nor Host can be removed by the authorization server.
func removable(name string) bool {
	return name != "" && name[0] != ':' && !strings.EqualFold(name, "host")
}

// writeDenial sends Envoy's local reply for a denial: denied_response's
// status (403 when unset), its headers and its body.
func writeDenial(w http.ResponseWriter, d *authv3.DeniedHttpResponse) {
	status := http.StatusForbidden
	if c := int(d.GetStatus().GetCode()); c > 0 {
		status = c
	}
	body := d.GetBody()
	h := w.Header()
	if body != "" {
		h.Set("content-type", "text/plain") // the local reply's default
	}
	ApplyHeaderMutations(h, d.GetHeaders())
	h.Set("content-length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// ApplyHeaderMutations applies HeaderValueOptions as Envoy's ext_authz
// filter does (source/extensions/filters/common/ext_authz/
// ext_authz_grpc_impl.cc, getAppendAction): the deprecated append flag, when
// set, wins — true appends to an existing value with "," (or adds), false
// overwrites —; otherwise append_action decides, and its zero value
// APPEND_IF_EXISTS_OR_ADD adds another value.
func ApplyHeaderMutations(h http.Header, opts []*corev3.HeaderValueOption) {
	for _, o := range opts {
		name, value := o.GetHeader().GetKey(), o.GetHeader().GetValue()
		if raw := o.GetHeader().GetRawValue(); len(raw) > 0 {
			value = string(raw)
		}
		if name == "" || name[0] == ':' {
			continue
		}
		_, exists := h[http.CanonicalHeaderKey(name)]
		//lint:ignore SA1019 Envoy still honours the deprecated append flag; the fake must too
		if appendFlag := o.GetAppend(); appendFlag != nil {
			if appendFlag.GetValue() && exists {
				h.Set(name, strings.Join(append(h.Values(name), value), ","))
			} else {
				h.Set(name, value)
			}
			continue
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h.Add(name, value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h.Add(name, value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h.Set(name, value)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h.Set(name, value)
			}
		}
	}
}

// CheckRequest builds the CheckRequest Envoy's ext_authz filter sends for r:
// lower-case header names including the pseudo-headers, repeated headers
// joined with ",", bad UTF-8 bytes replaced by "!", :path and
// request.http.path with the query string, request.http.id Envoy's stream
// id (not x-request-id), source the client and destination the proxy.
func CheckRequest(r *http.Request, streamID uint64) *authv3.CheckRequest {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path := r.RequestURI // the raw request target, as Envoy's :path
	if path == "" {
		path = r.URL.RequestURI()
	}
	headers := make(map[string]string, len(r.Header)+5)
	for name, values := range r.Header {
		headers[strings.ToLower(name)] = sanitize(strings.Join(values, ","))
	}
	// net/http moves these out of r.Header; Envoy sees them as headers.
	if r.ContentLength > 0 {
		headers["content-length"] = strconv.FormatInt(r.ContentLength, 10)
	}
	if len(r.TransferEncoding) > 0 {
		headers["transfer-encoding"] = strings.Join(r.TransferEncoding, ",")
	}
	headers[":authority"] = sanitize(r.Host)
	headers[":method"] = r.Method
	headers[":path"] = sanitize(path)
	headers[":scheme"] = scheme

	size := r.ContentLength
	if size < 0 {
		size = -1
	}
	var destination *corev3.Address
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		destination = socketAddress(a.String())
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: destination},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       strconv.FormatUint(streamID, 10),
				Method:   r.Method,
				Headers:  headers,
				Path:     headers[":path"],
				Host:     headers[":authority"],
				Scheme:   scheme,
				Size:     size,
				Protocol: protocol(r),
			},
		},
	}}
}

// protocol names the HTTP version as Envoy does.
func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	}
	return r.Proto
}

func socketAddress(hostport string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

// sanitize replaces each byte that is not part of valid UTF-8 with "!", as
// Envoy does before putting a header in a proto string.
func sanitize(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteByte('!')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// NewRequestID returns a random UUID (version 4), the form of the
// x-request-id Envoy generates.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}
