package authzsvc_test

import (
	"errors"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
)

// closedWithin reports whether the server closed c within wait (a read
// ends in EOF or a reset); a read that times out means it is still open.
// Whatever the server sends first (its HTTP/2 settings) is read past.
func closedWithin(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
		if err != nil {
			return true
		}
	}
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// A gRPC connection that never sends the HTTP/2 preface is closed after the
// handshake timeout (grpc-go's default would hold it 120 s).
func TestSilentGRPCConnectionIsClosed(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.Connections.GRPCHandshakeTimeout = 300 * time.Millisecond
	r := authztest.StartReplica(t, cfg)
	start := time.Now()
	c := dialRaw(t, r.Conn.Target())
	if !closedWithin(t, c, 5*time.Second) {
		t.Fatal("a connection that sent nothing was still open after 5s")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("closed after %s, want about 300ms", d)
	}
	// A real client is not affected.
	if resp := r.Check(t, map[string]string{"authorization": "Bearer nope"}); authztest.HTTPStatus(resp) != 401 {
		t.Errorf("check after the silent connection: %d", authztest.HTTPStatus(resp))
	}
}

// Connections past the cap of each port are closed at once; those open keep
// working, and a freed slot is reused.
func TestConnectionsOverTheCapAreClosed(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.Connections.MaxGRPC, cfg.Connections.MaxHTTP = 2, 1
	r := authztest.StartReplica(t, cfg)
	if resp := r.Check(t, map[string]string{"authorization": "Bearer nope"}); authztest.HTTPStatus(resp) != 401 { // the client's connection: one of 2
		t.Fatalf("check: %d", authztest.HTTPStatus(resp))
	}
	grpcAddr := r.Conn.Target()
	held := dialRaw(t, grpcAddr) // the second
	if closedWithin(t, held, 200*time.Millisecond) {
		t.Fatal("a gRPC connection under the cap was closed")
	}
	if over := dialRaw(t, grpcAddr); !closedWithin(t, over, 2*time.Second) {
		t.Fatal("a third gRPC connection over a cap of 2 was left open")
	}
	if resp := r.Check(t, map[string]string{"authorization": "Bearer nope"}); authztest.HTTPStatus(resp) != 401 {
		t.Errorf("the open client after a refusal: %d", authztest.HTTPStatus(resp))
	}
	held.Close()
	time.Sleep(100 * time.Millisecond) // the server notices the close
	if again := dialRaw(t, grpcAddr); closedWithin(t, again, 200*time.Millisecond) {
		t.Error("a connection after a slot was freed was closed")
	}

	httpAddr := hostOf(t, r.HTTPURL)
	first := dialRaw(t, httpAddr)
	if closedWithin(t, first, 200*time.Millisecond) {
		t.Fatal("the first forward-auth connection was closed")
	}
	if over := dialRaw(t, httpAddr); !closedWithin(t, over, 2*time.Second) {
		t.Fatal("a second forward-auth connection over a cap of 1 was left open")
	}
	if got := r.Counter(t, "odin_connections_refused_total", nil); got != 2 {
		t.Errorf("odin_connections_refused_total = %v, want 2", got)
	}
}

// h2Client is the bare HTTP/2 connection Envoy keeps to a cluster host:
// preface, settings, then pings (connection_keepalive) with no streams.
type h2Client struct {
	t  *testing.T
	fr *http2.Framer
}

func newH2Client(t *testing.T, addr string) *h2Client {
	c := dialRaw(t, addr)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2Client{t: t, fr: fr}
}

// ping sends one PING and reads until its ACK; it returns the GOAWAY the
// server sent instead, if any.
func (h *h2Client) ping(n byte) *http2.GoAwayFrame {
	h.t.Helper()
	data := [8]byte{n}
	if err := h.fr.WritePing(false, data); err != nil {
		h.t.Fatalf("ping %d: %v", n, err)
	}
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("ping %d: the connection ended: %v", n, err)
		}
		switch fr := fr.(type) {
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				_ = h.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if fr.IsAck() && fr.Data == data {
				return nil
			}
		case *http2.GoAwayFrame:
			return fr
		}
	}
}

// Envoy's connection_keepalive pings idle connections every interval (plus
// jitter, never less): at or above the allowed rate they keep the connection
// open; a client pinging faster is told to go away (too_many_pings).
func TestKeepalivePingsAtTheAllowedRate(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	cfg := f.Config()
	cfg.Connections.KeepaliveMinTime = 200 * time.Millisecond
	r := authztest.StartReplica(t, cfg)

	envoy := newH2Client(t, r.Conn.Target())
	for i := range 8 { // 8 pings over ~2 s, no stream open
		if ga := envoy.ping(byte(i)); ga != nil {
			t.Fatalf("ping %d at the allowed rate: GOAWAY %v %q", i, ga.ErrCode, ga.DebugData())
		}
		time.Sleep(250 * time.Millisecond)
	}

	flood := newH2Client(t, r.Conn.Target())
	for i := range 10 {
		if ga := flood.ping(byte(i)); ga != nil {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
				t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("pings every 10ms were never refused")
}
