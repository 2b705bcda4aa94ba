package keystore

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/odin-scan/odin-authz/internal/netallow"
)

// MaxAllowedCIDRs is the most networks a key's allowlist may hold.
const MaxAllowedCIDRs = 100

// ParseCIDRs parses a key's allowlist as the admin API and the CLI take
// it, each entry as netallow.ParsePrefix reads a network: in CIDR
// notation ("203.0.113.0/24", "2001:db8::/32") or a bare address (a /32 or
// a /128). The result is canonical (CanonicalCIDRs), nil for an empty
// list. Errors wrap ErrInvalid and name the entry: "allowed_cidrs[2]: ...".
func ParseCIDRs(ss []string) ([]netip.Prefix, error) {
	if len(ss) > MaxAllowedCIDRs {
		return nil, fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, MaxAllowedCIDRs)
	}
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := netallow.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s %v", ErrInvalid, i, shown(strings.TrimSpace(s)), err)
		}
		ps[i] = p
	}
	return CanonicalCIDRs(ps)
}

// CanonicalCIDRs checks an allowlist, each network as netallow.CheckPrefix
// does, and returns it canonical: IPv4 networks before IPv6 ones, each
// family in address order (then the shorter prefix first), without
// duplicates; nil when empty. More than MaxAllowedCIDRs are refused.
func CanonicalCIDRs(ps []netip.Prefix) ([]netip.Prefix, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	if len(ps) > MaxAllowedCIDRs {
		return nil, fmt.Errorf("%w: allowed_cidrs: at most %d networks", ErrInvalid, MaxAllowedCIDRs)
	}
	for i, p := range ps {
		if err := netallow.CheckPrefix(p); err != nil {
			return nil, fmt.Errorf("%w: allowed_cidrs[%d]: %s %v", ErrInvalid, i, shown(p.String()), err)
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

// shown is how an error names an entry: quoted when it is made only of
// what addresses are written with (hex digits, ".", ":", "/") and short;
// otherwise "the entry", so that a credential pasted into the wrong field
// is never echoed into an answer or a log.
func shown(s string) string {
	if len(s) > 64 || strings.Trim(s, "0123456789abcdefABCDEF.:/") != "" {
		return "the entry"
	}
	return strconv.Quote(s)
}
