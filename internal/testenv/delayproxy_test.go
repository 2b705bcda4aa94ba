package testenv

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

// echoServer answers every line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	Echo(l)
	return l.Addr().String()
}

func TestDelayProxy(t *testing.T) {
	const delay = 300 * time.Millisecond
	p := NewDelayProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := fmt.Fprintln(c, msg); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
		return time.Since(start)
	}
	if d := roundTrip("undelayed"); d >= delay {
		t.Errorf("round trip without a delay took %v", d)
	}

	p.SetDelay(delay)
	if d := roundTrip("delayed"); d < delay {
		t.Errorf("round trip with a %v delay took %v", delay, d)
	}
	// Ten lines sent at once come back in order, about one delay later in
	// all: the delays overlap (a delay line, not one delay per chunk in turn).
	start := time.Now()
	for i := range 10 {
		if _, err := fmt.Fprintf(c, "line %d\n", i); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // separate chunks
	}
	for i := range 10 {
		got, err := r.ReadString('\n')
		if err != nil || got != fmt.Sprintf("line %d\n", i) {
			t.Fatalf("line %d: %q, %v", i, got, err)
		}
	}
	if d := time.Since(start); d < delay || d > 5*delay {
		t.Errorf("ten pipelined lines took %v with a %v delay: want about one delay", d, delay)
	}

	p.SetDelay(0)
	if d := roundTrip("undelayed again"); d >= delay {
		t.Errorf("round trip after the delay was removed took %v", d)
	}
}
