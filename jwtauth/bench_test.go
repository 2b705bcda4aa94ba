package jwtauth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

// Verify has no result cache (that is the session cache's job), so every
// call below is a first-sight verification: header and payload decoding,
// key selection, the signature check and the claims.

func BenchmarkVerifyRS256(b *testing.B) { benchmarkVerify(b, "RS256") }

func BenchmarkVerifyES256(b *testing.B) { benchmarkVerify(b, "ES256") }

func benchmarkVerify(b *testing.B, alg string) {
	e := newEnv(b, envOptions{
		idp:    devissuer.Options{ECDSA: true},
		config: func(c *Config) { c.Algorithms = []string{alg} },
	})
	tok := e.mint(b, devissuer.Claims{
		Algorithm: alg, AuthorizedParty: "https://app.example", Expiry: time.Now().Add(time.Hour),
		Org: &devissuer.Org{ID: "org_1", Slug: "acme", Role: "admin", Permissions: []string{"read", "manage"}},
	})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLooksLikeJWT: the shape check every bearer credential passes
// through, on a token of a Clerk session's size.
func BenchmarkLooksLikeJWT(b *testing.B) {
	tok := strings.Repeat("eyJhbGciOiJSUzI1NiIsImtpZCI6", 10) + "." + strings.Repeat("abcdefghijklmnopqrstuvwxyzAB-_", 25) + "." + strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", 11)
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if !LooksLikeJWT(tok) {
			b.Fatal("not a JWT")
		}
	}
}

// BenchmarkRSA2048Verify: crypto/rsa's PKCS #1 v1.5 check of one RS256
// signature alone, the floor under BenchmarkVerifyRS256 (which adds the
// token's decoding and claims).
func BenchmarkRSA2048Verify(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("header.payload"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
			b.Fatal(err)
		}
	}
}
