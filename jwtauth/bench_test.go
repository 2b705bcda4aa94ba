package jwtauth

import (
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
