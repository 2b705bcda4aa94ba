package admin

import (
	"net"
	"net/http"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// failedAuthLimiter slows down credential guessing: each client address may
// fail authentication a few times a minute (with a small burst); past that
// its requests are answered 429 before any credential is looked at. Only
// failures spend the budget, so a caller with a good credential is never
// limited by it. Addresses are tracked in a bounded LRU.
type failedAuthLimiter struct {
	every time.Duration
	burst int
	ips   *lru.Cache[string, *rate.Limiter]
}

func newFailedAuthLimiter(perMinute, burst int) *failedAuthLimiter {
	ips, _ := lru.New[string, *rate.Limiter](65536)
	return &failedAuthLimiter{every: time.Minute / time.Duration(perMinute), burst: burst, ips: ips}
}

func (l *failedAuthLimiter) limiter(r *http.Request) *rate.Limiter {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	if lim, ok := l.ips.Get(ip); ok {
		return lim
	}
	lim := rate.NewLimiter(rate.Every(l.every), l.burst)
	l.ips.Add(ip, lim)
	return lim
}

// blocked reports whether the client has spent its failure budget, and how
// long until it may try again.
func (l *failedAuthLimiter) blocked(r *http.Request) (bool, time.Duration) {
	lim := l.limiter(r)
	if lim.Tokens() >= 1 {
		return false, 0
	}
	return true, max(time.Second, time.Duration((1-lim.Tokens())*float64(l.every)))
}

// failed spends one unit of the client's budget.
func (l *failedAuthLimiter) failed(r *http.Request) { l.limiter(r).Allow() }
