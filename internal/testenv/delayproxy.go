package testenv

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DelayProxy is a TCP proxy that makes a server slow for the code under
// test without slowing it for anyone else: every chunk the server sends is
// delivered SetDelay later than it arrived. It is a delay line, not a
// bandwidth limit: chunks keep their order and their delays overlap, so a
// request-response round trip through it takes the delay longer (a query to
// PostgreSQL, one delay per round trip of its protocol). What the client
// sends is forwarded at once.
type DelayProxy struct {
	target string
	l      net.Listener
	delay  atomic.Int64 // nanoseconds

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// NewDelayProxy forwards a free loopback port to target (host:port), with
// no delay until SetDelay. It is closed when the test ends.
func NewDelayProxy(t testing.TB, target string) *DelayProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("delay proxy listen: %v", err)
	}
	p := &DelayProxy{target: target, l: l, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *DelayProxy) Addr() string { return p.l.Addr().String() }

// SetDelay sets how long each chunk from the server is held, from the next
// chunk read on (chunks already held keep the delay they were given).
func (p *DelayProxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Delay is the delay in force.
func (p *DelayProxy) Delay() time.Duration { return time.Duration(p.delay.Load()) }

func (p *DelayProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.forward(up, c, false)
		go p.forward(c, up, true)
	}
}

// chunk is what one read returned, and when it may be written on.
type chunk struct {
	b  []byte
	at time.Time
}

// forward copies src to dst, holding each chunk for the delay when delayed.
// Either side ending ends both.
func (p *DelayProxy) forward(dst, src net.Conn, delayed bool) {
	defer p.drop(dst, src)
	if !delayed {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	held := make(chan chunk, 1024)
	go func() { // the reader stamps each chunk as it arrives
		defer close(held)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				held <- chunk{b: buf[:n], at: time.Now().Add(p.Delay())}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range held {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	p.drop(dst, src)
	for range held { // src is closed: the reader ends
	}
}

func (p *DelayProxy) drop(a, b net.Conn) {
	a.Close()
	b.Close()
	p.mu.Lock()
	delete(p.conns, a)
	delete(p.conns, b)
	p.mu.Unlock()
}

// close stops accepting and cuts every connection.
func (p *DelayProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}
