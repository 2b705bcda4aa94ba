package keystore

import (
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateKeyFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != KeyLen || !strings.HasPrefix(k, KeyPrefix) {
			t.Fatalf("GenerateKey() = %q: want %d characters starting %q", k, KeyLen, KeyPrefix)
		}
		if !ValidKey(k) {
			t.Fatalf("ValidKey(%q) = false for a generated key", k)
		}
		if seen[k] {
			t.Fatalf("GenerateKey() repeated %q", k)
		}
		seen[k] = true
	}
}

func TestGeneratedKeysUseWholeAlphabet(t *testing.T) {
	counts := map[byte]int{}
	for range 2000 {
		k, _ := GenerateKey()
		for i := len(KeyPrefix); i < len(KeyPrefix)+secretLen; i++ {
			counts[k[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("secret characters used %d distinct symbols, want all 62", len(counts))
	}
	// 86000 draws over 62 symbols: about 1387 each. A fold-biased generator
	// (b % 62 over 0..255) would give the first 8 symbols ~1.2x the rest.
	for c, n := range counts {
		if n < 1150 || n > 1650 {
			t.Errorf("symbol %q drawn %d times, want about 1387", c, n)
		}
	}
}

func TestValidKey(t *testing.T) {
	good, _ := GenerateKey()
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := []struct {
		name string
		key  string
		want bool
	}{
		{"generated", good, true},
		{"empty", "", false},
		{"prefix only", KeyPrefix, false},
		{"one short", good[:KeyLen-1], false},
		{"one long", good + "0", false},
		{"wrong prefix", "odin_pk_" + good[len(KeyPrefix):], false},
		{"upper-case prefix", "ODIN_SK_" + good[len(KeyPrefix):], false},
		{"secret char changed", flip(len(KeyPrefix) + 5), false},
		{"last secret char changed", flip(len(KeyPrefix) + secretLen - 1), false},
		{"checksum char changed", flip(KeyLen - 1), false},
		{"non-base62 in secret", good[:20] + "-" + good[21:], false},
		{"space in secret", good[:20] + " " + good[21:], false},
		{"non-ascii", good[:20] + "é" + good[22:], false},
		{"checksum recomputed over other prefix", "odin_sk_" + strings.Repeat("A", secretLen) + "000000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidKey(tt.key); got != tt.want {
				t.Errorf("ValidKey(%q) = %v, want %v", tt.key, got, tt.want)
			}
			_, err := ParseKey(tt.key)
			if (err == nil) != tt.want {
				t.Errorf("ParseKey(%q) error = %v, want ok=%v", tt.key, err, tt.want)
			}
		})
	}
}

// A checksum over the right data must pass: build a key by hand.
func TestChecksumIsCRC32OfPrefixAndSecret(t *testing.T) {
	body := KeyPrefix + strings.Repeat("A", secretLen)
	var sum [checksumLen]byte
	putChecksum(sum[:], []byte(body))
	if !ValidKey(body + string(sum[:])) {
		t.Fatalf("hand-built key %q not valid", body+string(sum[:]))
	}
}

func TestValidKeyAllocatesNothing(t *testing.T) {
	k, _ := GenerateKey()
	if n := testing.AllocsPerRun(100, func() { ValidKey(k) }); n != 0 {
		t.Fatalf("ValidKey allocates %v times per call, want 0", n)
	}
}

func TestKeyHint(t *testing.T) {
	k, _ := GenerateKey()
	h := KeyHint(k)
	want := k[:12] + "…" + k[KeyLen-4:]
	if h != want {
		t.Fatalf("KeyHint = %q, want %q", h, want)
	}
	if strings.Contains(h, k[12:KeyLen-4]) {
		t.Fatal("hint reveals the secret")
	}
	if got := KeyHint("short"); got != KeyPrefix+"…" {
		t.Fatalf("KeyHint(short) = %q", got)
	}
}

func TestHashRoundTrip(t *testing.T) {
	k, _ := GenerateKey()
	h := HashKey(k)
	back, err := ParseHash(h.String())
	if err != nil || back != h {
		t.Fatalf("ParseHash(String()) = %v, %v", back, err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64)} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) succeeded", bad)
		}
	}
}

func BenchmarkValidKey(b *testing.B) {
	k, _ := GenerateKey()
	b.ReportAllocs()
	for b.Loop() {
		ValidKey(k)
	}
}

func TestCRC32MatchesLibrary(t *testing.T) {
	for _, s := range []string{"", "a", KeyPrefix + strings.Repeat("Zz9", 20)} {
		if got, want := crc32IEEE(s), crc32.ChecksumIEEE([]byte(s)); got != want {
			t.Errorf("crc32IEEE(%q) = %08x, want %08x", s, got, want)
		}
	}
}
