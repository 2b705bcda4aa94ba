package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/keystore"
)

const checkSummary = `Send one authorization request, as Envoy or a forward-auth proxy would, and
print the decision (allowed, or denied with its status), the headers the
upstream would receive (set and removed), the response headers to the client
and the denial body. The quickest way to debug a deployment.

It calls the gRPC Check API (envoy.service.auth.v3.Authorization) at --grpc,
or, with --http, sends a forward-auth request to that URL instead (headers
sorted as Envoy's http_service filter would: x-odin-* to the upstream,
x-envoy-auth-headers-to-remove removed, ratelimit-* to the client).
The credential is never printed in full.

  odin check --key odin_sk_... --path /v1/scans
  odin check --http http://127.0.0.1:9002 --method POST --path /v1/scans -H 'authorization: Bearer eyJ...'

Exit status: 0 allowed, 1 denied, 2 no decision (bad flags, server unreachable).`

// checkOptions is the configuration of `odin check`.
type checkOptions struct {
	grpcAddr, httpURL  string
	method, path, host string
	// clientAddr is the client's address Envoy would report
	// (source.address), for keys restricted to certain networks; invalid:
	// none. gRPC only.
	clientAddr netip.Addr
	headers    []headerField
	timeout    time.Duration
	tls        tlsClientFlags // TLS to odin authz (gRPC, or forward-auth at an https:// URL)
}

// headerField is one header, name in lower case.
type headerField struct{ Name, Value string }

// checkResult is a decision from either front end, as odin check prints it.
type checkResult struct {
	Allowed bool
	// Status is the HTTP status: on a denial, what the client gets.
	Status int
	// CheckStatus is the gRPC Check answer's status ("OK",
	// "Unauthenticated", ...); empty over HTTP.
	CheckStatus    string
	UpstreamSet    []headerField
	UpstreamRemove []string
	ClientHeaders  []headerField
	// Metadata is the dynamic metadata (gRPC only), as JSON.
	Metadata string
	Body     string
}

// exitError asks main for an exit status other than 1: odin check exits 2
// when it got no decision, so that a script can tell a denial from an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process exit status main should use.
func (e *exitError) ExitCode() int { return e.code }

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseCheckFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	var res checkResult
	if opts.httpURL != "" {
		res, err = checkHTTP(ctx, opts)
	} else {
		res, err = checkGRPC(ctx, opts)
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	writeCheck(stdout, opts, res)
	if !res.Allowed {
		return &exitError{code: 1, err: fmt.Errorf("check: denied (%d)", res.Status)}
	}
	return nil
}

// checkConfig is what odin check's flags set, before parseCheckFlags
// checks it.
type checkConfig struct {
	opts       checkOptions
	key, token string
	clientAddr string
	// headers are the -H values as given: checked after parsing, since the
	// flag package would quote a bad value, and it may hold a credential.
	headers []string
}

// checkFlagSet defines odin check's flags, writing to c.
func checkFlagSet(c *checkConfig) *flags {
	f := newFlags("check", checkSummary)
	o := &c.opts
	f.String(&o.grpcAddr, "grpc", "ODIN_CHECK_GRPC", devGRPCAddr, "odin authz gRPC address (host:port)")
	f.String(&o.httpURL, "http", "ODIN_CHECK_HTTP", "", "forward-auth base URL, e.g. http://127.0.0.1:9002; when set, used instead of --grpc")
	f.String(&o.method, "method", "", "GET", "method of the request to authorize")
	f.String(&o.path, "path", "", "/", "path (and query) of the request to authorize")
	f.String(&o.host, "host", "", "", "host (authority) of the request to authorize")
	f.String(&c.clientAddr, "client-address", "", "", "gRPC only: the client address Envoy reports (source.address), e.g. 203.0.113.7, for keys restricted to certain networks; empty: none, and such a key is refused (client address unknown). Over --http the client is this machine, or what a trusted proxy's X-Forwarded-For says")
	addHeader := func(s string) error { c.headers = append(c.headers, s); return nil }
	f.Repeated("H", "a request header, 'name: value' (repeatable)", addHeader)
	f.Repeated("header", "same as -H", addHeader)
	f.Secret(&c.key, "key", "ODIN_CHECK_KEY", "an API key, sent as api-key")
	f.Secret(&c.token, "token", "ODIN_CHECK_TOKEN", "a session token (JWT), sent as authorization: Bearer")
	f.Duration(&o.timeout, "timeout", "", 5*time.Second, "deadline of the request")
	o.tls.bind(f, "ODIN_CHECK_")
	return f
}

func parseCheckFlags(args []string, stderr io.Writer) (checkOptions, error) {
	var c checkConfig
	f, err := parseFlags(&c, checkFlagSet, args, stderr)
	if err != nil {
		return c.opts, err
	}
	o, key, token, rawHeaders := c.opts, c.key, c.token, c.headers
	if len(f.positional) > 0 {
		return o, fmt.Errorf("check: unexpected argument %q (flags: odin check -h)", maskSecret(f.positional[0]))
	}
	for i, s := range rawHeaders {
		h, err := parseHeaderFlag(s)
		if err != nil {
			return o, fmt.Errorf("check: header %d: %w", i+1, err)
		}
		o.headers = append(o.headers, h)
	}
	if key != "" {
		o.headers = append(o.headers, headerField{"api-key", key})
	}
	if token != "" {
		o.headers = append(o.headers, headerField{"authorization", "Bearer " + token})
	}
	o.method = strings.ToUpper(o.method)
	if o.method == "" || strings.ContainsFunc(o.method, func(r rune) bool { return r < 'A' || r > 'Z' }) {
		return o, fmt.Errorf("check: --method %q: want a method name such as GET", o.method)
	}
	if !strings.HasPrefix(o.path, "/") {
		return o, fmt.Errorf("check: --path %q: want a path starting with /", o.path)
	}
	if o.timeout <= 0 {
		return o, errors.New("check: --timeout must be positive")
	}
	if c.clientAddr != "" {
		if o.httpURL != "" {
			return o, errors.New("check: --client-address is for gRPC: over --http the client is this machine (or, from a trusted proxy, -H 'X-Forwarded-For: ...')")
		}
		if o.clientAddr, err = netip.ParseAddr(c.clientAddr); err != nil {
			return o, fmt.Errorf("check: --client-address %q: want an IP address such as 203.0.113.7 or 2001:db8::7", c.clientAddr)
		}
	}
	return o, nil
}

// parseHeaderFlag reads "name: value" as curl's -H takes it.
func parseHeaderFlag(s string) (headerField, error) {
	name, value, ok := strings.Cut(s, ":")
	name = strings.ToLower(strings.TrimSpace(name))
	if !ok || name == "" || strings.ContainsAny(name, " \t") {
		return headerField{}, errors.New("want 'name: value'")
	}
	return headerField{name, strings.TrimSpace(value)}, nil
}

// checkGRPC sends one Check as Envoy would: lower-case headers, repeats
// joined with ",".
func checkGRPC(ctx context.Context, o checkOptions) (checkResult, error) {
	creds := insecure.NewCredentials()
	if cfg, err := o.tls.config(); err != nil {
		return checkResult{}, fmt.Errorf("check: %w", err)
	} else if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(o.grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return checkResult{}, fmt.Errorf("check: gRPC %s: %w", o.grpcAddr, err)
	}
	defer conn.Close()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(o))
	if err != nil {
		return checkResult{}, fmt.Errorf("check: gRPC Check at %s: %w", o.grpcAddr, err)
	}
	return resultFromCheck(resp), nil
}

func checkRequest(o checkOptions) *authv3.CheckRequest {
	headers := map[string]string{}
	host := o.host
	for _, h := range o.headers {
		if h.Name == "host" || h.Name == ":authority" {
			host = h.Value
			continue
		}
		if prev, ok := headers[h.Name]; ok {
			h.Value = prev + "," + h.Value
		}
		headers[h.Name] = h.Value
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Method: o.method, Path: o.path, Host: host, Scheme: "http", Protocol: "HTTP/1.1", Headers: headers,
		},
	}}}
	if o.clientAddr.IsValid() {
		req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: o.clientAddr.String()},
		}}}
	}
	return req
}

// resultFromCheck reads a CheckResponse as Envoy does: a non-OK status is a
// denial, with the denied response's status (403 when it has none).
func resultFromCheck(resp *authv3.CheckResponse) checkResult {
	r := checkResult{CheckStatus: codes.Code(resp.GetStatus().GetCode()).String()}
	if md := resp.GetDynamicMetadata(); len(md.GetFields()) > 0 {
		b, _ := json.Marshal(md.AsMap()) // encoding/json: sorted keys, stable output
		r.Metadata = string(b)
	}
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		ok := resp.GetOkResponse()
		r.Allowed, r.Status = true, http.StatusOK
		r.UpstreamSet = headerOptions(ok.GetHeaders())
		r.UpstreamRemove = ok.GetHeadersToRemove()
		r.ClientHeaders = headerOptions(ok.GetResponseHeadersToAdd())
		return r
	}
	d := resp.GetDeniedResponse()
	r.Status = int(d.GetStatus().GetCode())
	if r.Status == 0 {
		r.Status = http.StatusForbidden
	}
	r.ClientHeaders = headerOptions(d.GetHeaders())
	r.Body = d.GetBody()
	return r
}

func headerOptions(opts []*corev3.HeaderValueOption) []headerField {
	var out []headerField
	for _, o := range opts {
		v := o.GetHeader().GetValue()
		if raw := o.GetHeader().GetRawValue(); len(raw) > 0 {
			v = string(raw)
		}
		out = append(out, headerField{strings.ToLower(o.GetHeader().GetKey()), v})
	}
	return out
}

// checkHTTP sends one forward-auth request: the method and path to
// authorize are the request's own, as Envoy's http_service sends them.
func checkHTTP(ctx context.Context, o checkOptions) (checkResult, error) {
	u, err := url.Parse(o.httpURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return checkResult{}, fmt.Errorf("check: --http %q: want http(s)://host[:port][/prefix]", o.httpURL)
	}
	req, err := http.NewRequestWithContext(ctx, o.method, strings.TrimSuffix(o.httpURL, "/")+o.path, nil)
	if err != nil {
		return checkResult{}, fmt.Errorf("check: %w", err)
	}
	if o.host != "" {
		req.Host = o.host
	}
	for _, h := range o.headers {
		if h.Name == "host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	tlsCfg, err := o.tls.config()
	if err != nil {
		return checkResult{}, fmt.Errorf("check: %w", err)
	}
	if tlsCfg != nil && u.Scheme != "https" {
		return checkResult{}, fmt.Errorf("check: --tls-* flags need an https:// --http URL, not %q", o.httpURL)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if tlsCfg != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tlsCfg
		client.Transport = t
	}
	resp, err := client.Do(req)
	if err != nil {
		return checkResult{}, fmt.Errorf("check: forward-auth at %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return checkResult{}, fmt.Errorf("check: forward-auth at %s: read answer: %w", u.Host, err)
	}
	return resultFromHTTP(resp.StatusCode, resp.Header, body), nil
}

// resultFromHTTP sorts a forward-auth answer's headers as Envoy's
// http_service filter does with this project's configuration
// (envoy/envoy-http.yaml): on 2xx, x-odin-* go to the upstream and
// ratelimit-* to the client; on a denial, the answer goes to the client.
func resultFromHTTP(status int, h http.Header, body []byte) checkResult {
	r := checkResult{Status: status, Allowed: status >= 200 && status < 300}
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, strings.ToLower(name))
	}
	sort.Strings(names)
	for _, name := range names {
		value := strings.Join(h.Values(name), ",")
		switch {
		case !r.Allowed:
			if !transportHeader(name) {
				r.ClientHeaders = append(r.ClientHeaders, headerField{name, value})
			}
		case name == extauthz.HeaderAuthHeadersToRemove:
			r.UpstreamRemove = splitList(value)
		case strings.HasPrefix(name, extauthz.IdentityHeaderPrefix):
			r.UpstreamSet = append(r.UpstreamSet, headerField{name, value})
		case strings.HasPrefix(name, "ratelimit-"):
			r.ClientHeaders = append(r.ClientHeaders, headerField{name, value})
		}
	}
	if !r.Allowed {
		r.Body = string(body)
	}
	return r
}

func transportHeader(name string) bool {
	switch name {
	case "date", "content-length", "connection", "keep-alive", "transfer-encoding":
		return true
	}
	return false
}

// writeCheck prints a result, the credential masked.
func writeCheck(w io.Writer, o checkOptions, r checkResult) {
	var b strings.Builder
	via := "gRPC Check at " + o.grpcAddr
	if o.httpURL != "" {
		via = "forward-auth at " + o.httpURL
	}
	fmt.Fprintf(&b, "request    %s %s  (%s)\n", o.method, o.path, via)
	for _, h := range o.headers {
		fmt.Fprintf(&b, "  %s: %s\n", h.Name, maskHeaderValue(h.Name, h.Value))
	}
	decision := fmt.Sprintf("ALLOWED (%d)", r.Status)
	if !r.Allowed {
		decision = fmt.Sprintf("DENIED %d %s", r.Status, http.StatusText(r.Status))
	}
	if r.CheckStatus != "" {
		decision += "  (Check status " + r.CheckStatus + ")"
	}
	fmt.Fprintf(&b, "decision   %s\n", decision)
	if r.Allowed {
		b.WriteString("to the upstream\n")
		for _, h := range r.UpstreamSet {
			fmt.Fprintf(&b, "  set     %s: %s\n", h.Name, h.Value)
		}
		for _, name := range r.UpstreamRemove {
			fmt.Fprintf(&b, "  remove  %s\n", name)
		}
		if len(r.UpstreamSet)+len(r.UpstreamRemove) == 0 {
			b.WriteString("  (unchanged)\n")
		}
	}
	b.WriteString("to the client\n")
	for _, h := range r.ClientHeaders {
		fmt.Fprintf(&b, "  %s: %s\n", h.Name, h.Value)
	}
	if len(r.ClientHeaders) == 0 {
		b.WriteString("  (no headers)\n")
	}
	if r.Metadata != "" {
		fmt.Fprintf(&b, "metadata   %s\n", r.Metadata)
	}
	if !r.Allowed {
		fmt.Fprintf(&b, "body       %s\n", strings.TrimRight(r.Body, "\n"))
	}
	_, _ = io.WriteString(w, b.String())
}

// maskHeaderValue hides a credential, keeping enough to tell which one it
// was: a key's hint (as odin keys list shows it), a token's first
// characters and length.
func maskHeaderValue(name, value string) string {
	switch name {
	case "authorization", "proxy-authorization":
		if scheme, cred, ok := strings.Cut(value, " "); ok {
			return scheme + " " + maskSecret(strings.TrimSpace(cred))
		}
		return maskSecret(value)
	case "api-key", "x-api-key", "cookie":
		return maskSecret(value)
	}
	return value
}

func maskSecret(s string) string {
	if strings.HasPrefix(s, keystore.KeyPrefix) && len(s) == keystore.KeyLen {
		return keystore.KeyHint(s)
	}
	if len(s) <= 12 {
		return fmt.Sprintf("… (%d characters)", len(s))
	}
	return fmt.Sprintf("%s… (%d characters)", s[:6], len(s))
}
