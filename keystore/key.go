// Package keystore knows which credentials exist and what state they are in:
// the odin_sk_ key format, the PostgreSQL store that is the source of truth,
// the cache tiers in front of it (in-process LRU, then Redis) and the
// invalidation bus that keeps every replica's caches honest.
package keystore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
)

// The key format. Once released these never change: secret scanners and
// every issued key depend on them.
//
//	odin_sk_ <43 base62 characters of secret> <6 base62 characters of CRC32>
//
// 43 base62 characters carry 43·log2(62) ≈ 256.03 bits from crypto/rand. The
// checksum is the CRC32 (IEEE) of prefix+secret, base62, left-padded with
// '0' to six characters (62^6 > 2^32), so a mistyped or forged key is refused
// without touching any cache or store.
const (
	KeyPrefix      = "odin_sk_"
	secretLen      = 43
	checksumLen    = 6
	KeyLen         = len(KeyPrefix) + secretLen + checksumLen // 57
	base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// ErrMalformedKey reports a string that is not a well-formed odin_sk_ key:
// wrong prefix, length, alphabet or checksum.
var ErrMalformedKey = errors.New("malformed api key")

// Hash is the SHA-256 of a full key string, the only form of a key that is
// stored or used as a cache key. Keys carry 256 bits of entropy, so a plain
// SHA-256 cannot be reversed by search and needs no pepper.
type Hash [sha256.Size]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash decodes a hex hash as printed by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, errors.New("parse key hash: wrong length")
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, errors.New("parse key hash: not hex")
	}
	return h, nil
}

// HashKey returns the storage hash of a key string.
func HashKey(key string) Hash {
	if len(key) == KeyLen { // the common case hashes from the stack
		var buf [KeyLen]byte
		copy(buf[:], key)
		return sha256.Sum256(buf[:])
	}
	return sha256.Sum256([]byte(key))
}

// GenerateKey returns a new random key in the odin_sk_ format.
func GenerateKey() (string, error) {
	buf := make([]byte, KeyLen)
	copy(buf, KeyPrefix)
	secret := buf[len(KeyPrefix) : len(KeyPrefix)+secretLen]
	// Rejection sampling keeps every character uniform: bytes ≥ 248 (4·62)
	// are dropped instead of folded, so no character is more likely.
	var rnd [64]byte
	for i := 0; i < secretLen; {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", err
		}
		for _, b := range rnd {
			if b >= 248 {
				continue
			}
			secret[i] = base62Alphabet[b%62]
			i++
			if i == secretLen {
				break
			}
		}
	}
	putChecksum(buf[len(KeyPrefix)+secretLen:], buf[:len(KeyPrefix)+secretLen])
	return string(buf), nil
}

// ValidKey reports whether s is a well-formed key with a correct checksum.
// It does no allocation and touches no store: it is the first gate of every
// API key check.
func ValidKey(s string) bool {
	if len(s) != KeyLen || s[:len(KeyPrefix)] != KeyPrefix {
		return false
	}
	body := s[len(KeyPrefix) : len(KeyPrefix)+secretLen]
	for i := 0; i < len(body); i++ {
		if base62Index(body[i]) < 0 {
			return false
		}
	}
	var want [checksumLen]byte
	putChecksum(want[:], s[:len(KeyPrefix)+secretLen])
	return string(want[:]) == s[len(KeyPrefix)+secretLen:]
}

// ParseKey checks the key's format and returns its storage hash.
func ParseKey(s string) (Hash, error) {
	if !ValidKey(s) {
		return Hash{}, ErrMalformedKey
	}
	return HashKey(s), nil
}

// KeyHint is the display form of a key, enough for a person to recognise it
// and far too little to use it: the prefix, the first four characters of the
// secret and the last four characters of the key.
func KeyHint(key string) string {
	if len(key) != KeyLen {
		return KeyPrefix + "…"
	}
	return key[:len(KeyPrefix)+4] + "…" + key[KeyLen-4:]
}

func putChecksum[T string | []byte](dst []byte, data T) {
	n := crc32IEEE(data)
	for i := checksumLen - 1; i >= 0; i-- {
		dst[i] = base62Alphabet[n%62]
		n /= 62
	}
}

func base62Index(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 36
	}
	return -1
}

// crc32IEEE is crc32.ChecksumIEEE over a string or bytes without the
// conversion (and allocation) the library call would need: the key check
// allocates nothing.
func crc32IEEE[T string | []byte](data T) uint32 {
	crc := ^uint32(0)
	for i := 0; i < len(data); i++ {
		crc = crc32.IEEETable[byte(crc)^data[i]] ^ (crc >> 8)
	}
	return ^crc
}
