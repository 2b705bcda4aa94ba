package keystore

import "testing"

// KeysForTest is the number of per-key positions held.
func (w *Watermark) KeysForTest() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.cur) + len(w.old)
}

// The WAL position rides on bus messages as an optional last field;
// messages without one (from older processes) decode as before.
func TestInvalidationCarriesLSN(t *testing.T) {
	h := HashKey("odin_sk_example")
	for _, inv := range []Invalidation{
		{Kind: InvalidateKey, Hash: h},
		{Kind: InvalidateKey, Hash: h, LSN: 0x16_B374D848},
		{Kind: InvalidateKey, Hash: h, AckID: "0a1b2c", LSN: 1},
		{Kind: InvalidateKey, Hash: h, AckID: "0a1b2c"},
		{Kind: InvalidateSession, SessionID: "sess_2x:y.z-1", LSN: 42},
		{Kind: InvalidateAll},
	} {
		got, err := decodeInvalidation(inv.encode())
		if err != nil || got != inv {
			t.Errorf("%q decodes to %+v, %v; want %+v", inv.encode(), got, err, inv)
		}
	}
	old := "key " + h.String() + " 0a1b2c" // as written before positions existed
	if got, err := decodeInvalidation(old); err != nil || got != (Invalidation{Kind: InvalidateKey, Hash: h, AckID: "0a1b2c"}) {
		t.Errorf("old message %q: %+v, %v", old, got, err)
	}
	if s := (Invalidation{Kind: InvalidateKey, Hash: h, AckID: "ff", LSN: 0x16_B374D848}).encode(); s != "key "+h.String()+" ff 16/B374D848" {
		t.Errorf("encode = %q", s)
	}
	// A malformed position is dropped, not the message: the receiver then
	// asks the primary (resync), which is safe; dropping a revoke is not.
	got, err := decodeInvalidation("key " + h.String() + " ff zz/1")
	if err != nil || got.LSN != 0 || got.Hash != h || got.AckID != "ff" {
		t.Errorf("bad position: %+v, %v", got, err)
	}
}

// QueuedReadsForTest is the number of getRaws calls waiting for the round
// trip in flight to end.
func (r *Redis) QueuedReadsForTest() int { return r.reads.Queued() }
