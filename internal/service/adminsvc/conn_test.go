package adminsvc_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/internal/service/adminsvc"
	"github.com/odin-scan/odin-authz/internal/service/adminsvc/admintest"
	"github.com/odin-scan/odin-authz/internal/testenv"
)

// The admin port closes connections past its cap at once.
func TestAdminConnectionsOverTheCapAreClosed(t *testing.T) {
	e := admintest.NewEnv(t)
	cfg := e.Config
	cfg.MaxConnections = 1
	l := testenv.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := adminsvc.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	closed := func(c net.Conn, wait time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 1))
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
	first, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if closed(first, 200*time.Millisecond) {
		t.Fatal("the first connection was closed")
	}
	second, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !closed(second, 2*time.Second) {
		t.Fatal("a second connection over a cap of 1 was left open")
	}
}
