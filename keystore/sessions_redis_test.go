package keystore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/internal/testenv"
	"github.com/odin-scan/odin-authz/keystore"
)

func openTestRedis(t *testing.T) (*keystore.Redis, *redis.Client, string) {
	t.Helper()
	url, prefix := testenv.Redis(t)
	rd, err := keystore.OpenRedis(keystore.RedisOptions{URL: url, Prefix: prefix, MACSecret: testenv.RedisMACSecret, Timeout: time.Second}, keystore.NewMetrics(nil), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(opts)
	t.Cleanup(func() { raw.Close() })
	return rd, raw, prefix
}

// TestReadWithMirror: the session cache and the revoked-session marker read
// in one round trip; the marker's answer counts for the sid it was read
// for only, and a marker not sealed with the secret is no revocation.
func TestReadWithMirror(t *testing.T) {
	rd, raw, prefix := openTestRedis(t)
	ctx := t.Context()
	now := time.Now()
	rs := keystore.NewRevokedSessions(nil, rd, time.Hour, quiet())
	rd.SetRaw(ctx, "jwt:abc", []byte("entry"), time.Minute)
	rd.SetRaw(ctx, "rsid:sess_gone", []byte(now.Format(time.RFC3339Nano)), time.Minute)
	if err := raw.Set(ctx, prefix+"rsid:sess_forged", "not sealed", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	val, ok, m := rs.ReadWithMirror(ctx, rd, "jwt:abc", "sess_gone")
	if !ok || !bytes.Equal(val, []byte("entry")) {
		t.Fatalf("ReadWithMirror = %q, %v; want the entry", val, ok)
	}
	if !rs.CheckMirrorRead(ctx, "sess_gone", m, now) {
		t.Error("a session whose marker was read is not revoked")
	}

	// Read for one sid, asked about another: Redis is asked again.
	_, _, m = rs.ReadWithMirror(ctx, rd, "jwt:none", "sess_live")
	if rs.CheckMirrorRead(ctx, "sess_live", m, now) {
		t.Error("a live session is revoked")
	}
	if _, ok, m := rs.ReadWithMirror(ctx, rd, "jwt:none", "sess_other"); ok || rs.CheckMirrorRead(ctx, "sess_gone", m, now) != true {
		t.Error("a MirrorRead of another sid answered for sess_gone")
	}
	if _, _, m := rs.ReadWithMirror(ctx, rd, "jwt:none", "sess_forged"); rs.CheckMirrorRead(ctx, "sess_forged", m, now) {
		t.Error("an unsealed marker revoked a session")
	}
	// Without a sid it is a plain read.
	if val, ok, _ := rs.ReadWithMirror(ctx, rd, "jwt:abc", ""); !ok || string(val) != "entry" {
		t.Errorf("ReadWithMirror without sid = %q, %v", val, ok)
	}
}

// TestRawWriter: queued writes reach Redis sealed (GetRaw reads them) in
// batches, a full queue drops and counts, and value may skip a write.
func TestRawWriter(t *testing.T) {
	rd, _, _ := openTestRedis(t)
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"})
	w := rd.NewRawWriter(keystore.RawWriterOptions{Capacity: 1000, Dropped: dropped})
	for i := range 500 {
		w.Set(fmt.Sprintf("w:%d", i), time.Minute, func() []byte { return []byte(fmt.Sprint(i)) })
	}
	w.Set("w:skipped", time.Minute, func() []byte { return nil })
	if w.Set("w:no-ttl", 0, func() []byte { return []byte("x") }) {
		t.Error("a write without TTL was queued")
	}
	w.Flush()
	for _, i := range []int{0, 255, 256, 499} {
		if val, ok := rd.GetRaw(t.Context(), fmt.Sprintf("w:%d", i)); !ok || string(val) != fmt.Sprint(i) {
			t.Errorf("w:%d = %q, %v", i, val, ok)
		}
	}
	if _, ok := rd.GetRaw(t.Context(), "w:skipped"); ok {
		t.Error("a skipped write was made")
	}
	if n := testutil.ToFloat64(dropped); n != 0 {
		t.Errorf("dropped = %v with room in the queue", n)
	}

	small := rd.NewRawWriter(keystore.RawWriterOptions{Capacity: 2, Dropped: dropped})
	block := make(chan struct{})
	small.Set("s:0", time.Minute, func() []byte { <-block; return []byte("0") })
	queued := 0
	for i := range 5 {
		if small.Set(fmt.Sprintf("s:%d", i+1), time.Minute, func() []byte { return []byte("x") }) {
			queued++
		}
	}
	close(block)
	small.Flush()
	// s:0 is in the queue or, taken by the writer, in flight: one or two more fit.
	if n := testutil.ToFloat64(dropped); n != float64(5-queued) || queued < 1 || queued > 2 {
		t.Errorf("queued %d of 5 with capacity 2 and dropped %v; want 1 or 2 queued, the rest dropped", queued, n)
	}
}

// pipelineCounter counts the pipelines of SETs a client sends, and their
// commands.
type pipelineCounter struct{ pipelines, sets atomic.Int64 }

func (h *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "set" {
			h.pipelines.Add(1)
			h.sets.Add(int64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}

// TestRawWriterLingers: writes queued while the writer lingers go in one
// round trip, and Flush does not wait for the linger to end.
func TestRawWriterLingers(t *testing.T) {
	rd, _, _ := openTestRedis(t)
	h := &pipelineCounter{}
	rd.Conn().Client().AddHook(h)
	w := rd.NewRawWriter(keystore.RawWriterOptions{Linger: time.Hour})
	for i := range 10 {
		w.Set(fmt.Sprintf("l:%d", i), time.Minute, func() []byte { return []byte(fmt.Sprint(i)) })
	}
	w.Flush() // an hour's linger: the test would time out if Flush waited for it
	if p, n := h.pipelines.Load(), h.sets.Load(); p != 1 || n != 10 {
		t.Errorf("%d pipelines carrying %d SETs, want 1 carrying 10", p, n)
	}
	for i := range 10 {
		if val, ok := rd.GetRaw(t.Context(), fmt.Sprintf("l:%d", i)); !ok || string(val) != fmt.Sprint(i) {
			t.Errorf("l:%d = %q, %v", i, val, ok)
		}
	}
}

// gateGets holds the first pipeline of GETs until release is closed, and
// counts the pipelines of GETs and their commands.
type gateGets struct {
	release         chan struct{}
	held            atomic.Bool
	pipelines, gets atomic.Int64
}

func (h *gateGets) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *gateGets) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *gateGets) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) == 0 || cmds[0].Name() != "get" {
			return next(ctx, cmds)
		}
		h.pipelines.Add(1)
		h.gets.Add(int64(len(cmds)))
		if h.held.CompareAndSwap(false, true) {
			<-h.release
		}
		return next(ctx, cmds)
	}
}

// TestFirstSightReadsShareRoundTrips: the first-sight reads (session
// entry and revocation marker) of checks made while one is in flight go
// together in the next round trip, each answered as if alone.
func TestFirstSightReadsShareRoundTrips(t *testing.T) {
	rd, _, _ := openTestRedis(t)
	ctx := t.Context()
	rs := keystore.NewRevokedSessions(nil, rd, time.Hour, quiet())
	const n = 20
	for i := range n {
		if i%2 == 0 {
			rd.SetRaw(ctx, fmt.Sprintf("jwt:%d", i), []byte(fmt.Sprint("entry ", i)), time.Minute)
		}
		if i%3 == 0 {
			rd.SetRaw(ctx, fmt.Sprintf("rsid:sess_%d", i), []byte("1"), time.Minute)
		}
	}
	h := &gateGets{release: make(chan struct{})}
	rd.Conn().Client().AddHook(h)
	type answer struct {
		val     string
		ok      bool
		revoked bool
	}
	answers := make([]answer, n)
	read := func(i int) {
		sid := fmt.Sprintf("sess_%d", i)
		val, ok, m := rs.ReadWithMirror(ctx, rd, fmt.Sprintf("jwt:%d", i), sid)
		answers[i] = answer{string(val), ok, rs.CheckMirrorRead(ctx, sid, m, time.Now())}
	}
	var wg sync.WaitGroup
	wg.Go(func() { read(0) })
	for !h.held.Load() { // the first read is in flight, held
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() { read(i) })
	}
	for rd.QueuedReadsForTest() != n-1 {
		time.Sleep(time.Millisecond)
	}
	close(h.release)
	wg.Wait()
	for i, a := range answers {
		want := answer{revoked: i%3 == 0}
		if i%2 == 0 {
			want.val, want.ok = fmt.Sprint("entry ", i), true
		}
		if a != want {
			t.Errorf("check %d: %+v, want %+v", i, a, want)
		}
	}
	if p, g := h.pipelines.Load(), h.gets.Load(); p != 2 || g != 2*n {
		t.Errorf("%d pipelines carrying %d GETs, want 2 carrying %d", p, g, 2*n)
	}
}
