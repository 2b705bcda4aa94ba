package extauthz

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/odin-scan/odin-authz/internal/netallow"
)

// ForwardAuthOptions configure the HTTP forward-auth front end.
type ForwardAuthOptions struct {
	// StripCredential asks the proxy to drop the credential header before the
	// upstream (Envoy http_service honours x-envoy-auth-headers-to-remove).
	StripCredential bool
	// PathPrefix is what the proxy puts before the original path (Envoy
	// http_service path_prefix); only with ForwardedNone. See
	// ForwardedRequest.
	PathPrefix string
	// ForwardedHeaders names what the proxy in front sends, and so where the
	// original method and URI are read: ForwardedNone (the default),
	// ForwardedOriginal or ForwardedForwarded. Check it with
	// CheckForwarding before serving.
	ForwardedHeaders string
	// TrustedProxies are the proxies whose X-Forwarded-For is believed
	// when an API key's network allowlist asks for the client's address
	// (ClientBehindProxies); none: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
}

// The values of ForwardAuthOptions.ForwardedHeaders: one per way a proxy
// tells the original request. Each names headers the proxy sets itself,
// overwriting any a client sent; no mode takes a header the proxy merely
// passes through.
const (
	// ForwardedNone: the subrequest's own method and path are the original
	// ones (Envoy http_service, which may put PathPrefix before the path).
	ForwardedNone = "none"
	// ForwardedOriginal: X-Original-Method and X-Original-URI (NGINX
	// auth_request with proxy_set_header, as envoy/nginx/nginx.conf does).
	ForwardedOriginal = "original"
	// ForwardedForwarded: X-Forwarded-Method and X-Forwarded-Uri (Caddy
	// forward_auth; Traefik ForwardAuth with trustForwardHeader off).
	ForwardedForwarded = "forwarded"
)

// The headers that carry the original method and URI. In ForwardedNone a
// subrequest carrying any of them comes from a proxy that expects another
// mode, and is refused rather than decided on its request line.
var forwardedHeaderNames = [...]string{"X-Original-Method", "X-Original-Uri", "X-Forwarded-Method", "X-Forwarded-Uri"}

// CheckForwarding says whether a forward-auth mode and path prefix can be
// served. "auto", the former default, is refused: it took X-Forwarded-* or
// X-Original-*, whichever was present, so through a proxy that sets only
// one of the two a client could name the method and path to authorize.
func CheckForwarding(mode, pathPrefix string) error {
	switch mode {
	case "", ForwardedNone:
	case ForwardedOriginal, ForwardedForwarded:
		if pathPrefix != "" {
			return fmt.Errorf("a path prefix needs forwarded headers %q: with %q the path comes from a header, whole", ForwardedNone, mode)
		}
	case "auto":
		return errors.New(`"auto" is no longer accepted (a client could choose the method and path to authorize): name what the proxy in front sets: ` + modeList)
	default:
		return fmt.Errorf("%q is not a mode: want %s", mode, modeList)
	}
	if pathPrefix != "" && !validPathPrefix(pathPrefix) {
		return fmt.Errorf("path prefix %q: want a path starting with / (no query, fragment, space or control byte)", pathPrefix)
	}
	return nil
}

const modeList = `none (Envoy http_service: the request line), original (NGINX auth_request: X-Original-Method and X-Original-URI), forwarded (Caddy forward_auth, Traefik ForwardAuth: X-Forwarded-Method and X-Forwarded-Uri)`

func validPathPrefix(p string) bool {
	if p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

// HeaderAuthHeadersToRemove is Envoy's http_service header listing request
// headers to remove before the upstream.
const HeaderAuthHeadersToRemove = "x-envoy-auth-headers-to-remove"

// ForwardAuth answers forward-auth subrequests with the same decision as
// Check: Envoy http_service, NGINX auth_request, Caddy forward_auth and
// Traefik ForwardAuth. 200 with the identity headers allows; any other
// status is the denial, with the error body, for the proxy to return.
type ForwardAuth struct {
	authz   *Authorizer
	opts    ForwardAuthOptions
	trusted *netallow.Set
}

// NewForwardAuth returns the HTTP front end.
func NewForwardAuth(a *Authorizer, opts ForwardAuthOptions) *ForwardAuth {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &ForwardAuth{authz: a, opts: opts, trusted: netallow.New(opts.TrustedProxies)}
}

// ServeHTTP implements http.Handler.
func (f *ForwardAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			f.opts.Logger.Error("panic in forward-auth", "panic", p, "stack", string(debug.Stack()))
			d := Decision{Outcome: DenyUnavailable, Reason: "internal_error", RequestID: requestID(httpHeaders(r.Header))}
			writeDenial(w, &d)
		}
	}()
	req := ForwardedRequest(r, f.opts.PathPrefix, f.opts.ForwardedHeaders)
	req.Client = ForwardedClient(r, f.trusted)
	d := f.authz.Decide(r.Context(), &req)
	traceDecision(r.Context(), &d, &req)
	if d.Outcome != Allow {
		writeDenial(w, &d)
		return
	}
	h := w.Header()
	for _, p := range d.Principal.Headers {
		h[http.CanonicalHeaderKey(p.Name)] = []string{p.Value}
	}
	if remove := HeadersToRemove(d.Principal, req.Headers, d.Credential, f.opts.StripCredential); len(remove) > 0 {
		h.Set(HeaderAuthHeadersToRemove, strings.Join(remove, ","))
	}
	for _, p := range d.RateLimitHeaders() {
		h.Set(p.Name, p.Value)
	}
	h.Set("x-request-id", d.RequestID)
	w.WriteHeader(http.StatusOK)
}

// Why ForwardedRequest refuses a subrequest: the proxy did not send what the
// configured mode says it always sends, so the original request is not
// known. Fixed strings, for logs and traces.
const (
	reasonForwardedMissing    = "forwarded_header_missing"
	reasonForwardedRepeated   = "forwarded_header_repeated"
	reasonForwardedUnexpected = "forwarded_header_unexpected"
	reasonForwardedMethod     = "forwarded_method_invalid"
	reasonPathPrefixMissing   = "path_prefix_missing"
	reasonForwardedMode       = "forwarded_mode_unknown"
)

// ForwardedRequest reads the original request from a forward-auth
// subrequest, as mode (see ForwardAuthOptions.ForwardedHeaders) says the
// proxy sends it:
//
//   - ForwardedNone (or ""): the subrequest's method and path; pathPrefix,
//     when set, must begin the path and is removed once, exactly as
//     written, leaving the original path (Envoy sends path_prefix + path).
//     A subrequest carrying X-Original-Method, -URI, X-Forwarded-Method or
//     -Uri is refused: a proxy that sends those expects another mode.
//   - ForwardedOriginal: X-Original-Method and X-Original-URI.
//   - ForwardedForwarded: X-Forwarded-Method and X-Forwarded-Uri; the host
//     from X-Forwarded-Host when present.
//
// A header the mode reads must be present exactly once, and the method must
// be an HTTP token: the proxy sets it, so a missing or repeated one means
// the proxy is not the one configured (or lets a client's value through).
// The request is then marked Misconfigured, never decided on a fallback.
// The path is returned as sent; the policy canonicalises it like any path.
func ForwardedRequest(r *http.Request, pathPrefix, mode string) Request {
	h := httpHeaders(r.Header)
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Headers: h}
	var methodHeader, uriHeader string
	switch mode {
	case "", ForwardedNone:
		for _, name := range forwardedHeaderNames {
			if _, ok := r.Header[name]; ok {
				req.Misconfigured = reasonForwardedUnexpected
				return req
			}
		}
		if pathPrefix != "" {
			rest, ok := strings.CutPrefix(req.Path, pathPrefix)
			if !ok || !strings.HasPrefix(rest, "/") {
				req.Misconfigured = reasonPathPrefixMissing
				return req
			}
			req.Path = rest
		}
		return req
	case ForwardedOriginal:
		methodHeader, uriHeader = "X-Original-Method", "X-Original-Uri"
	case ForwardedForwarded:
		methodHeader, uriHeader = "X-Forwarded-Method", "X-Forwarded-Uri"
		if host, ok := only(r.Header, "X-Forwarded-Host"); ok && host != "" {
			req.Host = host
		}
	default:
		req.Misconfigured = reasonForwardedMode
		return req
	}
	method, mok := only(r.Header, methodHeader)
	uri, uok := only(r.Header, uriHeader)
	switch {
	case !mok || !uok:
		req.Misconfigured = reasonForwardedRepeated
	case method == "" || uri == "":
		req.Misconfigured = reasonForwardedMissing
	case !httpguts.ValidHeaderFieldName(method): // a method is a token, as a header name is
		req.Misconfigured = reasonForwardedMethod
	default:
		req.Method, req.Path = method, uri
	}
	return req
}

// only returns the one value of a header, "" when it is absent, and false
// when it is repeated.
func only(h http.Header, name string) (string, bool) {
	switch v := h[name]; len(v) {
	case 0:
		return "", true
	case 1:
		return v[0], true
	}
	return "", false
}

// httpHeaders adapts net/http headers: repeated values are joined with ","
// as Envoy joins them, so both front ends see the same thing.
type httpHeaders http.Header

// Get implements Headers.
func (h httpHeaders) Get(name string) string {
	v := http.Header(h).Values(name)
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	return strings.Join(v, ",")
}

// Range implements Headers, with lower-case names.
func (h httpHeaders) Range(fn func(name, value string) bool) {
	for k, v := range h {
		if !fn(strings.ToLower(k), strings.Join(v, ",")) {
			return
		}
	}
}

func writeDenial(w http.ResponseWriter, d *Decision) {
	h := w.Header()
	for _, p := range d.DenialHeaders() {
		h.Set(p.Name, p.Value)
	}
	w.WriteHeader(d.Outcome.HTTPStatus())
	_, _ = w.Write(d.Body(time.Now()))
}
