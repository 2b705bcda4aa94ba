package keystore_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/keystore"
)

func TestParseLSN(t *testing.T) {
	for _, c := range []struct {
		in   string
		want keystore.LSN
	}{
		{"0/0", 0}, {"0/1", 1}, {"16/B374D848", 0x16_B374D848}, {"FFFFFFFF/FFFFFFFF", 1<<64 - 1}, {"a/b", 0xa_0000000b},
	} {
		got, err := keystore.ParseLSN(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseLSN(%q) = %x, %v; want %x", c.in, got, err, c.want)
		}
		if back, _ := keystore.ParseLSN(got.String()); back != got {
			t.Errorf("%q: String() %q does not parse back", c.in, got.String())
		}
	}
	for _, bad := range []string{"", "/", "1/", "/1", "1", "1/2/3", "g/1", "100000000/0", "-1/0", "1/ 2"} {
		if _, err := keystore.ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
	if s := keystore.LSN(0x16_B374D848).String(); s != "16/B374D848" {
		t.Errorf("String() = %q, want PostgreSQL's form 16/B374D848", s)
	}
}

func hashOf(b byte) keystore.Hash {
	var h keystore.Hash
	h[0] = b
	return h
}

// learned returns a watermark whose floor was learned from the primary.
func learned(t *testing.T, opts keystore.WatermarkOptions, floor keystore.LSN) *keystore.Watermark {
	t.Helper()
	w := keystore.NewWatermark(opts)
	r := w.Route(hashOf(0), time.Now())
	if r.Reason != keystore.FallbackResync {
		t.Fatalf("a new watermark routes to the replica (%q): the floor is unknown until learned", r.Reason)
	}
	w.Primary(hashOf(0), floor, r)
	if r := w.Route(hashOf(0), time.Now()); r.Reason != "" {
		t.Fatalf("after learning the floor: reason %q", r.Reason)
	}
	return w
}

func TestWatermarkPerKeyPositions(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := learned(t, keystore.WatermarkOptions{Registerer: reg}, 100)
	k, other := hashOf(1), hashOf(2)
	if w.Accept(k, 99) || !w.Accept(k, 100) {
		t.Fatal("the floor is not the bar for every key")
	}
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: k, LSN: 500})
	if w.Accept(k, 499) {
		t.Error("a replica below the key's revoke position answered for it")
	}
	if !w.Accept(k, 500) || !w.Accept(other, 100) {
		t.Error("a current replica (or one answering for an unchanged key) was refused")
	}
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: k, LSN: 300}) // reordered, older
	if w.Accept(k, 499) {
		t.Error("an older position lowered the key's")
	}
	// Sessions are never read from replicas.
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateSession, SessionID: "sess_1", LSN: 900})
	if r := w.Route(other, time.Now()); r.Reason != "" || !w.Accept(other, 100) {
		t.Error("a session revocation changed key routing")
	}
	if got := counterSum(t, reg, "odin_keystore_replica_reads_total"); got != 4 {
		t.Errorf("replica reads = %v, want 4", got)
	}
}

// counterSum sums a counter family of reg over its label sets.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	var sum float64
	for _, m := range series(t, reg, name) {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

func TestWatermarkResync(t *testing.T) {
	w := learned(t, keystore.WatermarkOptions{}, 100)
	k := hashOf(1)
	for _, inv := range []keystore.Invalidation{
		{Kind: keystore.InvalidateAll},
		{Kind: keystore.InvalidateKey, Hash: k}, // from a process that sent no position
	} {
		before := w.Route(k, time.Now()) // a read already under way
		w.Apply(inv)
		r := w.Route(k, time.Now())
		if r.Reason != keystore.FallbackResync {
			t.Fatalf("%v: reason %q, want resync", inv, r.Reason)
		}
		if w.Accept(k, 1<<40) {
			t.Fatalf("%v: a replica answered while the floor is unknown", inv)
		}
		w.Primary(k, 1000, before) // began before the reset: proves nothing about it
		if w.Route(k, time.Now()).Reason != keystore.FallbackResync {
			t.Fatalf("%v: a primary read that began before the reset completed the resync", inv)
		}
		w.Primary(k, 2000, r)
		if w.Route(k, time.Now()).Reason != "" || w.Accept(hashOf(9), 1999) || !w.Accept(hashOf(9), 2000) {
			t.Fatalf("%v: the floor was not learned from the primary read", inv)
		}
		w.Primary(k, 1500, r) // a late, older answer lowers nothing
	}
}

func TestWatermarkFencedAndMonotonic(t *testing.T) {
	var fenced atomic.Bool
	w := learned(t, keystore.WatermarkOptions{Fenced: func(time.Time) bool { return fenced.Load() }}, 100)
	fenced.Store(true)
	k := hashOf(1)
	r := w.Route(k, time.Now())
	if r.Reason != keystore.FallbackFenced {
		t.Fatalf("fenced: reason %q", r.Reason)
	}
	w.Primary(k, 700, r) // the primary showed the key as of 700
	fenced.Store(false)
	if r := w.Route(k, time.Now()); r.Reason != "" {
		t.Fatalf("unfenced: reason %q", r.Reason)
	}
	if w.Accept(k, 699) {
		t.Error("reads went backwards: a replica older than a primary answer answered for the key")
	}
	if !w.Accept(hashOf(2), 100) {
		t.Error("a primary read of one key raised the bar for every key")
	}
	w.Primary(k, 0, r) // position unknown: nothing learned, nothing broken
	if !w.Accept(k, 700) {
		t.Error("an unknown position changed the key's")
	}
}

// Positions are folded into the floor after a window or past MaxKeys, so
// memory stays bounded and nothing is forgotten: the floor covers them.
func TestWatermarkFolds(t *testing.T) {
	w := learned(t, keystore.WatermarkOptions{MaxKeys: 2, Window: time.Hour}, 100)
	for i := range 10 {
		w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: hashOf(byte(i + 1)), LSN: keystore.LSN(200 + i)})
	}
	for i := range 10 {
		if w.Accept(hashOf(byte(i+1)), keystore.LSN(200+i-1)) {
			t.Errorf("key %d: its position was forgotten in a fold", i)
		}
	}
	if n := w.KeysForTest(); n > 4 {
		t.Errorf("%d positions held, want at most 2 generations of MaxKeys=2", n)
	}
	if w.Accept(hashOf(99), 200) || !w.Accept(hashOf(99), 209) {
		t.Error("the floor should have risen to the folded positions (and no further)")
	}

	w = learned(t, keystore.WatermarkOptions{Window: time.Millisecond}, 100)
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: hashOf(1), LSN: 300})
	time.Sleep(5 * time.Millisecond)
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: hashOf(2), LSN: 400})
	time.Sleep(5 * time.Millisecond)
	w.Apply(keystore.Invalidation{Kind: keystore.InvalidateKey, Hash: hashOf(3), LSN: 500})
	if w.Accept(hashOf(1), 299) || w.Accept(hashOf(2), 399) || w.Accept(hashOf(3), 499) {
		t.Error("a position was lost when its window ended")
	}
	// Three windows ended: the positions of all but the newest generation
	// (h1 at 300, h2 at 400) are now the floor, h3's is still its own.
	if !w.Accept(hashOf(9), 400) || w.Accept(hashOf(9), 399) {
		t.Error("after the windows ended the floor should be the newest folded position, 400")
	}
}
