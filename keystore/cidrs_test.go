package keystore_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/keystore"
)

func TestParseCIDRs(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{}, nil},
		{[]string{"203.0.113.0/24"}, []string{"203.0.113.0/24"}},
		{[]string{" 2001:db8::/32 ", "10.0.0.0/8"}, []string{"10.0.0.0/8", "2001:db8::/32"}},
		{[]string{"198.51.100.7", "2001:db8::1"}, []string{"198.51.100.7/32", "2001:db8::1/128"}},
		{[]string{"10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/16", "::/0"}},
	} {
		got, err := keystore.ParseCIDRs(c.in)
		if err != nil || !slices.Equal(keystore.CIDRStrings(got), c.want) {
			t.Errorf("ParseCIDRs(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	many := make([]string, keystore.MaxAllowedCIDRs+1)
	for i := range many {
		many[i] = "10.0.0.1"
	}
	// A credential pasted into the list is never echoed.
	secret := "odin_sk_3vJ9Qw8ZcT2mK5pL7nR4xY6aB1dF0gH8jS2uV9wE4qZ7cX"
	if _, err := keystore.ParseCIDRs([]string{secret}); err == nil || strings.Contains(err.Error(), "odin_sk_") {
		t.Errorf("a key in the list: %v", err)
	}
	for _, c := range []struct {
		in   []string
		want string
	}{
		{[]string{"10.0.0.0/8", "10.1.2.3/8"}, `allowed_cidrs[1]: "10.1.2.3/8" has bits set after the prefix (did you mean 10.0.0.0/8?)`},
		{[]string{"example.com"}, `allowed_cidrs[0]: the entry is not a network in CIDR notation`},
		{[]string{""}, `allowed_cidrs[0]: "" is not a network`},
		{[]string{"10.0.0.0/33"}, `allowed_cidrs[0]: "10.0.0.0/33" is not a network`},
		{[]string{"fe80::1%eth0"}, `allowed_cidrs[0]: the entry has a zone`},
		{[]string{"::ffff:10.0.0.0/104"}, `allowed_cidrs[0]: "::ffff:10.0.0.0/104" is IPv4-mapped: write the IPv4 network`},
		{[]string{strings.Repeat("9", 500)}, `allowed_cidrs[0]: the entry is not a network`},
		{many, "allowed_cidrs: at most 100 networks"},
	} {
		_, err := keystore.ParseCIDRs(c.in)
		if !errors.Is(err, keystore.ErrInvalid) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "999999999") {
			t.Errorf("ParseCIDRs(%.40q): %v; want ErrInvalid with %q", c.in, err, c.want)
		}
	}
}

func TestCoversCIDRs(t *testing.T) {
	nets := func(s string) []netip.Prefix {
		p, err := keystore.ParseCIDRs(strings.Fields(s))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		before, after string
		want          bool
	}{
		{"", "", true},
		{"", "10.0.0.0/8", true},
		{"10.0.0.0/8", "", false}, // removing it allows every network
		{"10.0.0.0/8", "10.0.0.0/8", true},
		{"10.0.0.0/8", "10.1.0.0/16 10.2.3.4", true},
		{"10.1.0.0/16", "10.0.0.0/8", false},
		{"10.0.0.0/8", "10.0.0.0/8 192.0.2.0/24", false},
		{"10.0.0.0/8 2001:db8::/32", "2001:db8:1::/48", true},
		{"0.0.0.0/0", "::/0", false}, // families apart
		{"::/0", "2001:db8::/32", true},
	} {
		if got := keystore.CoversCIDRs(nets(c.before), nets(c.after)); got != c.want {
			t.Errorf("CoversCIDRs(%q, %q) = %v, want %v", c.before, c.after, got, c.want)
		}
	}
}
