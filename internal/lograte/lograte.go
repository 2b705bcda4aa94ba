// Package lograte keeps an outage's log lines to one per interval, so it is
// reported without a line per request.
package lograte

import (
	"sync/atomic"
	"time"
)

// Limiter lets one log line through per Every. Its zero Every lets every
// line through; it is safe for concurrent use.
type Limiter struct {
	Every time.Duration
	next  atomic.Int64
}

// Allow reports whether a line may be logged now, and if so holds back the
// next ones until Every has passed.
func (l *Limiter) Allow() bool {
	now := time.Now().UnixNano()
	next := l.next.Load()
	return now >= next && l.next.CompareAndSwap(next, now+int64(l.Every))
}
