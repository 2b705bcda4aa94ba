package connlimit

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// closedByServer reports whether the server closed c (EOF or reset)
// within wait; a read that times out means the connection is still open.
func closedByServer(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	if err == nil {
		t.Fatal("the server sent data")
	}
	return true
}

func TestListenClosesConnectionsPastTheCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	l := Listen(raw, 2, "test", m)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, as a slow client's would be
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(), dial()
	held := []net.Conn{<-accepted, <-accepted}
	if closedByServer(t, a, 50*time.Millisecond) || closedByServer(t, b, 50*time.Millisecond) {
		t.Fatal("a connection under the cap was closed")
	}
	if c := dial(); !closedByServer(t, c, time.Second) {
		t.Fatal("a third connection over a cap of 2 was left open")
	}
	if got := value(t, m.refused.WithLabelValues("test")); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}
	if got := value(t, m.open.WithLabelValues("test")); got != 2 {
		t.Errorf("open = %v, want 2", got)
	}
	// Closing one (twice: the slot is given back once) makes room for one.
	held[0].Close()
	held[0].Close()
	d := dial()
	<-accepted
	if closedByServer(t, d, 50*time.Millisecond) {
		t.Fatal("a connection after a slot was freed was closed")
	}
	if e := dial(); !closedByServer(t, e, time.Second) {
		t.Fatal("the freed slot was given back twice")
	}
}

func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
