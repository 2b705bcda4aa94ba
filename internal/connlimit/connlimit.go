// Package connlimit caps the connections a server holds open at once.
//
// golang.org/x/net/netutil.LimitListener does this by no longer calling
// Accept at the cap: the excess then waits, unanswered, in the kernel's
// accept queue, for as long as the connections holding the slots live. For
// an authorization server that is the wrong failure: a proxy (Envoy, NGINX)
// whose new connection hangs waits out its own timeout on every check it
// sends there. Here a connection beyond the cap is accepted and closed at
// once, so the peer sees the refusal immediately and can try another
// replica, while the connections already open keep working.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count open and refused connections per listener name.
type Metrics struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
}

// NewMetrics registers the connection metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "odin_connections_open",
			Help: "Connections open now, by listener.",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_connections_refused_total",
			Help: "Connections closed on accept because the listener was at its connection cap.",
		}, []string{"listener"}),
	}
	reg.MustRegister(m.open, m.refused)
	return m
}

// Listen wraps l so that at most max connections it accepted are open at
// once; one accepted beyond that is closed at once and counted. max <= 0
// means no cap. name labels the metrics (m may be nil).
func Listen(l net.Listener, max int, name string, m *Metrics) net.Listener {
	cl := &listener{Listener: l, max: int64(max)}
	if m != nil {
		cl.open, cl.refused = m.open.WithLabelValues(name), m.refused.WithLabelValues(name)
	}
	return cl
}

type listener struct {
	net.Listener
	max     int64
	n       atomic.Int64
	open    prometheus.Gauge
	refused prometheus.Counter
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.n.Add(1); l.max > 0 && n > l.max {
			l.n.Add(-1)
			// Counted before the close, so that whoever sees the close can
			// see the count.
			if l.refused != nil {
				l.refused.Inc()
			}
			_ = c.Close()
			continue
		}
		if l.open != nil {
			l.open.Inc()
		}
		return &conn{Conn: c, l: l}, nil
	}
}

// conn gives its slot back when it is closed, once however often Close is
// called.
type conn struct {
	net.Conn
	l    *listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.n.Add(-1)
		if c.l.open != nil {
			c.l.open.Dec()
		}
	})
	return err
}
