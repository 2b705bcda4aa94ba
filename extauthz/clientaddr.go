package extauthz

import (
	"net/http"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/internal/netallow"
)

// ClientSource is where a decision finds the client's address. Only a key
// with a network allowlist asks for it (ClientSource.Addr), so a check of
// any other credential pays nothing to resolve it: the front ends only
// point at what they already hold.
type ClientSource struct {
	envoy   *corev3.Address // gRPC: Envoy's attributes.source.address
	headers Headers         // gRPC: the request's headers, for x-forwarded-for
	http    *http.Request   // forward-auth: the subrequest
	trusted *netallow.Set   // the trusted proxies
}

// EnvoyClient is the client of a CheckRequest whose
// attributes.source.address is source and whose request headers are h.
// Envoy fills source.address with the address of the downstream
// connection's peer (or the one the PROXY protocol reported for it): the
// client when it connects to Envoy itself. use_remote_address and
// xff_num_trusted_hops do not change it. When that peer is one of the
// trusted proxies (a load balancer in front of Envoy), the client is read
// from the request's x-forwarded-for as ClientBehindProxies reads it.
func EnvoyClient(source *corev3.Address, h Headers, trusted *netallow.Set) ClientSource {
	return ClientSource{envoy: source, headers: h, trusted: trusted}
}

// ForwardedClient is the client of a forward-auth subrequest, as
// ClientBehindProxies reads it from r's peer and X-Forwarded-For.
func ForwardedClient(r *http.Request, trusted *netallow.Set) ClientSource {
	return ClientSource{http: r, trusted: trusted}
}

// Addr resolves the client's address; false when it is not known (no
// source, not an IP socket address, an unparsable entry).
func (c ClientSource) Addr() (netip.Addr, bool) {
	switch {
	case c.envoy != nil:
		sa := c.envoy.GetSocketAddress()
		if sa == nil { // a pipe or an internal address: no IP
			return netip.Addr{}, false
		}
		peer, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			return netip.Addr{}, false
		}
		peer = peer.Unmap().WithZone("")
		if !c.trusted.Contains(peer) {
			return peer, true
		}
		var xff string // Envoy joins repeated headers with ","
		if c.headers != nil {
			xff = c.headers.Get("x-forwarded-for")
		}
		return walkForwardedFor([]string{xff}, c.trusted)
	case c.http != nil:
		return ClientBehindProxies(c.http.RemoteAddr, c.http.Header["X-Forwarded-For"], c.trusted)
	}
	return netip.Addr{}, false
}

// ClientBehindProxies is the client of a request that reached this server
// from remoteAddr (http.Request.RemoteAddr, the TCP peer) carrying the
// X-Forwarded-For header lines forwardedFor, when the proxies in trusted
// are believed:
//
//   - a peer that is not a trusted proxy is the client, whatever it sent:
//     a header a client chooses is never believed;
//   - a trusted peer vouches for the entries of X-Forwarded-For (every
//     line, comma-separated), walked from the right: each address in
//     trusted is a proxy that appended the one on its left, and the first
//     address that is not is the client. When every entry is trusted, the
//     leftmost is the client;
//   - a trusted peer that sent no entry reports no client: unknown;
//   - an entry that is not an address, met during the walk, makes the
//     client unknown: nothing left of it can be vouched for.
//
// Empty entries are skipped; an entry may carry a port ("192.0.2.1:443",
// "[2001:db8::1]:443"), which is ignored, and a zone, which is dropped.
// IPv4-mapped IPv6 addresses are read as IPv4. With no trusted proxies
// the peer is the client. false: the client is not known.
//
// It is written here rather than taken from realclientip-go, which odin
// admin's throttle uses (admin/authlimit.go): that walk allocates (it
// splits the header and builds a net.IPAddr per entry, then a string),
// where this one runs on a cached key's check and must not; it reads only
// http.Header, where the gRPC front end holds Envoy's joined headers; and
// it falls back to the peer when no entry is usable, where a key's
// allowlist must fail closed.
func ClientBehindProxies(remoteAddr string, forwardedFor []string, trusted *netallow.Set) (netip.Addr, bool) {
	peer, ok := parseHostPort(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !trusted.Contains(peer) { // nil: no proxy is trusted
		return peer, true
	}
	return walkForwardedFor(forwardedFor, trusted)
}

// walkForwardedFor is the client a trusted peer reports in the
// X-Forwarded-For lines forwardedFor (see ClientBehindProxies).
func walkForwardedFor(forwardedFor []string, trusted *netallow.Set) (netip.Addr, bool) {
	var leftmost netip.Addr
	for i := len(forwardedFor) - 1; i >= 0; i-- {
		line := forwardedFor[i]
		for line != "" {
			entry := line
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				entry, line = line[j+1:], line[:j]
			} else {
				line = ""
			}
			entry = strings.Trim(entry, " \t")
			if entry == "" {
				continue
			}
			a, ok := parseHostPort(entry)
			if !ok {
				return netip.Addr{}, false
			}
			if !trusted.Contains(a) {
				return a, true
			}
			leftmost = a
		}
	}
	return leftmost, leftmost.IsValid()
}

// parseHostPort reads an address with or without a port: "192.0.2.1",
// "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:80",
// unmapped and without its zone.
func parseHostPort(s string) (netip.Addr, bool) {
	host := s
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 || !validPort(s[end+1:]) {
			return netip.Addr{}, false
		}
		host = s[1:end]
		if !strings.Contains(host, ":") { // only IPv6 goes in brackets
			return netip.Addr{}, false
		}
	} else if i := strings.IndexByte(s, ':'); i >= 0 && strings.LastIndexByte(s, ':') == i { // IPv4 with a port
		if !validPort(s[i:]) {
			return netip.Addr{}, false
		}
		host = s[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// validPort reports whether s is empty or ":" and a decimal port.
func validPort(s string) bool {
	if s == "" {
		return true
	}
	if len(s) < 2 || len(s) > 6 || s[0] != ':' {
		return false
	}
	n := 0
	for _, c := range []byte(s[1:]) {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// The reasons a key's network allowlist refuses a check (for logs and
// traces; never the list nor the address).
const (
	reasonNetworkNotAllowed    = "network_not_allowed"
	reasonClientAddressUnknown = "client_address_unknown"
)

// checkNetwork refuses an authenticated key whose network allowlist does
// not contain the client's address, or when that address is not known: a
// list is a restriction, so it fails closed.
func checkNetwork(d *Decision, r *Request, allowed *netallow.Set) {
	addr, ok := r.Client.Addr()
	if !ok {
		d.Outcome, d.Reason, d.Message = DenyForbidden, reasonClientAddressUnknown, denial.MessageClientAddressUnknown
		return
	}
	d.ClientAddr = addr
	if !allowed.Contains(addr) {
		d.Outcome, d.Reason, d.Message = DenyForbidden, reasonNetworkNotAllowed, denial.MessageNetworkNotAllowed
	}
}
