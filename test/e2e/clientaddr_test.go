package e2e

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/denial"
)

// sendFrom is send from a client bound to the loopback address local.
func sendFrom(t *testing.T, local, method, url string, header http.Header) reply {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, DisableCompression: true}}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, local, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// runClientAddressCases: a key restricted to one network, through the
// shipped proxy config in front of an odin authz that trusts the proxy
// (127.0.0.1): allowed from that network, refused from another, and
// refused from another that claims the allowed address in its own
// X-Forwarded-For. In front of an odin authz that trusts no proxy, every
// client is the proxy, which is outside the network.
func runClientAddressCases(t *testing.T, w *world, up *echoUpstream, start func(authz string) string) {
	cfg := w.healthy
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}
	trusting := start(startReplica(t, cfg, w.logs).HTTP)
	untrusting := start(w.authz.HTTP)
	const outsider = "127.0.0.3"
	k := w.keys
	tests := []struct {
		name, base, from string
		header           http.Header
		want             string // "": allowed; else the denial's message
	}{
		{"restricted key from its network", trusting, restrictedFrom, http.Header{"Api-Key": {k.restricted}}, ""},
		{"restricted key from another network", trusting, outsider, http.Header{"Api-Key": {k.restricted}}, denial.MessageNetworkNotAllowed},
		{"restricted key from another network, spoofed X-Forwarded-For", trusting, outsider,
			http.Header{"Api-Key": {k.restricted}, "X-Forwarded-For": {restrictedFrom}}, denial.MessageNetworkNotAllowed},
		{"restricted key from another network, spoofed X-Forwarded-For lines", trusting, outsider,
			http.Header{"Authorization": {"Bearer " + k.restricted}, "X-Forwarded-For": {restrictedFrom, restrictedFrom + ", 127.0.0.1"}}, denial.MessageNetworkNotAllowed},
		{"key without allowlist from another network", trusting, outsider, http.Header{"Api-Key": {k.valid}}, ""},
		{"restricted key, odin authz trusting no proxy", untrusting, restrictedFrom, http.Header{"Api-Key": {k.restricted}}, denial.MessageNetworkNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := up.hits.Load()
			got := sendFrom(t, tt.from, "GET", tt.base+"/v1/scans", tt.header)
			if tt.want == "" {
				if got.status != http.StatusOK || up.hits.Load()-hits != 1 {
					t.Fatalf("status %d, upstream hits %d; want 200 from the upstream; body %s", got.status, up.hits.Load()-hits, got.body)
				}
				return
			}
			checkDenial(t, got, http.StatusForbidden, "FORBIDDEN")
			if !strings.Contains(string(got.body), tt.want) {
				t.Errorf("body %s, want the message %q", got.body, tt.want)
			}
			if n := up.hits.Load() - hits; n != 0 {
				t.Errorf("a denied request reached the upstream (%d requests)", n)
			}
		})
	}
}
