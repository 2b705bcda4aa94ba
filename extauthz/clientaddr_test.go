package extauthz_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/internal/netallow"
)

// The forward-auth client is the peer, or what the trusted proxies in front
// of it report, walked from the right; never what a client chose.
func TestClientBehindProxies(t *testing.T) {
	ps, err := netallow.ParseList([]string{"10.0.0.0/8", "fd00::/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	trusted := netallow.New(ps)
	const unknown = "unknown"
	tests := []struct {
		name    string
		peer    string
		xff     []string
		trusted *netallow.Set // nil: the test's trusted set
		none    bool          // no trusted proxies configured
		want    string
	}{
		{name: "no trusted proxies: the peer", peer: "203.0.113.7:51234", xff: []string{"198.51.100.1"}, none: true, want: "203.0.113.7"},
		{name: "no trusted proxies, IPv6 peer", peer: "[2001:db8::7]:443", none: true, want: "2001:db8::7"},
		{name: "no trusted proxies, mapped peer", peer: "[::ffff:203.0.113.7]:443", none: true, want: "203.0.113.7"},
		{name: "untrusted peer: its XFF is ignored", peer: "203.0.113.7:1", xff: []string{"10.1.1.1, 198.51.100.1"}, want: "203.0.113.7"},
		{name: "untrusted peer, spoofed allowed address", peer: "198.51.100.9:1", xff: []string{"192.0.2.1"}, want: "198.51.100.9"},
		{name: "untrusted peer, garbage XFF", peer: "198.51.100.9:1", xff: []string{"not an address"}, want: "198.51.100.9"},
		{name: "trusted peer, one hop", peer: "10.0.0.2:3456", xff: []string{"203.0.113.7"}, want: "203.0.113.7"},
		{name: "trusted peer, client's own XFF left of it", peer: "10.0.0.2:3456", xff: []string{"192.0.2.1, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "trusted peer, trusted hops skipped", peer: "10.0.0.2:1", xff: []string{"192.0.2.66, 203.0.113.7, 10.9.9.9, 10.0.0.3"}, want: "203.0.113.7"},
		{name: "many lines, walked from the last", peer: "10.0.0.2:1", xff: []string{"192.0.2.66", "203.0.113.7", "10.9.9.9,10.0.0.3"}, want: "203.0.113.7"},
		{name: "IPv6 hops", peer: "[fd00::2]:1", xff: []string{"2001:db8::1, fd12::9"}, want: "2001:db8::1"},
		{name: "mixed families", peer: "[::ffff:10.0.0.2]:1", xff: []string{"2001:db8::1, fd00::3, 10.0.0.4, ::ffff:127.0.0.1"}, want: "2001:db8::1"},
		{name: "mapped client", peer: "10.0.0.2:1", xff: []string{"::ffff:203.0.113.7"}, want: "203.0.113.7"},
		{name: "ports in entries", peer: "10.0.0.2:1", xff: []string{"[2001:db8::1]:443, 203.0.113.7:5000, 10.0.0.4:80"}, want: "203.0.113.7"},
		{name: "bracketed IPv6 without port", peer: "10.0.0.2:1", xff: []string{"[2001:db8::1]"}, want: "2001:db8::1"},
		{name: "spaces and tabs", peer: "10.0.0.2:1", xff: []string{" \t203.0.113.7 \t,  10.0.0.3  "}, want: "203.0.113.7"},
		{name: "empty entries skipped", peer: "10.0.0.2:1", xff: []string{"203.0.113.7,, ,10.0.0.3,", ""}, want: "203.0.113.7"},
		{name: "all trusted: the leftmost", peer: "10.0.0.2:1", xff: []string{"10.0.0.5, 10.0.0.4", "10.0.0.3"}, want: "10.0.0.5"},
		{name: "all trusted, IPv6", peer: "[fd00::1]:1", xff: []string{"fd00::5,fd00::4"}, want: "fd00::5"},
		{name: "trusted peer without XFF", peer: "10.0.0.2:1", want: unknown},
		{name: "trusted peer with empty XFF", peer: "10.0.0.2:1", xff: []string{"", " , "}, want: unknown},
		{name: "loopback proxy without XFF", peer: "127.0.0.1:1", want: unknown},
		{name: "garbage in the walk", peer: "10.0.0.2:1", xff: []string{"203.0.113.7, unknown"}, want: unknown},
		{name: "garbage past trusted hops", peer: "10.0.0.2:1", xff: []string{"203.0.113.7, _hidden, 10.0.0.3"}, want: unknown},
		{name: "garbage left of the client is never read", peer: "10.0.0.2:1", xff: []string{"<script>, 203.0.113.7"}, want: "203.0.113.7"},
		{name: "a hostname", peer: "10.0.0.2:1", xff: []string{"client.example"}, want: unknown},
		{name: "a CIDR", peer: "10.0.0.2:1", xff: []string{"203.0.113.0/24"}, want: unknown},
		{name: "a bad port", peer: "10.0.0.2:1", xff: []string{"203.0.113.7:99999"}, want: unknown},
		{name: "IPv4 in brackets", peer: "10.0.0.2:1", xff: []string{"[203.0.113.7]"}, want: unknown},
		{name: "unclosed bracket", peer: "10.0.0.2:1", xff: []string{"[2001:db8::1"}, want: unknown},
		{name: "zone dropped", peer: "10.0.0.2:1", xff: []string{"fe80::1%eth0"}, want: "fe80::1"},
		{name: "RFC 7239 syntax is not XFF", peer: "10.0.0.2:1", xff: []string{"for=203.0.113.7"}, want: unknown},
		{name: "peer without port", peer: "203.0.113.7", none: true, want: "203.0.113.7"},
		{name: "unparsable peer", peer: "@", none: true, want: unknown},
		{name: "empty peer", peer: "", want: unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set := trusted
			if tt.none {
				set = nil
			}
			a, ok := extauthz.ClientBehindProxies(tt.peer, tt.xff, set)
			got := unknown
			if ok {
				got = a.String()
			}
			if got != tt.want {
				t.Errorf("client of %s with X-Forwarded-For %q = %s, want %s", tt.peer, tt.xff, got, tt.want)
			}
			if ok && a.Is4In6() {
				t.Errorf("client %s is not unmapped", a)
			}
		})
	}
}

// A thousand hops are walked, and the walk allocates nothing.
func TestClientBehindProxiesManyHops(t *testing.T) {
	trusted := netallow.New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	hops := make([]string, 1000)
	for i := range hops {
		hops[i] = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1}).String()
	}
	xff := []string{"203.0.113.7, " + strings.Join(hops, ", ")}
	var got netip.Addr
	if n := testing.AllocsPerRun(10, func() { got, _ = extauthz.ClientBehindProxies("10.0.0.1:80", xff, trusted) }); n != 0 {
		t.Errorf("the walk allocates %v times", n)
	}
	if got.String() != "203.0.113.7" {
		t.Errorf("client %s, want 203.0.113.7", got)
	}
}

// Envoy's source.address is the gRPC client: an IP socket address, or
// unknown; when it is a trusted proxy, the x-forwarded-for it reports.
func TestEnvoyClient(t *testing.T) {
	sock := func(a string) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: a}}}
	}
	for _, tt := range []struct {
		name string
		src  *corev3.Address
		want string
	}{
		{"IPv4", sock("203.0.113.7"), "203.0.113.7"},
		{"IPv6", sock("2001:db8::7"), "2001:db8::7"},
		{"IPv4-mapped", sock("::ffff:203.0.113.7"), "203.0.113.7"},
		{"missing", nil, "unknown"},
		{"empty", &corev3.Address{}, "unknown"},
		{"pipe", &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}}, "unknown"},
		{"hostname", sock("envoy.internal"), "unknown"},
		{"with port", sock("203.0.113.7:80"), "unknown"},
	} {
		a, ok := extauthz.EnvoyClient(tt.src, extauthz.MapHeaders{"x-forwarded-for": "192.0.2.1"}, nil).Addr()
		got := "unknown"
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("%s: client %s, want %s", tt.name, got, tt.want)
		}
	}
	// Behind a trusted load balancer, its x-forwarded-for tells the client.
	trusted := netallow.New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	for _, tt := range []struct {
		name, source, xff, want string
	}{
		{"untrusted source: x-forwarded-for ignored", "203.0.113.7", "192.0.2.1", "203.0.113.7"},
		{"trusted source", "10.0.0.2", "192.0.2.1", "192.0.2.1"},
		{"trusted source, Envoy appended it", "10.0.0.2", "198.51.100.1, 192.0.2.1, 10.0.0.2", "192.0.2.1"},
		{"trusted mapped source", "::ffff:10.0.0.2", "192.0.2.1", "192.0.2.1"},
		{"trusted source without x-forwarded-for", "10.0.0.2", "", "unknown"},
		{"trusted source, garbage", "10.0.0.2", "192.0.2.1, nonsense", "unknown"},
	} {
		h := extauthz.MapHeaders{}
		if tt.xff != "" {
			h["x-forwarded-for"] = tt.xff
		}
		a, ok := extauthz.EnvoyClient(sock(tt.source), h, trusted).Addr()
		got := "unknown"
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("%s: client %s, want %s", tt.name, got, tt.want)
		}
	}
	if _, ok := (extauthz.ClientSource{}).Addr(); ok {
		t.Error("the zero ClientSource knows a client")
	}
}

// BenchmarkClientAddr is what a check of a key with an allowlist adds: the
// client address read (Envoy's source.address, or a forward-auth peer behind
// two trusted hops) and matched against four networks.
func BenchmarkClientAddr(b *testing.B) {
	nets := netallow.New([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("203.0.113.0/24")})
	trusted := netallow.New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	sock := &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "::ffff:203.0.113.7"}}}
	for _, bc := range []struct {
		name string
		src  func() extauthz.ClientSource
	}{
		{"Envoy", func() extauthz.ClientSource { return extauthz.EnvoyClient(sock, nil, nil) }},
		{"ForwardAuth", func() extauthz.ClientSource {
			r, _ := http.NewRequest("GET", "/", nil)
			r.RemoteAddr = "10.0.0.2:40000"
			r.Header["X-Forwarded-For"] = []string{"192.0.2.99, 203.0.113.7, 10.1.1.1"}
			return extauthz.ForwardedClient(r, trusted)
		}},
	} {
		src := bc.src()
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if a, ok := src.Addr(); !ok || !nets.Contains(a) {
					b.Fatal("not allowed")
				}
			}
		})
	}
}
