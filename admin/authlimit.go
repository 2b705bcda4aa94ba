package admin

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/realclientip/realclientip-go"
	"golang.org/x/time/rate"
)

// failedAuthLimiter slows down credential guessing: each client address may
// fail authentication a few times a minute (with a small burst); past that
// its further failures are answered 429 instead of 401. Only failures spend
// the budget and only failures are refused: a valid credential is always
// checked and served, so neither a neighbour behind the same address nor an
// attacker holding a leaked key can lock the operator out (of revoking that
// key, say). Serving a right credential from a throttled address tells the
// client nothing it did not know: it holds the credential. Addresses are
// tracked in a bounded LRU.
type failedAuthLimiter struct {
	every time.Duration
	burst int
	ips   *lru.Cache[string, *rate.Limiter]
}

func newFailedAuthLimiter(perMinute, burst int) *failedAuthLimiter {
	ips, _ := lru.New[string, *rate.Limiter](65536)
	return &failedAuthLimiter{every: time.Minute / time.Duration(perMinute), burst: burst, ips: ips}
}

func (l *failedAuthLimiter) limiter(addr string) *rate.Limiter {
	// One IPv6 client usually holds a whole /64: counting its addresses
	// one by one would give it 2^64 budgets.
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() && !ip.Is4In6() {
		p, _ := ip.WithZone("").Prefix(64)
		addr = p.String()
	}
	if lim, ok := l.ips.Get(addr); ok {
		return lim
	}
	lim := rate.NewLimiter(rate.Every(l.every), l.burst)
	l.ips.Add(addr, lim)
	return lim
}

// failed records a failed authentication from addr. It reports whether the
// address had already spent its budget (the failure is then answered 429,
// and costs nothing more), and how long until it may fail again.
func (l *failedAuthLimiter) failed(addr string) (throttled bool, retry time.Duration) {
	lim := l.limiter(addr)
	now := time.Now()
	if lim.AllowN(now, 1) {
		return false, 0
	}
	return true, max(time.Second, time.Duration((1-lim.TokensAt(now))*float64(l.every)))
}

// clientAddress finds the address a request comes from, for the throttle.
// Behind trusted proxies (load balancers, ingress) every request arrives
// from a proxy's address, which would make all clients one; so when the
// socket peer is a trusted proxy, the client is the rightmost
// X-Forwarded-For entry that is not itself a trusted proxy: the address the
// first trusted proxy saw. Entries to its left were written by the client
// and are never believed. From any other peer X-Forwarded-For is ignored.
type clientAddress struct {
	trusted []net.IPNet
	xff     realclientip.RightmostTrustedRangeStrategy
}

// newClientAddress parses the trusted proxies: addresses or CIDR ranges.
func newClientAddress(trustedProxies []string) (*clientAddress, error) {
	nets, err := realclientip.AddressesAndRangesToIPNets(trustedProxies...)
	if err != nil {
		return nil, fmt.Errorf("admin: trusted proxies: %w", err)
	}
	xff, err := realclientip.NewRightmostTrustedRangeStrategy("X-Forwarded-For", nets)
	if err != nil {
		return nil, fmt.Errorf("admin: trusted proxies: %w", err)
	}
	return &clientAddress{trusted: nets, xff: xff}, nil
}

// of returns the client address of r: an IP address, or the raw remote
// address when it is not one (a test's pipe). A trusted peer whose
// X-Forwarded-For names no untrusted address (missing, malformed, or only
// proxies) is its own client.
func (c *clientAddress) of(r *http.Request) string {
	peer := realclientip.RemoteAddrStrategy{}.ClientIP(nil, r.RemoteAddr)
	if peer == "" {
		return r.RemoteAddr
	}
	if len(c.trusted) == 0 || !c.isTrusted(peer) {
		return peer
	}
	if ip := c.xff.ClientIP(r.Header, r.RemoteAddr); ip != "" {
		return ip
	}
	return peer
}

func (c *clientAddress) isTrusted(addr string) bool {
	ip, err := realclientip.ParseIPAddr(addr)
	if err != nil {
		return false
	}
	for _, n := range c.trusted {
		if n.Contains(ip.IP) {
			return true
		}
	}
	return false
}
