package netallow_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/internal/netallow"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	ps, err := netallow.ParseList(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func TestContains(t *testing.T) {
	s := netallow.New(prefixes(t, "203.0.113.0/24", "10.0.0.0/8", "10.1.0.0/16", "192.0.2.7", "2001:db8::/32", "2001:db8:1::/48", "::1", "fe80::/10"))
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"203.0.113.0", true}, {"203.0.113.255", true}, {"203.0.114.0", false}, {"203.0.112.255", false},
		{"10.255.255.255", true}, {"11.0.0.0", false}, {"192.0.2.7", true}, {"192.0.2.8", false},
		// A dual-stack listener's IPv4 peer is the IPv4 address it maps.
		{"::ffff:203.0.113.9", true}, {"::ffff:192.0.2.8", false}, {"::ffff:10.0.0.1", true},
		{"2001:db8::1", true}, {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"2001:db9::", false}, {"2001:db7:ffff::", false},
		{"::1", true}, {"::2", false}, {"::", false},
		{"fe80::1%eth0", true}, // a zone names an interface, not a network
		// The IPv4 networks say nothing of the IPv6 addresses with the same bits.
		{"::cb00:7109", false}, {"::a00:1", false},
	} {
		if got := s.Contains(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Contains(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if s.Contains(netip.Addr{}) {
		t.Error("the invalid address is in the set")
	}
	if s.Len() != 8 {
		t.Errorf("Len = %d, want 8", s.Len())
	}
}

// The empty set contains nothing, whether nil or built from nothing.
func TestEmpty(t *testing.T) {
	var nilSet *netallow.Set
	for _, s := range []*netallow.Set{nilSet, netallow.New(nil), netallow.New([]netip.Prefix{})} {
		if s != nil || s.Contains(netip.MustParseAddr("127.0.0.1")) || s.Len() != 0 {
			t.Errorf("empty set %v contains 127.0.0.1 or is not nil", s)
		}
	}
}

// The whole of each family, and the mapped forms New is given directly.
func TestWholeFamiliesAndMappedPrefixes(t *testing.T) {
	all4 := netallow.New([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")})
	if !all4.Contains(netip.MustParseAddr("255.255.255.255")) || !all4.Contains(netip.MustParseAddr("::ffff:1.2.3.4")) || all4.Contains(netip.MustParseAddr("::1")) {
		t.Error("0.0.0.0/0 is every IPv4 address and no IPv6 one")
	}
	all6 := netallow.New([]netip.Prefix{netip.MustParsePrefix("::/0")})
	if !all6.Contains(netip.MustParseAddr("ffff::1")) || all6.Contains(netip.MustParseAddr("1.2.3.4")) || all6.Contains(netip.MustParseAddr("::ffff:1.2.3.4")) {
		t.Error("::/0 is every IPv6 address and no IPv4 one (mapped or not)")
	}
	// New, unlike ParseList, takes a mapped prefix as the IPv4 network, and
	// masks host bits.
	m := netallow.New([]netip.Prefix{netip.MustParsePrefix("::ffff:192.0.2.0/120"), netip.PrefixFrom(netip.MustParseAddr("198.51.100.77"), 24)})
	if !m.Contains(netip.MustParseAddr("192.0.2.200")) || m.Contains(netip.MustParseAddr("192.0.3.1")) || !m.Contains(netip.MustParseAddr("198.51.100.1")) {
		t.Error("a mapped prefix is its IPv4 network; host bits are masked")
	}
}

// Contains agrees with netip.Prefix.Contains of the unmapped address, over
// random networks and addresses near them.
func TestContainsAgreesWithNetip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randAddr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			for i := range b {
				b[i] = byte(rng.UintN(4)) // few distinct bytes: many near misses
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{byte(rng.UintN(4)), byte(rng.UintN(4)), byte(rng.UintN(4)), byte(rng.UintN(4))})
	}
	for range 200 {
		var ps []netip.Prefix
		for range rng.IntN(6) + 1 {
			a := randAddr(rng.IntN(2) == 0)
			ps = append(ps, netip.PrefixFrom(a, rng.IntN(a.BitLen()+1)).Masked())
		}
		s := netallow.New(ps)
		for range 200 {
			a := randAddr(rng.IntN(2) == 0)
			want := false
			for _, p := range ps {
				want = want || p.Contains(a)
			}
			if got := s.Contains(a); got != want {
				t.Fatalf("%v contains %s: %v, netip says %v", ps, a, got, want)
			}
			if a.Is4() {
				if got := s.Contains(netip.AddrFrom16(a.As16())); got != want {
					t.Fatalf("%v contains %s mapped: %v, want %v", ps, a, got, want)
				}
			}
		}
	}
}

func TestParseList(t *testing.T) {
	ps, err := netallow.ParseList([]string{" 10.0.0.0/8", "192.0.2.1 ", "2001:db8::/32", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32", "::1/128"}
	for i, p := range ps {
		if p.String() != want[i] {
			t.Errorf("entry %d = %s, want %s", i, p, want[i])
		}
	}
	if ps, err := netallow.ParseList(nil); ps != nil || err != nil {
		t.Errorf("ParseList(nil) = %v, %v", ps, err)
	}
	for _, tt := range []struct{ in, mention string }{
		{"10.0.0.1/8", `"10.0.0.1/8" has bits set after the prefix (did you mean 10.0.0.0/8?)`},
		{"fe80::1%eth0", "zone"},
		{"::ffff:10.0.0.0/104", "IPv4-mapped"},
		{"::ffff:10.0.0.1", "IPv4-mapped"},
		{"10.0.0.0/33", "is not a network in CIDR notation"},
		{"proxy.internal", "is not a network in CIDR notation"},
		{"", "is not a network in CIDR notation"},
	} {
		if _, err := netallow.ParseList([]string{"10.0.0.0/8", tt.in}); err == nil || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("ParseList(%q) = %v, want an error mentioning %q", tt.in, err, tt.mention)
		}
	}
}

func TestContainsAllocatesNothing(t *testing.T) {
	s := netallow.New(prefixes(t, "10.0.0.0/8", "2001:db8::/32"))
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}
	if n := testing.AllocsPerRun(100, func() {
		for _, a := range addrs {
			s.Contains(a)
		}
	}); n != 0 {
		t.Errorf("Contains allocates %v times", n)
	}
}

// BenchmarkContains is a lookup in a set of 100 networks (the most a key
// may have), half of each family, for an address in none of them: the
// longest scan of its family.
func BenchmarkContains(b *testing.B) {
	var ps []netip.Prefix
	for i := range 50 {
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
		ps = append(ps, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i)}), 40))
	}
	s := netallow.New(ps)
	for _, bc := range []struct{ name, addr string }{
		{"IPv4", "192.0.2.1"}, {"IPv4Mapped", "::ffff:192.0.2.1"}, {"IPv6", "2001:db9::1"}, {"IPv4First", "10.0.0.1"},
	} {
		a := netip.MustParseAddr(bc.addr)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Contains(a)
			}
		})
	}
}
