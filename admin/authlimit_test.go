package admin

import (
	"net/http/httptest"
	"testing"

	"github.com/realclientip/realclientip-go"
)

func TestClientAddress(t *testing.T) {
	trusted, err := newClientAddress([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8:1::/48"})
	if err != nil {
		t.Fatal(err)
	}
	none, err := newClientAddress(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		c      *clientAddress
		remote string
		xff    []string
		want   string
	}{
		{"no proxies: the socket peer", none, "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"untrusted peer: its XFF is ignored", trusted, "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted peer: rightmost entry", trusted, "10.0.0.2:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"client-written entries on the left are ignored", trusted, "10.0.0.2:4000", []string{"1.1.1.1, 203.0.113.9"}, "203.0.113.9"},
		{"trusted hops are skipped", trusted, "10.0.0.2:4000", []string{"1.1.1.1, 203.0.113.9, 192.0.2.7", "10.9.9.9"}, "203.0.113.9"},
		{"repeated headers read in order", trusted, "10.0.0.2:4000", []string{"1.1.1.1", "203.0.113.9"}, "203.0.113.9"},
		{"no header: the proxy", trusted, "10.0.0.2:4000", nil, "10.0.0.2"},
		{"only proxies: the peer", trusted, "10.0.0.2:4000", []string{"10.1.1.1"}, "10.0.0.2"},
		{"malformed rightmost: the peer", trusted, "10.0.0.2:4000", []string{"203.0.113.9, not-an-ip"}, "10.0.0.2"},
		{"IPv6 through an IPv6 proxy", trusted, "[2001:db8:1::5]:4000", []string{"2001:db8:2::9"}, "2001:db8:2::9"},
		{"IPv4-mapped trusted peer", trusted, "[::ffff:10.0.0.2]:4000", []string{"203.0.113.9"}, "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/keys", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.c.of(r); got != tc.want {
				t.Errorf("client of %s with X-Forwarded-For %q = %q, want %q", tc.remote, tc.xff, got, tc.want)
			}
		})
	}
	if _, err := newClientAddress([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad range was accepted")
	}
}

func TestFailedAuthLimiterCountsIPv6Prefixes(t *testing.T) {
	l := newFailedAuthLimiter(1, 2)
	for i, addr := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		throttled, _ := l.failed(addr)
		if want := i == 2; throttled != want {
			t.Fatalf("failure %d from %s: throttled %v, want %v (one /64, burst 2)", i, addr, throttled, want)
		}
	}
	if throttled, _ := l.failed("2001:db8:0:1::1"); throttled {
		t.Error("another /64 shares the budget")
	}
	if throttled, _ := l.failed("192.0.2.1"); throttled {
		t.Error("an IPv4 address shares the budget")
	}
}

// FuzzClientAddress: whatever a client or proxy writes in X-Forwarded-For,
// the throttle gets an address and nothing panics; from an untrusted peer
// the header never matters.
func FuzzClientAddress(f *testing.F) {
	c, err := newClientAddress([]string{"10.0.0.0/8", "::1"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct{ remote, xff string }{
		{"10.0.0.2:1", "203.0.113.9"}, {"10.0.0.2:1", "1.1.1.1, [2001:db8::1]:80, 10.1.1.1"},
		{"[::1]:1", "fe80::1%eth0"}, {"10.0.0.2:1", ",,, ,"}, {"pipe", "203.0.113.9"}, {"198.51.100.1:1", "10.0.0.1"},
	} {
		f.Add(s.remote, s.xff)
	}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := httptest.NewRequest("GET", "/v1/keys", nil)
		r.RemoteAddr = remote
		r.Header["X-Forwarded-For"] = []string{xff}
		got := c.of(r)
		if got == "" && remote != "" {
			t.Fatalf("no address for %q, %q", remote, xff)
		}
		if !c.isTrusted(realclientip.RemoteAddrStrategy{}.ClientIP(nil, remote)) {
			r.Header.Del("X-Forwarded-For")
			if again := c.of(r); again != got {
				t.Fatalf("an untrusted peer's X-Forwarded-For changed its address: %q, then %q", got, again)
			}
		}
	})
}
