package loadtest

import (
	"testing"

	"github.com/odin-scan/odin-authz/keystore"
)

func TestDerivedKeysAreValidReproducibleAndDistinct(t *testing.T) {
	if err := checkKeyFormat(); err != nil {
		t.Fatal(err)
	}
	a, b := Keys{Seed: "s1"}, Keys{Seed: "s2"}
	seen := map[string]bool{}
	for i := range 2000 {
		for _, k := range []string{a.Known(i), a.Unknown(i), b.Known(i)} {
			if !keystore.ValidKey(k) {
				t.Fatalf("derived key %d (%s) is not a valid odin_sk_ key", i, keystore.KeyHint(k))
			}
			if seen[k] {
				t.Fatalf("derived key %d repeats", i)
			}
			seen[k] = true
		}
		if a.Known(i) != (Keys{Seed: "s1"}).Known(i) {
			t.Fatalf("key %d is not reproducible", i)
		}
	}
	if id := a.ID(42); len(id) != len("key_")+20 {
		t.Errorf("ID(42) = %q: want key_ and 20 characters", id)
	}
}

func TestPermutationVisitsEveryIndexOnce(t *testing.T) {
	for _, n := range []int{1, 7, 1000, 3, 65536, 1_000_003 % 70_000} {
		p := newPermutation(n)
		seen := make([]bool, n)
		for j := range int64(n) {
			i := p.at(j)
			if i < 0 || i >= n || seen[i] {
				t.Fatalf("n=%d: index %d at step %d out of range or repeated", n, i, j)
			}
			seen[i] = true
		}
		if p.at(int64(n)) != p.at(0) {
			t.Errorf("n=%d: the walk does not wrap", n)
		}
	}
}
