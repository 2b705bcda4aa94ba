package loadtest

import (
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strconv"

	"github.com/odin-scan/odin-authz/keystore"
)

// The parts of the odin_sk_ format the keystore does not export. checkKeyFormat
// verifies them against keystore.ValidKey, so a format change fails loudly
// instead of seeding keys the server refuses.
const (
	checksumLen    = 6
	secretLen      = keystore.KeyLen - len(keystore.KeyPrefix) - checksumLen
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Keys derives API keys from a seed: key i is the same on every run, so a
// database seeded once serves every later load run without storing
// plaintexts anywhere. Keys are for load tests only: anyone with the seed
// can compute them.
type Keys struct {
	// Seed names the key set; change it to get different keys.
	Seed string
}

// Known returns key i of the seeded set (present in the database).
func (k Keys) Known(i int) string { return deriveKey(k.Seed, "known", i) }

// Unknown returns well-formed key i that is never seeded: it passes the
// checksum and reaches the key store, which does not know it.
func (k Keys) Unknown(i int) string { return deriveKey(k.Seed, "unknown", i) }

// ID returns the public id seeded for key i, in the key_<20 base62> shape.
func (k Keys) ID(i int) string { return fmt.Sprintf("key_L%019d", i) }

// Owner returns the user that owns key i: keys are spread over 10,000 users.
func (k Keys) Owner(i int) string { return "user_load_" + strconv.Itoa(i%10_000) }

func deriveKey(seed, space string, i int) string {
	sum := sha256.Sum256([]byte("odin-load\x00" + seed + "\x00" + space + "\x00" + strconv.Itoa(i)))
	rng := rand.New(rand.NewChaCha8(sum))
	buf := make([]byte, keystore.KeyLen)
	n := copy(buf, keystore.KeyPrefix)
	for j := range secretLen {
		buf[n+j] = base62Alphabet[rng.IntN(len(base62Alphabet))]
	}
	crc := crc32.ChecksumIEEE(buf[:n+secretLen])
	for j := keystore.KeyLen - 1; j >= n+secretLen; j-- {
		buf[j] = base62Alphabet[crc%62]
		crc /= 62
	}
	return string(buf)
}

// checkKeyFormat reports whether derived keys are still well-formed for
// the keystore.
func checkKeyFormat() error {
	k := Keys{Seed: "format-check"}
	for i := range 3 {
		if key := k.Known(i); !keystore.ValidKey(key) {
			return fmt.Errorf("derived key %s is refused by keystore.ValidKey: the key format changed, update internal/loadtest/keys.go", keystore.KeyHint(key))
		}
	}
	return nil
}

// permutation walks 0..n-1 in a scattered but reproducible order, so that
// consecutive requests of a cold-key run hit keys far apart in the table.
type permutation struct {
	n, step int
}

func newPermutation(n int) permutation {
	step := 1_000_003 % n
	for step == 0 || gcd(step, n) != 1 {
		step++
	}
	return permutation{n: n, step: step}
}

// at returns the j-th element of the walk (j wraps around n).
func (p permutation) at(j int64) int {
	return int((j % int64(p.n)) * int64(p.step) % int64(p.n))
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
