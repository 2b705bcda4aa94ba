package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestParseHeaderFlag(t *testing.T) {
	tests := []struct {
		in      string
		want    headerField
		wantErr bool
	}{
		{"api-key: odin_sk_x", headerField{"api-key", "odin_sk_x"}, false},
		{"Authorization:Bearer a:b", headerField{"authorization", "Bearer a:b"}, false},
		{"  X-Request-Id :  req-1  ", headerField{"x-request-id", "req-1"}, false},
		{"x-empty:", headerField{"x-empty", ""}, false},
		{"no colon", headerField{}, true},
		{": value", headerField{}, true},
		{"two words: x", headerField{}, true},
	}
	for _, tt := range tests {
		got, err := parseHeaderFlag(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseHeaderFlag(%q): error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("parseHeaderFlag(%q) (-want, +got):\n%s", tt.in, diff)
		}
	}
}

func TestMaskHeaderValue(t *testing.T) {
	const key = "odin_sk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgQWERTY" // 57 characters
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
	tests := []struct{ name, value, want string }{
		{"api-key", key, "odin_sk_AbCd…ERTY"},
		{"authorization", "Bearer " + key, "Bearer odin_sk_AbCd…ERTY"},
		{"authorization", "Bearer " + jwt, "Bearer eyJhbG… (53 characters)"},
		{"authorization", "opaque-secret-value", "opaque… (19 characters)"},
		{"api-key", "short", "… (5 characters)"},
		{"cookie", "session=abcdefghijklmnop", "sessio… (24 characters)"},
		{"x-request-id", "req-1", "req-1"},
	}
	for _, tt := range tests {
		got := maskHeaderValue(tt.name, tt.value)
		if got != tt.want {
			t.Errorf("maskHeaderValue(%q, %q) = %q, want %q", tt.name, tt.value, got, tt.want)
		}
	}
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func TestResultFromCheck(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"subject": "user_1", "auth_method": "api_key"})
	tests := []struct {
		name string
		resp *authv3.CheckResponse
		want checkResult
	}{
		{"allowed", &authv3.CheckResponse{
			Status: &status.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              []*corev3.HeaderValueOption{hv("x-odin-subject", "user_1"), hv("x-odin-auth-method", "api_key")},
				HeadersToRemove:      []string{"x-odin-org-id", "api-key"},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("ratelimit-limit", "20")},
			}},
			DynamicMetadata: md,
		}, checkResult{
			Allowed: true, Status: 200, CheckStatus: "OK",
			UpstreamSet:    []headerField{{"x-odin-subject", "user_1"}, {"x-odin-auth-method", "api_key"}},
			UpstreamRemove: []string{"x-odin-org-id", "api-key"},
			ClientHeaders:  []headerField{{"ratelimit-limit", "20"}},
			Metadata:       `{"auth_method":"api_key","subject":"user_1"}`,
		}},
		{"denied", &authv3.CheckResponse{
			Status: &status.Status{Code: 16, Message: "UNAUTHORIZED"},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{hv("content-type", "application/json"), {Header: &corev3.HeaderValue{Key: "WWW-Authenticate", RawValue: []byte(`Bearer realm="odin"`)}}},
				Body:    `{"error":{"code":"UNAUTHORIZED"}}`,
			}},
		}, checkResult{
			Status: 401, CheckStatus: "Unauthenticated",
			ClientHeaders: []headerField{{"content-type", "application/json"}, {"www-authenticate", `Bearer realm="odin"`}},
			Body:          `{"error":{"code":"UNAUTHORIZED"}}`,
		}},
		// Envoy answers 403 to a denial that names no status.
		{"denied without a response", &authv3.CheckResponse{Status: &status.Status{Code: 7}},
			checkResult{Status: 403, CheckStatus: "PermissionDenied"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, resultFromCheck(tt.resp)); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tt.name, diff)
		}
	}
}

func TestResultFromHTTP(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   checkResult
	}{
		{"allowed", 200, http.Header{
			"X-Odin-Subject":                 {"user_1"},
			"X-Odin-Auth-Method":             {"api_key"},
			"X-Envoy-Auth-Headers-To-Remove": {"x-odin-org-id,api-key"},
			"Ratelimit-Limit":                {"20"},
			"X-Request-Id":                   {"req-1"},
			"Date":                           {"Fri, 27 Nov 2026 07:39:43 GMT"},
		}, "", checkResult{
			Allowed: true, Status: 200,
			UpstreamSet:    []headerField{{"x-odin-auth-method", "api_key"}, {"x-odin-subject", "user_1"}},
			UpstreamRemove: []string{"x-odin-org-id", "api-key"},
			ClientHeaders:  []headerField{{"ratelimit-limit", "20"}},
		}},
		{"denied", 403, http.Header{
			"Content-Type":   {"application/json"},
			"X-Request-Id":   {"req-1"},
			"Content-Length": {"17"},
			"Date":           {"Fri, 27 Nov 2026 07:39:43 GMT"},
		}, `{"error":"nope"}`, checkResult{
			Status:        403,
			ClientHeaders: []headerField{{"content-type", "application/json"}, {"x-request-id", "req-1"}},
			Body:          `{"error":"nope"}`,
		}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, resultFromHTTP(tt.status, tt.header, []byte(tt.body))); diff != "" {
			t.Errorf("%s (-want, +got):\n%s", tt.name, diff)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var e interface{ ExitCode() int }
	if errors.As(err, &e) {
		return e.ExitCode()
	}
	return 1
}

// A request that gets no decision exits 2, and no error message carries the
// credential.
func TestCheckErrors(t *testing.T) {
	const key = "odin_sk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgQWERTY"
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, args := range [][]string{
		{"--nope"},
		{"-H", "api-key " + key},
		{key},
		{"--method", "G E T"},
		{"--path", "v1/scans"},
		{"--client-address", "client.example", "--key", key},
		{"--client-address", "203.0.113.7", "--http", "http://" + deadAddr, "--key", key},
		{"--http", "ftp://example.com", "--key", key},
		{"--grpc", deadAddr, "--key", key},
		{"--http", "http://" + deadAddr, "--key", key},
	} {
		stdout, stderr, err := odin(t, append([]string{"check"}, args...)...)
		if got := exitCode(err); got != 2 {
			t.Errorf("check %v: exit %d (%v), want 2", args, got, err)
		}
		if err != nil && strings.Contains(err.Error()+stdout+stderr, key) {
			t.Errorf("check %v prints the key: %v\n%s%s", args, err, stdout, stderr)
		}
	}
	if _, stderr, err := odin(t, "check", "-h"); !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr, "Exit status: 0 allowed, 1 denied, 2") {
		t.Errorf("check -h: %v\n%s", err, stderr)
	}
}

// odin check against a running odin dev, over both front ends.
func TestCheckAgainstDev(t *testing.T) {
	d := startDev(t, filepath.Join(t.TempDir(), "data"))
	tests := []struct {
		name      string
		args      []string
		wantExit  int
		wantLines []string
	}{
		{"gRPC allowed", []string{"--grpc", d.grpc, "--key", d.key, "--path", "/v1/scans"}, 0, []string{
			"request    GET /v1/scans  (gRPC Check at " + d.grpc + ")",
			"  api-key: " + d.key[:12] + "…" + d.key[len(d.key)-4:],
			"decision   ALLOWED (200)  (Check status OK)",
			"  set     x-odin-subject: user_demo",
			"  set     x-odin-scopes: scans:read",
			"  remove  api-key",
			"  ratelimit-limit: 20",
			`metadata   {"auth_method":"api_key",`,
		}},
		{"gRPC no credential", []string{"--grpc", d.grpc, "--path", "/v1/scans"}, 1, []string{
			"decision   DENIED 401 Unauthorized  (Check status Unauthenticated)",
			`  www-authenticate: Bearer realm="odin"`,
			`body       {"error":{"code":"UNAUTHORIZED"`,
		}},
		{"gRPC read-only key writes", []string{"--grpc", d.grpc, "-H", "api-key: " + d.key, "--method", "post", "--path", "/v1/scans"}, 1, []string{
			"decision   DENIED 403 Forbidden  (Check status PermissionDenied)",
			`body       {"error":{"code":"FORBIDDEN","message":"Insufficient permissions: missing scope write (granted by write, <resource>:write, <resource>:* or *); rule \"built-in default\""}`,
		}},
		{"HTTP allowed, spoofed identity removed", []string{"--http", d.forward, "--key", d.key, "--path", "/v1/scans", "-H", "x-odin-org-id: org_evil"}, 0, []string{
			"request    GET /v1/scans  (forward-auth at " + d.forward + ")",
			"  x-odin-org-id: org_evil",
			"decision   ALLOWED (200)",
			"  set     x-odin-subject: user_demo",
			"  remove  x-odin-org-id",
			"  remove  api-key",
		}},
		{"HTTP no credential", []string{"--http", d.forward, "--path", "/v1/scans"}, 1, []string{
			"decision   DENIED 401 Unauthorized",
			"  content-type: application/json",
			`body       {"error":{"code":"UNAUTHORIZED"`,
		}},
		{"HTTP malformed token", []string{"--http", d.forward + "/", "--token", "not.a.jwt", "--method", "POST", "--path", "/v1/scans"}, 1, []string{
			"  authorization: Bearer … (9 characters)",
			"decision   DENIED 401 Unauthorized",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"check"}, tt.args...), &out, &errOut)
			if got := exitCode(err); got != tt.wantExit {
				t.Errorf("exit %d (%v), want %d\n%s", got, err, tt.wantExit, out.String())
			}
			for _, want := range tt.wantLines {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String()+errOut.String(), d.key) {
				t.Errorf("the key is printed in full:\n%s", out.String())
			}
		})
	}
}

// --client-address is Envoy's source.address; without it none is sent.
func TestCheckClientAddress(t *testing.T) {
	for _, tt := range []struct{ flag, want string }{{"203.0.113.7", "203.0.113.7"}, {"::ffff:203.0.113.7", "::ffff:203.0.113.7"}, {"2001:db8::7", "2001:db8::7"}, {"", ""}} {
		args := []string{"--key", "odin_sk_x"}
		if tt.flag != "" {
			args = append(args, "--client-address", tt.flag)
		}
		o, err := parseCheckFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		got := checkRequest(o).GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
		if got != tt.want || (tt.want == "") != (checkRequest(o).GetAttributes().GetSource() == nil) {
			t.Errorf("--client-address %q: source.address %q, want %q", tt.flag, got, tt.want)
		}
	}
}
