package keystore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// syntheticStore streams n pseudo-random key hashes, as KeyHashes would
// from PostgreSQL, without a database: the filter's own cost at sizes a
// test database cannot hold quickly.
type syntheticStore struct {
	Store
	n    int
	seed uint64
}

func (s syntheticStore) KeyHashes(_ context.Context, _ time.Time, fn func(Hash) error) error {
	var h Hash
	x := s.seed
	for range s.n {
		for i := 0; i < len(h); i += 8 { // splitmix64: uniform, like SHA-256 output
			x += 0x9e3779b97f4a7c15
			z := x
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
			z = (z ^ (z >> 27)) * 0x94d049bb133111eb
			binary.LittleEndian.PutUint64(h[i:], z^(z>>31))
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

func randomHash() Hash {
	var h Hash
	_, _ = rand.Read(h[:])
	return h
}

// The filter holds every hash it was built from (no false negatives) and
// refuses almost every other one (false positives about 0.4 %).
func TestKeyFilterBuild(t *testing.T) {
	const n = 100_000
	store := syntheticStore{n: n, seed: 7}
	f := newKeyFilter()
	st, err := f.build(context.Background(), store, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if st.keys != n || st.bytes == 0 || st.bytes > n*10/8 {
		t.Fatalf("built %d keys in %d bytes", st.keys, st.bytes)
	}
	missing := 0
	_ = store.KeyHashes(context.Background(), time.Time{}, func(h Hash) error {
		if f.check(h) != filterVouched {
			missing++
		}
		return nil
	})
	if missing != 0 {
		t.Fatalf("%d of %d stored hashes refused", missing, n)
	}
	fp := 0
	for range n {
		if f.check(randomHash()) != filterRefused {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.01 {
		t.Errorf("false positives %.3f %%, want about 0.4 %%", 100*rate)
	}
	// Heard of on the bus: vouched, and still after a rebuild that began
	// before it was heard of.
	h := randomHash()
	f.heard(h)
	if f.check(h) != filterVouched {
		t.Error("a hash heard of is refused")
	}
	// An empty store: everything refused, nothing fails.
	empty := newKeyFilter()
	if _, err := empty.build(context.Background(), syntheticStore{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if empty.check(randomHash()) != filterRefused {
		t.Error("an empty filter does not refuse")
	}
}

// BenchmarkKeyFilterBuild builds the filter from 1M and 10M hashes and
// reports its size and the memory the build allocated:
//
//	go test -run '^$' -bench KeyFilterBuild -benchtime 1x ./keystore/
func BenchmarkKeyFilterBuild(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(fmt.Sprintf("keys=%dM", n/1_000_000), func(b *testing.B) {
			store := syntheticStore{n: n, seed: 1}
			var st *filterState
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for range b.N {
				var err error
				if st, err = newKeyFilter().build(context.Background(), store, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(st.bytes)/(1<<20), "filter-MiB")
			b.ReportMetric(float64(st.bytes*8)/float64(n), "bits/key")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "alloc-MiB/build")
		})
	}
}

// BenchmarkKeyFilterCheck is the cost the filter adds to a check: a key
// it holds (every real key) and one it refuses (a forged key; the wait for
// the bus that follows a refusal is not included).
//
//	go test -run '^$' -bench KeyFilterCheck ./keystore/
func BenchmarkKeyFilterCheck(b *testing.B) {
	store := syntheticStore{n: 1_000_000, seed: 3}
	f := newKeyFilter()
	if _, err := f.build(context.Background(), store, time.Hour); err != nil {
		b.Fatal(err)
	}
	var known [1024]Hash
	i := 0
	_ = store.KeyHashes(context.Background(), time.Time{}, func(h Hash) error {
		if i < len(known) {
			known[i] = h
			i++
		}
		return nil
	})
	var forged [1024]Hash
	for i := range forged {
		forged[i] = randomHash()
	}
	for _, c := range []struct {
		name   string
		hashes *[1024]Hash
	}{{"known", &known}, {"forged", &forged}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				f.check(c.hashes[i&1023])
			}
		})
	}
}

// sliceStore streams a fixed set of hashes.
type sliceStore struct {
	Store
	hashes []Hash
}

func (s sliceStore) KeyHashes(_ context.Context, _ time.Time, fn func(Hash) error) error {
	for _, h := range s.hashes {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

// FuzzKeyFilterNoFalseNegative: whatever the set of hashes (duplicates,
// shared prefixes, one or none), the filter built from it holds every one:
// a real key is never refused.
func FuzzKeyFilterNoFalseNegative(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 64), uint8(3))
	f.Add([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefXYZ"), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, dup uint8) {
		var hashes []Hash
		for len(data) >= 32 {
			var h Hash
			copy(h[:], data)
			hashes = append(hashes, h)
			data = data[32:]
		}
		for i := 0; i < int(dup%8) && len(hashes) > 0; i++ { // duplicates, as a roll race could not make but a bad store might
			hashes = append(hashes, hashes[i%len(hashes)])
		}
		kf := newKeyFilter()
		if _, err := kf.build(context.Background(), sliceStore{hashes: hashes}, time.Minute); err != nil {
			t.Fatalf("build of %d hashes: %v", len(hashes), err)
		}
		for _, h := range hashes {
			if kf.check(h) != filterVouched {
				t.Fatalf("a hash of the set is refused (%d hashes)", len(hashes))
			}
		}
	})
}
