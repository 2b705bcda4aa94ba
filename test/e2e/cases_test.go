package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
)

// front is one proxy product, started three times: in front of the healthy
// replica, of the replica whose store is down, and of an address where no
// odin authz answers.
type front struct {
	allow, outage, unreachable string // base URLs
	upstream                   *echoUpstream
	// unreachableStatus and unreachableCode are what a client gets when odin
	// authz cannot be reached; an empty code means an empty body.
	unreachableStatus int
	unreachableCode   string
	// scrubsUnderscores: the proxy keeps x_odin_* spellings from the upstream.
	scrubsUnderscores bool
	// output returns what the proxy logged, searched for credentials.
	output func() string
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{
	Timeout: 10 * time.Second,
	// One connection per request: nothing idle keeps a proxy from stopping.
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
}

func send(t *testing.T, method, url string, header http.Header, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// spoofed are identity headers a client tries to slip past the proxy.
var spoofed = http.Header{
	"X-Odin-Subject":    {"user_mallory"},
	"X-Odin-Admin":      {"1"},
	"X-Odin-Session-Id": {"sess_spoofed"},
}

func with(h http.Header, more http.Header) http.Header {
	out := h.Clone()
	for k, v := range more {
		out[k] = v
	}
	return out
}

// runCases sends the same requests through any proxy: allowed ones reach the
// upstream with the identity and nothing the client forged, denials get the
// the contract's status and body and never reach the upstream.
func runCases(t *testing.T, w *world, f front) {
	k := w.keys
	t.Run("allowed", func(t *testing.T) {
		spoof := spoofed
		if f.scrubsUnderscores {
			spoof = with(spoofed, http.Header{"X_Odin_Subject": {"user_mallory"}})
		}
		tests := []struct {
			name, method, path, body string
			header                   http.Header
		}{
			{"key in authorization", "GET", "/v1/scans?page=2&sort=-created", "", with(spoof, http.Header{"Authorization": {"Bearer " + k.valid}})},
			{"key in api-key", "POST", "/v1/scans", `{"target":"example.com"}`, with(spoof, http.Header{"Api-Key": {k.valid}})},
			{"both headers, same key", "DELETE", "/v1/scans/scan_1", "", http.Header{"Authorization": {"bearer  " + k.valid}, "Api-Key": {k.valid}}},
		}
		wantIdentity := map[string]string{
			"x-odin-auth-method": "api_key", "x-odin-subject": "user_alice", "x-odin-org-id": "org_acme",
			"x-odin-key-id": k.validID, "x-odin-scopes": "scans:read scans:write", "x-odin-tier": "pro",
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				hits := f.upstream.hits.Load()
				got := send(t, tt.method, f.allow+tt.path, tt.header, tt.body)
				if got.status != http.StatusOK {
					t.Fatalf("status %d, want 200; body %s", got.status, got.body)
				}
				if n := f.upstream.hits.Load() - hits; n != 1 {
					t.Fatalf("upstream got %d requests, want 1", n)
				}
				var e echoed
				if err := json.Unmarshal(got.body, &e); err != nil {
					t.Fatalf("not the upstream's answer: %s", got.body)
				}
				if e.Method != tt.method || e.URI != tt.path || e.Body != tt.body {
					t.Errorf("upstream got %s %s %q, want %s %s %q", e.Method, e.URI, e.Body, tt.method, tt.path, tt.body)
				}
				identity := map[string]string{}
				for name, v := range e.Header {
					if strings.HasPrefix(name, "x-odin") || strings.HasPrefix(name, "x_odin") {
						identity[name] = strings.Join(v, " | ")
					}
				}
				if diff := cmp.Diff(wantIdentity, identity); diff != "" {
					t.Errorf("x-odin-* headers at the upstream (-want, +got):\n%s", diff)
				}
				for _, cred := range []string{"authorization", "api-key"} {
					if v, ok := e.Header[cred]; ok {
						t.Errorf("the upstream received the credential header %s (%d values)", cred, len(v))
					}
				}
				if ids := e.Header["x-request-id"]; len(ids) != 1 || ids[0] == "" {
					t.Errorf("upstream x-request-id = %q, want one id", ids)
				} else if c := got.header.Values("x-request-id"); len(c) > 0 && (len(c) != 1 || c[0] != ids[0]) {
					t.Errorf("client x-request-id %q differs from the upstream's %q", c, ids[0])
				}
			})
		}
	})

	t.Run("denied", func(t *testing.T) {
		tests := []struct {
			name   string
			header http.Header
		}{
			{"missing credential", http.Header{}},
			{"unknown key", http.Header{"Authorization": {"Bearer " + k.unknown}}},
			{"bad checksum", http.Header{"Api-Key": {k.badChecksum}}},
			{"revoked key in authorization", http.Header{"Authorization": {"Bearer " + k.revoked}}},
			{"revoked key in api-key", http.Header{"Api-Key": {k.revoked}}},
			{"not a bearer", http.Header{"Authorization": {"Basic " + k.valid}}},
			{"two different keys", http.Header{"Authorization": {"Bearer " + k.valid}, "Api-Key": {k.unknown}}},
		}
		for _, tt := range tests {
			for _, method := range []string{"GET", "POST"} {
				t.Run(tt.name+"/"+method, func(t *testing.T) {
					hits := f.upstream.hits.Load()
					got := send(t, method, f.allow+"/v1/scans?page=2", with(spoofed, tt.header), `{"target":"example.com"}`)
					checkDenial(t, got, http.StatusUnauthorized, "UNAUTHORIZED")
					if n := f.upstream.hits.Load() - hits; n != 0 {
						t.Errorf("a denied request reached the upstream (%d requests)", n)
					}
				})
			}
		}
	})

	t.Run("forwarded headers from the client", func(t *testing.T) {
		runSpoofCases(t, f.allow, f.upstream, k)
	})

	t.Run("store outage", func(t *testing.T) {
		hits := f.upstream.hits.Load()
		got := send(t, "GET", f.outage+"/v1/scans", http.Header{"Authorization": {"Bearer " + k.valid}}, "")
		checkDenial(t, got, http.StatusServiceUnavailable, "UNAVAILABLE")
		if n := f.upstream.hits.Load() - hits; n != 0 {
			t.Errorf("a request reached the upstream during a store outage (%d requests)", n)
		}
	})

	t.Run("odin authz unreachable", func(t *testing.T) {
		hits := f.upstream.hits.Load()
		got := send(t, "GET", f.unreachable+"/v1/scans", http.Header{"Authorization": {"Bearer " + k.valid}}, "")
		if f.unreachableCode != "" {
			checkDenial(t, got, f.unreachableStatus, f.unreachableCode)
		} else if got.status != f.unreachableStatus || len(got.body) != 0 {
			t.Errorf("got %d %q, want %d with an empty body", got.status, got.body, f.unreachableStatus)
		}
		if n := f.upstream.hits.Load() - hits; n != 0 {
			t.Errorf("a request reached the upstream with odin authz down (%d requests)", n)
		}
	})

	t.Run("no credential in any log", func(t *testing.T) {
		logs := w.logs.String() + f.output()
		for _, secret := range k.all() {
			if strings.Contains(logs, secret) {
				t.Fatal("a plaintext key appears in the odin authz or proxy logs")
			}
		}
	})
}

// checkDenial checks the contract's decisions at the client: the status, JSON content type,
// the body with its code, an RFC 3339 UTC timestamp and the request id the
// response header also carries, and www-authenticate on 401.
func checkDenial(t *testing.T, got reply, status int, code string) {
	t.Helper()
	if got.status != status {
		t.Fatalf("status %d, want %d; body %s", got.status, status, got.body)
	}
	if ct := got.header.Get("content-type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content-type %q, want application/json", ct)
	}
	var b authztest.ErrorBody // the contract's error body; unknown fields are refused
	dec := json.NewDecoder(strings.NewReader(string(got.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("body %q is not the contract's error JSON: %v", got.body, err)
	}
	if b.Error.Code != code || b.Error.Message == "" {
		t.Errorf("error = %+v, want code %s and a message", b.Error, code)
	}
	if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil {
		t.Errorf("timestamp %q is not RFC 3339: %v", b.Timestamp, err)
	} else if _, offset := ts.Zone(); offset != 0 || time.Since(ts) > time.Minute {
		t.Errorf("timestamp %q is not the current UTC time", b.Timestamp)
	}
	if ids := got.header.Values("x-request-id"); b.RequestID == "" || len(ids) != 1 || ids[0] != b.RequestID {
		t.Errorf("requestId %q, x-request-id header %q: want one id, the same", b.RequestID, ids)
	}
	wantAuth := []string(nil)
	if status == http.StatusUnauthorized {
		wantAuth = []string{`Bearer realm="odin"`}
	}
	if diff := cmp.Diff(wantAuth, got.header.Values("www-authenticate")); diff != "" {
		t.Errorf("www-authenticate (-want, +got):\n%s", diff)
	}
	if strings.Contains(string(got.body), "odin_sk_") {
		t.Error("the denial body echoes a key")
	}
}

// forgedOrigin are the headers a client sends to pass for another request:
// a GET of a public path, under every name a forward-auth proxy uses.
var forgedOrigin = http.Header{
	"X-Forwarded-Method": {"GET"}, "X-Original-Method": {"GET"},
	"X-Forwarded-Uri": {"/v1/public/x"}, "X-Original-Uri": {"/v1/public/x"},
}

// runSpoofCases: what a client sends in X-Forwarded-* and X-Original-*
// never changes a decision. A POST with a read-only key stays 403, a path
// stays out of the public rule, whether the headers come once or repeated;
// and the public rule itself works (so the refusals mean something).
func runSpoofCases(t *testing.T, base string, up *echoUpstream, k keys) {
	t.Run("public path, for reference", func(t *testing.T) {
		hits := up.hits.Load()
		if got := send(t, "GET", base+"/v1/public/x", nil, ""); got.status != http.StatusOK || up.hits.Load()-hits != 1 {
			t.Fatalf("GET /v1/public/x: status %d, upstream hits %d; want 200 from the upstream", got.status, up.hits.Load()-hits)
		}
	})
	repeated := http.Header{}
	for name, v := range forgedOrigin {
		repeated[name] = []string{v[0], v[0]}
	}
	tests := []struct {
		name, method, path string
		header             http.Header
		status             int
		code               string
	}{
		{"POST with a read-only key", "POST", "/v1/scans", with(forgedOrigin, http.Header{"Api-Key": {k.readOnly}}), 403, "FORBIDDEN"},
		{"POST with a read-only key, headers repeated", "POST", "/v1/scans", with(repeated, http.Header{"Api-Key": {k.readOnly}}), 403, "FORBIDDEN"},
		{"POST with a read-only key to a public path", "POST", "/v1/public/x", with(forgedOrigin, http.Header{"Api-Key": {k.readOnly}}), 403, "FORBIDDEN"},
		{"no credential", "GET", "/v1/admin", forgedOrigin, 401, "UNAUTHORIZED"},
		{"no credential, headers repeated", "GET", "/v1/admin", repeated, 401, "UNAUTHORIZED"},
		{"no credential, a public URI after a comma", "GET", "/v1/admin", http.Header{"X-Forwarded-Uri": {"/v1/public/x,/v1/admin"}, "X-Original-Uri": {"/v1/public/x,/v1/admin"}}, 401, "UNAUTHORIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			got := send(t, tt.method, base+tt.path, tt.header, "{}")
			checkDenial(t, got, tt.status, tt.code)
			if n := up.hits.Load() - hits; n != 0 {
				t.Errorf("a denied request reached the upstream (%d requests)", n)
			}
		})
	}
}

// runForwardAuthCases runs the cases through a forward-auth proxy (NGINX,
// Caddy): start runs one in front of the odin authz at authz and the
// upstream up, and returns it and its base URL. One is started for the
// working odin, one for the one in an outage, one for a dead address; both
// shipped proxies answer 503 UNAVAILABLE when odin is unreachable and drop
// headers with underscores, and the test's output is all of theirs.
func runForwardAuthCases(t *testing.T, w *world, up *echoUpstream, start func(authz string) (*process, string)) {
	t.Helper()
	var outputs []*process
	startOne := func(authz string) string {
		p, base := start(authz)
		outputs = append(outputs, p)
		return base
	}
	runCases(t, w, front{
		allow:             startOne(w.authz.HTTP),
		outage:            startOne(w.outage.HTTP),
		unreachable:       startOne(w.dead),
		upstream:          up,
		unreachableStatus: 503,
		unreachableCode:   "UNAVAILABLE",
		scrubsUnderscores: true,
		output: func() string {
			var b strings.Builder
			for _, p := range outputs {
				b.WriteString(p.out.String())
			}
			return b.String()
		},
	})
	t.Run("client address", func(t *testing.T) { runClientAddressCases(t, w, up, startOne) })
}
