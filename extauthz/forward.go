package extauthz

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

// ForwardAuthOptions configure the HTTP forward-auth front end.
type ForwardAuthOptions struct {
	// StripCredential asks the proxy to drop the credential header before the
	// upstream (Envoy http_service honours x-envoy-auth-headers-to-remove).
	StripCredential bool
	// PathPrefix is removed from the request path when no X-Forwarded-Uri or
	// X-Original-URI says what the original path was: Envoy's http_service
	// sends path_prefix + original path.
	PathPrefix string
	// ForwardedHeaders says which headers carry the original method and URI:
	// "auto" (default: X-Forwarded-* or X-Original-*, and a request that
	// carries both with different values is refused, since a client could
	// have set one of them), "original" (NGINX: X-Original-URI and
	// X-Original-Method only), "forwarded" (Caddy, Traefik:
	// X-Forwarded-Uri, -Method, -Host only), or "none" (Envoy http_service:
	// the request line itself).
	ForwardedHeaders string
	Logger           *slog.Logger
}

// HeaderAuthHeadersToRemove is Envoy's http_service header listing request
// headers to remove before the upstream.
const HeaderAuthHeadersToRemove = "x-envoy-auth-headers-to-remove"

// ForwardAuth answers forward-auth subrequests with the same decision as
// Check: Envoy http_service, NGINX auth_request, Caddy forward_auth and
// Traefik ForwardAuth. 200 with the identity headers allows; any other
// status is the denial, with the SPEC body, for the proxy to return.
type ForwardAuth struct {
	authz *Authorizer
	opts  ForwardAuthOptions
}

// NewForwardAuth returns the HTTP front end.
func NewForwardAuth(a *Authorizer, opts ForwardAuthOptions) *ForwardAuth {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &ForwardAuth{authz: a, opts: opts}
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

// ForwardedRequest reads the original request from a forward-auth
// subrequest, trusting the headers that mode names (see
// ForwardAuthOptions.ForwardedHeaders): the method from X-Forwarded-Method
// (Caddy, Traefik) or X-Original-Method (NGINX), else the subrequest's own
// (Envoy); the URI from X-Forwarded-Uri or X-Original-URI, else the
// subrequest's path less pathPrefix; the host from X-Forwarded-Host, else
// Host.
func ForwardedRequest(r *http.Request, pathPrefix, mode string) Request {
	h := httpHeaders(r.Header)
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Headers: h}
	if pathPrefix != "" {
		req.Path = "/" + strings.TrimLeft(strings.TrimPrefix(req.Path, pathPrefix), "/")
	}
	fwdMethod, fwdURI := h.Get("x-forwarded-method"), h.Get("x-forwarded-uri")
	origMethod, origURI := h.Get("x-original-method"), h.Get("x-original-uri")
	var method, uri string
	switch mode {
	case "none":
		return req
	case "original":
		method, uri = origMethod, origURI
	case "forwarded":
		method, uri = fwdMethod, fwdURI
	default:
		if (fwdURI != "" && origURI != "" && fwdURI != origURI) || (fwdMethod != "" && origMethod != "" && fwdMethod != origMethod) {
			req.Invalid = "conflicting_forwarded_headers"
		}
		method, uri = firstNonEmpty(fwdMethod, origMethod), firstNonEmpty(fwdURI, origURI)
	}
	if method != "" {
		req.Method = method
	}
	if uri != "" {
		req.Path = uri
	}
	if host := h.Get("x-forwarded-host"); host != "" && mode != "original" {
		req.Host = host
	}
	return req
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
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
