package keystore_test

import (
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/odin-scan/odin-authz/keystore"
)

// refAlphabet and refValid restate the key format of key.go from its
// documentation, with the standard library's CRC32, so the fuzzer compares
// ValidKey against an independent reading of the format.
const refAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const refSecretLen = 43

// refChecksum is the six-character base62 CRC32 (IEEE) of prefix+secret.
func refChecksum(prefixAndSecret string) string {
	n := crc32.ChecksumIEEE([]byte(prefixAndSecret))
	var out [6]byte
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = refAlphabet[n%62]
		n /= 62
	}
	return string(out[:])
}

// refWhyInvalid says why s is not a key, or "" when it is one.
func refWhyInvalid(s string) string {
	switch {
	case len(s) != 57:
		return "length is not 57"
	case !strings.HasPrefix(s, "odin_sk_"):
		return "prefix is not odin_sk_"
	}
	body := s[8 : 8+refSecretLen]
	for i := 0; i < len(body); i++ {
		if strings.IndexByte(refAlphabet, body[i]) < 0 {
			return "secret is not base62"
		}
	}
	if s[8+refSecretLen:] != refChecksum(s[:8+refSecretLen]) {
		return "checksum does not re-compute"
	}
	return ""
}

// validKeyFrom derives a well-formed key from any input, so the
// single-byte-change property is checked on valid keys whatever the fuzzer
// feeds.
func validKeyFrom(s string) string {
	var b strings.Builder
	b.WriteString(keystore.KeyPrefix)
	for i := range refSecretLen {
		c := i
		if len(s) > 0 {
			c += int(s[i%len(s)])
		}
		b.WriteByte(refAlphabet[c%62])
	}
	return b.String() + refChecksum(b.String())
}

// FuzzKeyParse checks the first gate of every API key check: for any
// string, ValidKey agrees with the documented format (57 characters,
// odin_sk_, base62 secret, a checksum that re-computes) and ParseKey with
// ValidKey; a valid key with any single byte changed is refused; and
// GenerateKey's output is always valid.
func FuzzKeyParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string, pos uint, repl byte) {
		valid := keystore.ValidKey(s)
		if why := refWhyInvalid(s); valid != (why == "") {
			t.Fatalf("ValidKey(%q) = %v, but the format says %q", s, valid, why)
		}
		h, err := keystore.ParseKey(s)
		switch {
		case valid && err != nil:
			t.Fatalf("ParseKey(%q): %v for a valid key", s, err)
		case valid && h != keystore.Hash(sha256.Sum256([]byte(s))):
			t.Fatalf("ParseKey(%q) hash is not the SHA-256 of the key", s)
		case !valid && !errors.Is(err, keystore.ErrMalformedKey):
			t.Fatalf("ParseKey(%q) error = %v, want ErrMalformedKey", s, err)
		case !valid && h != (keystore.Hash{}):
			t.Fatalf("ParseKey(%q) returned a hash with its error", s)
		}
		if valid {
			hint := keystore.KeyHint(s)
			if strings.Contains(hint, s[12:keystore.KeyLen-4]) || len(hint) > len(keystore.KeyPrefix)+4+len("…")+4 {
				t.Fatalf("KeyHint(%q) = %q shows more than 8 characters of the key", s, hint)
			}
		}

		// A valid key with any one byte changed is refused.
		key := s
		if !valid {
			key = validKeyFrom(s)
			if !keystore.ValidKey(key) {
				t.Fatalf("ValidKey(%q) = false for a key built to the format", key)
			}
		}
		i := int(pos % uint(keystore.KeyLen))
		if repl == key[i] {
			repl ^= 0x01
		}
		changed := key[:i] + string([]byte{repl}) + key[i+1:]
		if keystore.ValidKey(changed) {
			t.Fatalf("ValidKey accepts %q: byte %d of the valid key %q changed to %q", changed, i, key, repl)
		}

		gen, err := keystore.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if !keystore.ValidKey(gen) || refWhyInvalid(gen) != "" {
			t.Fatalf("GenerateKey() = %q is not valid: %s", gen, refWhyInvalid(gen))
		}
	})
}
