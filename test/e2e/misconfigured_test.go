package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// replicaInMode starts one more healthy replica of w, with another
// --forwarded-headers.
func (w *world) replicaInMode(t *testing.T, mode string) replica {
	cfg := w.healthy
	cfg.ForwardedHeaders = mode
	return startReplica(t, cfg, w.logs)
}

// checkMisconfigured: a proxy that does not send what the replica's mode
// expects gets every request refused with 500 INTERNAL and the JSON body,
// none reaching the upstream: never a decision on what else the subrequest
// says.
func checkMisconfigured(t *testing.T, base string, up *echoUpstream, k keys) {
	t.Helper()
	for _, tt := range []struct {
		name, method, path string
		header             http.Header
	}{
		{"POST with a read-only key", "POST", "/v1/scans", http.Header{"Api-Key": {k.readOnly}}},
		{"POST with a read-only key and X-Forwarded-Method: GET", "POST", "/v1/scans", http.Header{"Api-Key": {k.readOnly}, "X-Forwarded-Method": {"GET"}}},
		{"GET with a valid key", "GET", "/v1/scans", http.Header{"Api-Key": {k.valid}}},
		{"a public path", "GET", "/v1/public/x", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			got := send(t, tt.method, base+tt.path, tt.header, "{}")
			checkDenial(t, got, http.StatusInternalServerError, "INTERNAL")
			if n := up.hits.Load() - hits; n != 0 {
				t.Errorf("a request reached the upstream through a misconfigured proxy (%d requests)", n)
			}
		})
	}
}

// TestNGINXMisconfigured runs NGINX configured wrongly for the replica
// behind it. The shipped file in front of a replica left at the default
// mode (none): NGINX asks GET / with X-Original-*, which is refused, not
// decided as GET /. And a file that forgets proxy_set_header
// X-Original-Method and passes the client's headers, in front of a replica
// in mode original: a client's X-Forwarded-Method: GET no longer turns a
// POST with a read-only key into a GET; the missing header is refused.
func TestNGINXMisconfigured(t *testing.T) {
	t.Parallel()
	bin, shipped := shippedNGINX(t)
	w := newWorld(t, shippedMode(t, nginxConf))
	up := startEcho(t)

	t.Run("shipped config, replica in mode none", func(t *testing.T) {
		_, base := startNGINX(t, bin, shipped, w.replicaInMode(t, "none").HTTP, up.Addr)
		checkMisconfigured(t, base, up, w.keys)
	})
	t.Run("X-Original-Method not set, client headers passed", func(t *testing.T) {
		conf := shipped
		for _, r := range []struct{ old, new string }{
			{"proxy_set_header X-Original-Method $request_method;", ""},
			{"proxy_pass_request_headers off;", "proxy_pass_request_headers on;"},
		} {
			if strings.Count(conf, r.old) != 1 {
				t.Fatalf("%s: %q must appear exactly once (the test removes it)", nginxConf, r.old)
			}
			conf = strings.Replace(conf, r.old, r.new, 1)
		}
		_, base := startNGINX(t, bin, conf, w.authz.HTTP, up.Addr)
		checkMisconfigured(t, base, up, w.keys)
	})
}

// TestCaddyMisconfigured runs the shipped Caddyfile in front of a replica
// left at the default mode (none): Caddy asks GET / with X-Forwarded-*,
// which is refused, not decided as GET /.
func TestCaddyMisconfigured(t *testing.T) {
	t.Parallel()
	bin := findCaddy(t)
	w := newWorld(t, shippedMode(t, caddyfile))
	up := startEcho(t)
	_, base := startCaddy(t, bin, w.replicaInMode(t, "none").HTTP, up.Addr)
	checkMisconfigured(t, base, up, w.keys)
}
