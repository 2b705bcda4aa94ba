package envoyproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// scriptedAuthz is an Authorization server answering what a test scripts.
// The proxy is what these tests check, so they need answers the real server
// never gives (no status, append flags, errors); the real server is checked
// through this proxy in test/e2e.
type scriptedAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu      sync.Mutex
	got     []*authv3.CheckRequest
	respond func() (*authv3.CheckResponse, error)
}

func (s *scriptedAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.got = append(s.got, req)
	respond := s.respond
	s.mu.Unlock()
	return respond()
}

func (s *scriptedAuthz) script(fn func() (*authv3.CheckResponse, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.respond, s.got = fn, nil
}

func (s *scriptedAuthz) requests() []*authv3.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*authv3.CheckRequest(nil), s.got...)
}

// upstreamRecord is what the upstream received.
type upstreamRecord struct {
	Method, URI, Host, Body string
	Header                  http.Header
}

type harness struct {
	authz    *scriptedAuthz
	client   authv3.AuthorizationClient
	upstream *url.URL
	mu       sync.Mutex
	received []upstreamRecord
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{authz: &scriptedAuthz{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, h.authz)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = authv3.NewAuthorizationClient(conn)

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.received = append(h.received, upstreamRecord{r.Method, r.RequestURI, r.Host, string(body), r.Header.Clone()})
		h.mu.Unlock()
		w.Header().Set("x-upstream", "yes")
		_, _ = io.WriteString(w, "from upstream")
	}))
	t.Cleanup(up.Close)
	h.upstream, _ = url.Parse(up.URL)
	return h
}

// proxy starts a Proxy with opts (Upstream and Authz filled in) on loopback.
func (h *harness) proxy(t *testing.T, opts Options) string {
	t.Helper()
	opts.Upstream, opts.Authz = h.upstream, h.client
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Second // the race detector is slow; timeouts have their own test
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (h *harness) takeReceived() []upstreamRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.received
	h.received = nil
	return r
}

var noGzip = &http.Client{Transport: &http.Transport{DisableCompression: true}}

type reply struct {
	Status int
	Header http.Header
	Body   string
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := noGzip.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(body)}
}

func newRequest(t *testing.T, method, url string, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return req
}

func ok(resp *authv3.OkHttpResponse) func() (*authv3.CheckResponse, error) {
	return func() (*authv3.CheckResponse, error) {
		return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: resp}}, nil
	}
}

func hv(name, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, AppendAction: action}
}

func hvAppend(name, value string, appendFlag bool) *corev3.HeaderValueOption {
	//lint:ignore SA1019 the test covers the deprecated append flag
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: name, Value: value}, Append: wrapperspb.Bool(appendFlag)}
}

func TestCheckRequestShape(t *testing.T) {
	h := newHarness(t)
	h.authz.script(ok(&authv3.OkHttpResponse{}))
	base := h.proxy(t, Options{})

	req := newRequest(t, "POST", base+"/v1/scans/%2e%2e/x?page=2&q=a,b", http.Header{
		"Authorization": {"Bearer tok"},
		"X-Multi":       {"a", "b"},
		"X-Bad":         {"ok\xffok"},
		"X-Request-Id":  {"req-fixed"},
		"User-Agent":    {"e2e/1"},
	})
	req.Body = io.NopCloser(strings.NewReader("hello"))
	req.ContentLength = 5
	var local string
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { local = ci.Conn.LocalAddr().String() },
	}))
	if got := do(t, req); got.Status != 200 {
		t.Fatalf("status %d, want 200", got.Status)
	}
	reqs := h.authz.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d Check calls, want 1", len(reqs))
	}
	got := reqs[0]
	proxyHost := strings.TrimPrefix(base, "http://")
	wantHeaders := map[string]string{
		":authority": proxyHost, ":method": "POST", ":path": "/v1/scans/%2e%2e/x?page=2&q=a,b", ":scheme": "http",
		"authorization": "Bearer tok", "x-multi": "a,b", "x-bad": "ok!ok", "x-request-id": "req-fixed",
		"user-agent": "e2e/1", "content-length": "5",
	}
	want := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(local)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(proxyHost)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Headers: wantHeaders, Path: "/v1/scans/%2e%2e/x?page=2&q=a,b", Host: proxyHost,
			Scheme: "http", Size: 5, Protocol: "HTTP/1.1",
		}},
	}}
	opts := cmp.Options{
		protocmp.Transform(),
		protocmp.IgnoreFields(&authv3.AttributeContext_Request{}, "time"),
		protocmp.IgnoreFields(&authv3.AttributeContext_HttpRequest{}, "id"),
	}
	if diff := cmp.Diff(want, got, opts...); diff != "" {
		t.Errorf("CheckRequest (-want, +got):\n%s", diff)
	}
	if got.GetAttributes().GetRequest().GetHttp().GetId() == "" || got.GetAttributes().GetRequest().GetTime() == nil {
		t.Error("request.http.id or request.time is empty")
	}
	if rec := h.takeReceived(); len(rec) != 1 || rec[0].Body != "hello" || rec[0].URI != "/v1/scans/%2e%2e/x?page=2&q=a,b" {
		t.Errorf("upstream received %+v, want the body and the raw path", rec)
	}
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestRequestID(t *testing.T) {
	h := newHarness(t)
	h.authz.script(ok(&authv3.OkHttpResponse{}))
	base := h.proxy(t, Options{})
	tests := []struct {
		name   string
		header http.Header
		want   string // "" means a generated UUID
	}{
		{"generated when absent", nil, ""},
		{"kept when sent", http.Header{"X-Request-Id": {"req-client-1"}}, "req-client-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.authz.script(ok(&authv3.OkHttpResponse{}))
			do(t, newRequest(t, "GET", base+"/", tt.header))
			sent := h.authz.requests()[0].GetAttributes().GetRequest().GetHttp().GetHeaders()["x-request-id"]
			upstream := h.takeReceived()[0].Header.Get("x-request-id")
			if sent != upstream {
				t.Errorf("Check saw x-request-id %q, upstream %q: want the same", sent, upstream)
			}
			if tt.want != "" && sent != tt.want || tt.want == "" && !uuidRE.MatchString(sent) {
				t.Errorf("x-request-id = %q, want %q (empty: a UUID)", sent, tt.want)
			}
		})
	}
}

func TestAllowAppliesMutations(t *testing.T) {
	h := newHarness(t)
	base := h.proxy(t, Options{})
	const overwrite = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	tests := []struct {
		name         string
		client       http.Header
		resp         *authv3.OkHttpResponse
		wantUpstream http.Header // compared on these names only; nil value: absent
		wantHost     string      // "" means the proxy's own host
		wantClient   http.Header // response headers, compared on these names only
	}{
		{
			name:   "append false and OVERWRITE_IF_EXISTS_OR_ADD overwrite",
			client: http.Header{"X-Odin-Subject": {"user_mallory"}},
			resp: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{
				Header: &corev3.HeaderValue{Key: "x-odin-subject", Value: "user_alice"}, Append: wrapperspb.Bool(false), AppendAction: overwrite,
			}, hv("x-odin-tier", "pro", overwrite)}},
			wantUpstream: http.Header{"X-Odin-Subject": {"user_alice"}, "X-Odin-Tier": {"pro"}},
		},
		{
			name:         "append_action unset adds a value",
			client:       http.Header{"X-Tag": {"a"}},
			resp:         &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-tag", "b", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}},
			wantUpstream: http.Header{"X-Tag": {"a", "b"}},
		},
		{
			name:         "deprecated append true joins with a comma",
			client:       http.Header{"X-Tag": {"a"}},
			resp:         &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-tag", "b", true), hvAppend("x-new", "n", true)}},
			wantUpstream: http.Header{"X-Tag": {"a,b"}, "X-New": {"n"}},
		},
		{
			name:   "ADD_IF_ABSENT and OVERWRITE_IF_EXISTS",
			client: http.Header{"X-Present": {"client"}},
			resp: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				hv("x-present", "server", corev3.HeaderValueOption_ADD_IF_ABSENT),
				hv("x-absent", "server", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			}},
			wantUpstream: http.Header{"X-Present": {"client"}, "X-Absent": nil},
		},
		{
			name:         "headers_to_remove spares pseudo-headers and host",
			client:       http.Header{"Authorization": {"Bearer x"}, "Api-Key": {"k"}, "X-Odin-Admin": {"1"}},
			resp:         &authv3.OkHttpResponse{HeadersToRemove: []string{"authorization", "api-key", "x-odin-admin", "host", ":path", ":authority"}},
			wantUpstream: http.Header{"Authorization": nil, "Api-Key": nil, "X-Odin-Admin": nil},
		},
		{
			name:       "response_headers_to_add reach the client",
			resp:       &authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("ratelimit-remaining", "9", overwrite), hv("x-upstream", "authz", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)}},
			wantClient: http.Header{"Ratelimit-Remaining": {"9"}, "X-Upstream": {"yes", "authz"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.authz.script(ok(tt.resp))
			got := do(t, newRequest(t, "GET", base+"/v1/scans?page=2", tt.client))
			if got.Status != 200 || got.Body != "from upstream" {
				t.Fatalf("client got %d %q, want 200 from the upstream", got.Status, got.Body)
			}
			rec := h.takeReceived()
			if len(rec) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(rec))
			}
			if diff := cmp.Diff(tt.wantUpstream, pick(rec[0].Header, tt.wantUpstream)); diff != "" {
				t.Errorf("upstream headers (-want, +got):\n%s", diff)
			}
			if rec[0].URI != "/v1/scans?page=2" || rec[0].Host != strings.TrimPrefix(base, "http://") {
				t.Errorf("upstream got %s for host %s: path or host changed", rec[0].URI, rec[0].Host)
			}
			if diff := cmp.Diff(tt.wantClient, pick(got.Header, tt.wantClient)); diff != "" {
				t.Errorf("client response headers (-want, +got):\n%s", diff)
			}
		})
	}
}

// pick returns h's values for the names in like (nil when absent).
func pick(h, like http.Header) http.Header {
	if like == nil {
		return nil
	}
	out := http.Header{}
	for name := range like {
		out[name] = h.Values(name)
	}
	return out
}

func TestDenialsAndErrors(t *testing.T) {
	h := newHarness(t)
	base := h.proxy(t, Options{})
	base503 := h.proxy(t, Options{StatusOnError: 503})
	baseFast := h.proxy(t, Options{Timeout: 50 * time.Millisecond})
	denied := func(st *typev3.HttpStatus, body string, headers ...*corev3.HeaderValueOption) func() (*authv3.CheckResponse, error) {
		return func() (*authv3.CheckResponse, error) {
			return &authv3.CheckResponse{
				Status:       &status.Status{Code: int32(codes.Unauthenticated)},
				HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: st, Headers: headers, Body: body}},
			}, nil
		}
	}
	const overwrite = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	tests := []struct {
		name    string
		base    string
		respond func() (*authv3.CheckResponse, error)
		want    reply // Header compared on its names only
	}{
		{
			name: "denied_response status, headers and body",
			base: base,
			respond: denied(&typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, `{"error":{}}`,
				hv("content-type", "application/json", overwrite), hv("www-authenticate", `Bearer realm="odin"`, overwrite)),
			want: reply{401, http.Header{"Content-Type": {"application/json"}, "Www-Authenticate": {`Bearer realm="odin"`}}, `{"error":{}}`},
		},
		{
			name:    "denied_response without a status is 403",
			base:    base,
			respond: denied(nil, "no"),
			want:    reply{403, http.Header{"Content-Type": {"text/plain"}}, "no"},
		},
		{
			name: "a non-OK status without denied_response is 403 with no body",
			base: base,
			respond: func() (*authv3.CheckResponse, error) {
				return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}, nil
			},
			want: reply{403, http.Header{"Content-Type": nil}, ""},
		},
		{
			name:    "a gRPC error is status_on_error (default 403), empty body",
			base:    base,
			respond: func() (*authv3.CheckResponse, error) { return nil, grpcstatus.Error(codes.Unavailable, "down") },
			want:    reply{403, http.Header{"Content-Type": nil}, ""},
		},
		{
			name:    "a gRPC error with status_on_error 503",
			base:    base503,
			respond: func() (*authv3.CheckResponse, error) { return nil, errors.New("broken") },
			want:    reply{503, http.Header{"Content-Type": nil}, ""},
		},
		{
			name: "a timeout is an error, not a denial",
			base: baseFast,
			respond: func() (*authv3.CheckResponse, error) {
				time.Sleep(300 * time.Millisecond)
				return ok(&authv3.OkHttpResponse{})()
			},
			want: reply{403, http.Header{"Content-Type": nil}, ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.authz.script(tt.respond)
			got := do(t, newRequest(t, "GET", tt.base+"/v1/scans", http.Header{"Api-Key": {"k"}}))
			got.Header = pick(got.Header, tt.want.Header)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("client reply (-want, +got):\n%s", diff)
			}
			if rec := h.takeReceived(); len(rec) != 0 {
				t.Errorf("the upstream got %d requests, want none", len(rec))
			}
		})
	}
}
