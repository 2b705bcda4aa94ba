package extauthz_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/credential"
	"github.com/odin-scan/odin-authz/extauthz"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

// roundTrips counts the round trips a go-redis client makes, by the
// commands they carry (a pipeline is one round trip). The handshake of a
// new pooled connection is left out.
type roundTrips struct {
	mu   sync.Mutex
	list [][]string // command names of each round trip
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.add(cmds)
		return next(ctx, cmds)
	}
}

func (h *roundTrips) add(cmds []redis.Cmder) {
	var names []string
	for _, c := range cmds {
		switch n := c.Name(); n {
		case "hello", "client", "auth", "select": // a new connection's handshake, not a check's
		default:
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	h.mu.Lock()
	h.list = append(h.list, names)
	h.mu.Unlock()
}

// take returns the round trips since the last take.
func (h *roundTrips) take() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.list
	h.list = nil
	return l
}

// reads counts the round trips of rt that read (GET), the ones a check
// waits for; writes those that write (SET), which Sessions makes in the
// background.
func reads(rt [][]string) (reads, writes int) {
	for _, names := range rt {
		switch {
		case slices.Contains(names, "get"):
			reads++
		case slices.Contains(names, "set"):
			writes++
		}
	}
	return reads, writes
}

// TestFirstSightRedisRoundTrips: a token seen for the first time costs one
// Redis round trip on the check's path (the session cache and the
// revoked-session mirror read together); the verified session is written
// in the background, where another replica finds it; and the mirror read
// ahead still refuses a session logged out whose bus message never came.
func TestFirstSightRedisRoundTrips(t *testing.T) {
	e := newSessionsEnv(t)
	rt := &roundTrips{}
	e.redis.Conn().Client().AddHook(rt)
	ctx := t.Context()
	a := e.sessions(t)
	tok := e.mint(t, 1, "rt")[0]
	rt.take()

	if got := a.Authenticate(ctx, tok, time.Now()); got.Principal == nil {
		t.Fatalf("first sight: %+v", got)
	}
	a.FlushRedisWrites()
	trips := rt.take()
	if r, w := reads(trips); r != 1 || w != 1 || len(trips) != 2 {
		t.Errorf("first sight: round trips %v; want one read (the session and the mirror) and one background write", trips)
	} else if !slices.Equal(trips[0], []string{"get", "get"}) {
		t.Errorf("first sight read %v, want one pipelined read of the session and the mirror", trips[0])
	}

	// Another replica finds the session in Redis: one round trip, no verification.
	b := e.sessions(t)
	if got := b.Authenticate(ctx, tok, time.Now()); got.Principal == nil || got.Principal.Subject != "user_rt_0" {
		t.Fatalf("second replica: %+v", got)
	}
	if r, w := reads(rt.take()); r != 1 || w != 0 {
		t.Errorf("a session cached in Redis: %d reads, %d writes; want 1, 0", r, w)
	}

	// A logout this process has not heard of (no bus here): the Redis mirror,
	// read with the session cache, refuses a new token of the session.
	mgr := keystore.NewManager(e.store, e.redis, keystore.ManagerOptions{})
	if _, err := mgr.RevokeSession(ctx, keystore.Actor{ID: "test"}, "sess_rt_0", "logout"); err != nil {
		t.Fatal(err)
	}
	fresh, err := e.idp.Mint(devissuer.Claims{Subject: "user_rt_0", SessionID: "sess_rt_0", AuthorizedParty: "https://app.example"})
	if err != nil {
		t.Fatal(err)
	}
	rt.take()
	c := e.sessions(t)
	if got := c.Authenticate(ctx, fresh, time.Now()); got.Principal != nil || got.Reason != credential.ReasonSessionRevoked {
		t.Errorf("new token of a session revoked in the mirror only: %+v, want refused %s", got, credential.ReasonSessionRevoked)
	}
	if trips := rt.take(); len(trips) != 1 {
		t.Errorf("refused first sight: round trips %v, want the one read", trips)
	}
	// The mirror's answer was learnt: the token is refused from memory now.
	if got := a.Authenticate(ctx, tok, time.Now()); got.Principal != nil {
		t.Errorf("cached token of the revoked session: %+v, want refused", got)
	}
}

// TestFirstSightWriteSkippedNearExpiry: a token about to expire is not
// written to Redis (no replica could use it), and checks still pass.
func TestFirstSightWriteSkippedNearExpiry(t *testing.T) {
	e := newSessionsEnv(t)
	rt := &roundTrips{}
	e.redis.Conn().Client().AddHook(rt)
	tok, err := e.idp.Mint(devissuer.Claims{Subject: "user_short", SessionID: "sess_short", IssuedAt: time.Now().Add(-58 * time.Second), Expiry: time.Now().Add(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	s := e.sessions(t)
	rt.take()
	if got := s.Authenticate(t.Context(), tok, time.Now()); got.Principal == nil {
		t.Fatalf("short-lived token: %+v", got)
	}
	s.FlushRedisWrites()
	if r, w := reads(rt.take()); r != 1 || w != 0 {
		t.Errorf("token expiring in 2s: %d reads, %d writes; want 1, 0", r, w)
	}
}

// TestSessionsRedisDown: with Redis unreachable, first sights still verify
// (Redis is best-effort) and the background writes are dropped, counted.
func TestSessionsRedisDown(t *testing.T) {
	e := newSessionsEnv(t)
	toks := e.mint(t, 3, "down")
	dead, err := keystore.OpenRedis(keystore.RedisOptions{URL: "redis://127.0.0.1:1", MACSecret: strings.Repeat("s", 32), Timeout: 50 * time.Millisecond}, keystore.NewMetrics(nil), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	reg := prometheus.NewRegistry()
	s, err := extauthz.NewSessions(e.verifier, e.revoked, dead, extauthz.SessionOptions{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if got := s.Authenticate(t.Context(), tok, time.Now()); got.Principal == nil {
			t.Fatalf("Redis down: %+v, want the token verified", got)
		}
	}
	s.FlushRedisWrites()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0.0
	for _, mf := range families {
		if mf.GetName() == "odin_authz_session_cache_writes_dropped_total" {
			dropped = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if dropped != float64(len(toks)) {
		t.Errorf("dropped writes = %v, want %d", dropped, len(toks))
	}
}
