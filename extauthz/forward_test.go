package extauthz_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/extauthz/policy"
)

// forwardPolicy makes GET below /v1/public public and everything else need
// a scope: a request with no credential is allowed (200) exactly when it is
// decided as a public GET, so the status says which method and path were
// decided.
const forwardPolicy = `
rules:
  - name: public reads
    methods: [GET]
    prefix: /v1/public
    public: true
default:
  scopes: {all_of: [admin]}
`

// forwardAuth is a forward-auth handler on that policy (no key store: the
// requests carry no credential), logging into logs.
func forwardAuth(t *testing.T, mode, prefix string, logs *bytes.Buffer) http.Handler {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(forwardPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.NewHolder(path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return extauthz.NewForwardAuth(extauthz.NewAuthorizer(extauthz.Options{Policy: pol, Logger: logger}),
		extauthz.ForwardAuthOptions{ForwardedHeaders: mode, PathPrefix: prefix, Logger: logger})
}

// forward sends one subrequest; header values are added in order, so a
// name with two values is a repeated header.
func forward(h http.Handler, method, target string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for name, vs := range header {
		for _, v := range vs {
			req.Header.Add(name, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestForwardAuthModes: in each mode only the headers that mode names
// decide the method and path, each exactly once; a subrequest without them,
// with them repeated, or (in mode none) with forwarded headers at all is
// refused as a misconfiguration: 500 INTERNAL with the JSON body and the
// reason logged at error level, never decided on the request line.
func TestForwardAuthModes(t *testing.T) {
	type hdr = http.Header
	tests := []struct {
		name, mode, prefix, method, target string
		header                             http.Header
		status                             int
		reason                             string // logged for a 500
	}{
		// The default is none: the request line decides, and forwarded
		// headers mean a proxy that expects another mode.
		{"default: the request line", "", "", "GET", "/v1/public/x", nil, 200, ""},
		{"default: a POST is not made a GET by X-Forwarded-Method", "", "", "POST", "/v1/public/x", hdr{"X-Forwarded-Method": {"GET"}}, 500, "forwarded_header_unexpected"},
		{"default: nor by X-Original-Method", "", "", "POST", "/v1/public/x", hdr{"X-Original-Method": {"GET"}}, 500, "forwarded_header_unexpected"},
		{"default: X-Forwarded-Uri does not reach a public rule", "", "", "GET", "/v1/admin", hdr{"X-Forwarded-Uri": {"/v1/public/x"}}, 500, "forwarded_header_unexpected"},
		{"default: nor X-Original-URI", "", "", "GET", "/v1/admin", hdr{"X-Original-Uri": {"/v1/public/x"}}, 500, "forwarded_header_unexpected"},
		{"none: the request line", "none", "", "HEAD", "/v1/public/x?q=1", nil, 401, ""},
		{"none: forwarded headers refused", "none", "", "POST", "/v1/public/x", hdr{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/public/x"}}, 500, "forwarded_header_unexpected"},
		{"auto is not a mode", "auto", "", "GET", "/v1/public/x", nil, 500, "forwarded_mode_unknown"},

		// original: NGINX auth_request.
		{"original: X-Original-*", "original", "", "GET", "/auth", hdr{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/v1/public/x"}}, 200, ""},
		{"original: X-Original-Method POST", "original", "", "GET", "/v1/public/x", hdr{"X-Original-Method": {"POST"}, "X-Original-Uri": {"/v1/public/x"}}, 401, ""},
		{"original: a client's X-Forwarded-* are ignored", "original", "", "GET", "/auth", hdr{"X-Original-Method": {"POST"}, "X-Original-Uri": {"/v1/admin"}, "X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/public/x"}}, 401, ""},
		{"original: no X-Original-Method", "original", "", "GET", "/v1/public/x", hdr{"X-Original-Uri": {"/v1/public/x"}}, 500, "forwarded_header_missing"},
		{"original: no X-Original-URI", "original", "", "GET", "/v1/public/x", hdr{"X-Original-Method": {"GET"}}, 500, "forwarded_header_missing"},
		{"original: an empty X-Original-Method", "original", "", "GET", "/auth", hdr{"X-Original-Method": {""}, "X-Original-Uri": {"/v1/public/x"}}, 500, "forwarded_header_missing"},
		{"original: X-Original-URI twice", "original", "", "GET", "/auth", hdr{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/v1/public/x", "/v1/admin"}}, 500, "forwarded_header_repeated"},
		{"original: X-Original-Method twice", "original", "", "GET", "/auth", hdr{"X-Original-Method": {"GET", "POST"}, "X-Original-Uri": {"/v1/public/x"}}, 500, "forwarded_header_repeated"},

		// forwarded: Caddy forward_auth, Traefik ForwardAuth.
		{"forwarded: X-Forwarded-*", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/public/x"}}, 200, ""},
		{"forwarded: a client's X-Original-* are ignored", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/v1/public/x"}, "X-Original-Method": {"GET"}, "X-Original-Uri": {"/v1/public/x"}}, 401, ""},
		{"forwarded: X-Forwarded-Uri twice is not joined", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/public/x", "/v1/admin"}}, 500, "forwarded_header_repeated"},
		{"forwarded: X-Forwarded-Method twice", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Method": {"GET", "GET"}, "X-Forwarded-Uri": {"/v1/public/x"}}, 500, "forwarded_header_repeated"},
		{"forwarded: no X-Forwarded-Uri", "forwarded", "", "GET", "/v1/public/x", hdr{"X-Forwarded-Method": {"GET"}}, 500, "forwarded_header_missing"},
		{"forwarded: no X-Forwarded-Method", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Uri": {"/v1/public/x"}}, 500, "forwarded_header_missing"},
		{"forwarded: a method that is not a token", "forwarded", "", "GET", "/", hdr{"X-Forwarded-Method": {"GET /v1/public/x HTTP/1.1"}, "X-Forwarded-Uri": {"/v1/admin"}}, 500, "forwarded_method_invalid"},

		// A path prefix (Envoy path_prefix) is removed once, as written.
		{"prefix: removed", "none", "/authz", "GET", "/authz/v1/public/x", nil, 200, ""},
		{"prefix: removed once, not every slash after it", "none", "/authz", "GET", "/authz//v1/public/x", nil, 401, ""},
		{"prefix: with a trailing slash, as Envoy concatenates it", "none", "/authz/", "GET", "/authz//v1/public/x", nil, 200, ""},
		{"prefix: a dot segment after it", "none", "/authz", "GET", "/authz/./v1/public/x", nil, 401, ""},
		{"prefix: an encoded slash after it", "none", "/authz", "GET", "/authz/v1%2Fpublic/x", nil, 401, ""},
		{"prefix: absent", "none", "/authz", "GET", "/v1/public/x", nil, 500, "path_prefix_missing"},
		{"prefix: not a whole segment", "none", "/authz", "GET", "/authzv1/public/x", nil, 500, "path_prefix_missing"},
		{"prefix: forwarded headers still refused", "none", "/authz", "GET", "/authz/v1/admin", hdr{"X-Forwarded-Uri": {"/v1/public/x"}}, 500, "forwarded_header_unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &bytes.Buffer{}
			h := forwardAuth(t, tt.mode, tt.prefix, logs)
			header := tt.header.Clone()
			if header == nil {
				header = http.Header{}
			}
			header.Set("X-Request-Id", "req-fwd-mode")
			rec := forward(h, tt.method, tt.target, header)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status == http.StatusOK {
				return
			}
			var body struct {
				Error     struct{ Code, Message string }
				RequestID string
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.RequestID != "req-fwd-mode" || body.Error.Code == "" {
				t.Fatalf("denial body %s (%v)", rec.Body, err)
			}
			if rec.Header().Get("Content-Type") != "application/json" {
				t.Errorf("content-type %q", rec.Header().Get("Content-Type"))
			}
			if tt.status != http.StatusInternalServerError {
				return
			}
			if body.Error.Code != "INTERNAL" || body.Error.Message != "Authentication service misconfigured" {
				t.Errorf("error %+v, want INTERNAL, Authentication service misconfigured", body.Error)
			}
			if rec.Header().Get("Www-Authenticate") != "" {
				t.Error("a misconfiguration asks the client for credentials (www-authenticate)")
			}
			if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), `"reason":"`+tt.reason+`"`) || !strings.Contains(logs.String(), `"result":"misconfigured"`) {
				t.Errorf("want an error log line with result misconfigured and reason %s, got:\n%s", tt.reason, logs)
			}
		})
	}
}

// TestForwardAuthPrefixCanonical: behind a path prefix, every path is
// decided as the same path without one.
func TestForwardAuthPrefixCanonical(t *testing.T) {
	var logs bytes.Buffer
	bare, prefixed := forwardAuth(t, "none", "", &logs), forwardAuth(t, "none", "/authz", &logs)
	for _, path := range []string{
		"/v1/public/x", "//v1/public/x", "///v1/public/x", "/v1//public/x", "/./v1/public/x", "/../v1/public/x",
		"/v1/public/../admin", "/v1/public/%2e%2e/admin", "/v1/public%2Fx", "/v1/public/x;a=b", "/v1/public/x?q=/v1/admin",
	} {
		want := forward(bare, "GET", path, nil).Code
		if got := forward(prefixed, "GET", "/authz"+path, nil).Code; got != want {
			t.Errorf("/authz%s: %d, but %s without a prefix: %d", path, got, path, want)
		}
	}
}

// TestCheckForwarding: the modes and prefixes a replica accepts at start.
// "auto" is refused with a message naming the modes that replace it.
func TestCheckForwarding(t *testing.T) {
	for _, ok := range []struct{ mode, prefix string }{
		{"", ""}, {"none", ""}, {"none", "/authz"}, {"", "/authz/"}, {"original", ""}, {"forwarded", ""},
	} {
		if err := extauthz.CheckForwarding(ok.mode, ok.prefix); err != nil {
			t.Errorf("CheckForwarding(%q, %q) = %v, want nil", ok.mode, ok.prefix, err)
		}
	}
	for _, bad := range []struct{ mode, prefix, mention string }{
		{"auto", "", "none (Envoy http_service"},
		{"auto", "", "original (NGINX"},
		{"auto", "", "forwarded (Caddy"},
		{"Original", "", "not a mode"},
		{"original", "/authz", "path prefix"},
		{"forwarded", "/authz", "path prefix"},
		{"none", "authz", "starting with /"},
		{"none", "/authz?x=1", "starting with /"},
		{"none", "/au thz", "starting with /"},
	} {
		err := extauthz.CheckForwarding(bad.mode, bad.prefix)
		if err == nil || !strings.Contains(err.Error(), bad.mention) {
			t.Errorf("CheckForwarding(%q, %q) = %v, want an error mentioning %q", bad.mode, bad.prefix, err, bad.mention)
		}
	}
}

// BenchmarkForwardedRequest reads the original request of one subrequest
// per mode, as each proxy sends it.
func BenchmarkForwardedRequest(b *testing.B) {
	for _, bb := range []struct {
		mode, prefix, target string
		header               http.Header
	}{
		{"none", "", "/v1/scans?page=2", nil},
		{"none", "/authz", "/authz/v1/scans?page=2", nil},
		{"original", "", "/auth", http.Header{"X-Original-Method": {"GET"}, "X-Original-Uri": {"/v1/scans?page=2"}}},
		{"forwarded", "", "/", http.Header{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/v1/scans?page=2"}, "X-Forwarded-Host": {"api.odin.test"}}},
	} {
		b.Run(bb.mode+bb.prefix, func(b *testing.B) {
			r := httptest.NewRequest("GET", bb.target, nil)
			for k, v := range bb.header {
				r.Header[k] = v
			}
			b.ReportAllocs()
			for b.Loop() {
				if req := extauthz.ForwardedRequest(r, bb.prefix, bb.mode); req.Misconfigured != "" {
					b.Fatal(req.Misconfigured)
				}
			}
		})
	}
}
