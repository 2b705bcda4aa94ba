// Package netallow holds a set of IP networks in the shape a check reads
// it on every request: built once (per API key with a network allowlist,
// and once for the trusted proxies), then asked whether it contains an
// address without allocating. IPv4 and IPv6 networks are kept apart, so a
// lookup scans only its own family, and an IPv4-mapped IPv6 address
// (::ffff:192.0.2.1, what a dual-stack listener reports for an IPv4 peer)
// is read as the IPv4 address it is.
package netallow

import (
	"errors"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Set is a pre-parsed set of networks. The nil *Set is empty: it contains
// no address. A Set is read-only once built and safe for concurrent use.
type Set struct {
	v4 []v4Net
	v6 []v6Net
	n  int // networks given, for Len
}

// v4Net is an IPv4 network as two words: an address is in it when its
// bits under mask equal addr.
type v4Net struct{ addr, mask uint32 }

// v6Net is an IPv6 network as two halves of 64 bits each.
type v6Net struct{ hi, lo, maskHi, maskLo uint64 }

// New returns the set of the networks ps; nil when ps is empty. Each
// prefix is masked (host bits are ignored); an IPv4-mapped IPv6 prefix
// (::ffff:192.0.2.0/120) is taken as the IPv4 network it maps; invalid
// prefixes are skipped. Networks another one covers are dropped, so a
// lookup never scans the same addresses twice.
func New(ps []netip.Prefix) *Set {
	if len(ps) == 0 {
		return nil
	}
	s := &Set{n: len(ps)}
	var v4, v6 []netip.Prefix
	for _, p := range ps {
		p, ok := normalize(p)
		switch {
		case !ok:
		case p.Addr().Is4():
			v4 = append(v4, p)
		default:
			v6 = append(v6, p)
		}
	}
	for _, p := range uncovered(v4) {
		a := p.Addr().As4()
		mask := prefixMask32(p.Bits())
		s.v4 = append(s.v4, v4Net{addr: binary.BigEndian.Uint32(a[:]) & mask, mask: mask})
	}
	for _, p := range uncovered(v6) {
		a := p.Addr().As16()
		mhi, mlo := prefixMask64(p.Bits()), prefixMask64(p.Bits()-64)
		hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
		s.v6 = append(s.v6, v6Net{hi: hi & mhi, lo: lo & mlo, maskHi: mhi, maskLo: mlo})
	}
	return s
}

// normalize is p masked, unmapped when it is an IPv4-mapped IPv6 prefix of
// at least 96 bits, and without a zone; false when p is not valid.
func normalize(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return p, false
	}
	addr, bits := p.Addr().WithZone(""), p.Bits()
	if addr.Is4In6() {
		if bits < 96 { // wider than the mapped space: keep it as IPv6
			return netip.PrefixFrom(addr, bits).Masked(), true
		}
		addr, bits = addr.Unmap(), bits-96
	}
	return netip.PrefixFrom(addr, bits).Masked(), true
}

// uncovered is ps (one family, masked) sorted, without duplicates and
// without any network that another of ps contains.
func uncovered(ps []netip.Prefix) []netip.Prefix {
	// Sorted by address then by width, a covering network comes before
	// every network it covers.
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Bits() <= p.Bits() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Contains reports whether addr is in one of the set's networks. An
// IPv4-mapped IPv6 address is matched as its IPv4 address, and a zone is
// ignored (it names a local interface, not a network). The invalid
// address is in no set. It allocates nothing.
func (s *Set) Contains(addr netip.Addr) bool {
	if s == nil {
		return false
	}
	addr = addr.Unmap()
	switch {
	case addr.Is4():
		a := addr.As4()
		v := binary.BigEndian.Uint32(a[:])
		for _, n := range s.v4 {
			if v&n.mask == n.addr {
				return true
			}
		}
	case addr.Is6():
		a := addr.As16()
		hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
		for _, n := range s.v6 {
			if hi&n.maskHi == n.hi && lo&n.maskLo == n.lo {
				return true
			}
		}
	}
	return false
}

// Len is the number of networks the set was built from (0 for nil).
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// ParseList reads networks as an operator writes them in a flag (see
// ParsePrefix); each error names its entry, quoted: the list is the
// operator's own configuration. Nil for an empty list.
func ParseList(entries []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, e := range entries {
		p, err := ParsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("%q %w", strings.TrimSpace(e), err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// ParsePrefix reads one network as odin takes them everywhere (a key's
// allowlist, the trusted proxies): in CIDR notation ("10.0.0.0/8",
// "2001:db8::/32") or a bare address (a /32 or a /128), spaces around it
// ignored, and then as CheckPrefix asks. Its error says what is wrong
// ("is not a network…"), for the caller to put after the entry as it
// names it.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, errNotNetwork
		}
		return p, CheckPrefix(p)
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Prefix{}, errNotNetwork
	case a.Zone() != "": // PrefixFrom would drop it
		return netip.Prefix{}, errZone
	}
	p := netip.PrefixFrom(a, a.BitLen())
	return p, CheckPrefix(p)
}

// CheckPrefix refuses a network that does not mean what it reads as: not
// valid, with a zone, IPv4-mapped (clients are matched by their IPv4
// address, whichever way they connect), or with host bits set
// (10.1.2.3/8 is refused rather than read as 10.0.0.0/8, which may not be
// what was meant). Its error is worded as ParsePrefix's.
func CheckPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errNotNetwork
	case p.Addr().Zone() != "":
		return errZone
	case p.Addr().Is4In6():
		return errors.New("is IPv4-mapped: write the IPv4 network")
	case p != p.Masked():
		return fmt.Errorf("has bits set after the prefix (did you mean %s?)", p.Masked())
	}
	return nil
}

var (
	errNotNetwork = errors.New("is not a network in CIDR notation (like 203.0.113.0/24 or 2001:db8::/32) nor an address")
	errZone       = errors.New("has a zone: write the address without it")
)

// prefixMask32 is the IPv4 mask of a prefix of bits bits.
func prefixMask32(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// prefixMask64 is the mask of the first bits bits of a 64-bit half (all of
// it from 64 up).
func prefixMask64(bits int) uint64 {
	switch {
	case bits <= 0:
		return 0
	case bits >= 64:
		return ^uint64(0)
	}
	return ^uint64(0) << (64 - bits)
}
