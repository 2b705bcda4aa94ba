package keystore

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxAllowedCIDRs is the most networks a key's allowlist may hold.
const MaxAllowedCIDRs = 100

// ParseCIDRs parses a key's allowlist as the admin API and the CLI take
// it: networks in CIDR notation ("203.0.113.0/24", "2001:db8::/32") or
// bare addresses (a /32 or a /128). The result is canonical
// (CanonicalCIDRs), nil for an empty list. Errors wrap ErrInvalid and
// name the entry: "allowed_cidrs[2]: ...".
func ParseCIDRs(ss []string) ([]netip.Prefix, error) {
	if len(ss) > MaxAllowedCIDRs {
		return nil, fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, MaxAllowedCIDRs)
	}
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		s = strings.TrimSpace(s)
		var err error
		if strings.Contains(s, "/") {
			ps[i], err = netip.ParsePrefix(s)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(s); err == nil && a.Zone() != "" {
				err = errors.New("zone") // PrefixFrom would drop it
			} else if err == nil {
				ps[i] = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s is not a network in CIDR notation (like 203.0.113.0/24 or 2001:db8::/32) nor an address", ErrInvalid, i, quoteShort(s))
		}
	}
	return CanonicalCIDRs(ps)
}

// CanonicalCIDRs checks an allowlist and returns it canonical: IPv4
// networks before IPv6 ones, each family in address order (then the
// shorter prefix first), without duplicates; nil when empty. Refused,
// naming the entry: an invalid prefix, one with host bits set (10.1.2.3/8
// is refused rather than read as 10.0.0.0/8, which may not be what was
// meant), an IPv4-mapped IPv6 one (write the IPv4 network: clients are
// matched by their IPv4 address), and more than MaxAllowedCIDRs.
func CanonicalCIDRs(ps []netip.Prefix) ([]netip.Prefix, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	if len(ps) > MaxAllowedCIDRs {
		return nil, fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, MaxAllowedCIDRs)
	}
	for i, p := range ps {
		switch {
		case !p.IsValid():
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: not a network", ErrInvalid, i)
		case p.Addr().Zone() != "":
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s has a zone", ErrInvalid, i, p)
		case p.Addr().Is4In6():
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s is IPv4-mapped: write the IPv4 network", ErrInvalid, i, p)
		case p != p.Masked():
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s has bits set after the prefix (did you mean %s?)", ErrInvalid, i, p, p.Masked())
		}
	}
	out := slices.Clone(ps)
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out), nil
}

// comparePrefixes orders IPv4 before IPv6, then by address, then the
// shorter prefix first.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c // netip orders IPv4 before IPv6
	}
	return a.Bits() - b.Bits()
}

// CIDRStrings formats an allowlist for display; nil for none.
func CIDRStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// CoversCIDRs reports whether an allowlist changed from before to after
// allows no address before did not: a narrowing, or no change. An empty
// list allows every address, so anything is covered by an empty before,
// and an empty after only by an empty before.
func CoversCIDRs(before, after []netip.Prefix) bool {
	if len(before) == 0 {
		return true
	}
	if len(after) == 0 {
		return false
	}
	for _, p := range after {
		if !slices.ContainsFunc(before, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }) {
			return false
		}
	}
	return true
}

// cidrsOrNil is an allowlist as an event shows it: its networks, or null
// for any network.
func cidrsOrNil(ps []netip.Prefix) any {
	if len(ps) == 0 {
		return nil
	}
	return CIDRStrings(ps)
}

// quoteShort quotes s for an error message, cut to 64 bytes: what a
// caller sent is named, not echoed whole.
func quoteShort(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q…", s[:64])
	}
	return fmt.Sprintf("%q", s)
}
