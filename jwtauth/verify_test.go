package jwtauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
)

func TestVerifyValid(t *testing.T) {
	e := newEnv(t, envOptions{
		idp:    devissuer.Options{ECDSA: true},
		config: func(c *Config) { c.Algorithms = []string{"RS256", "ES256"} },
	})
	iat := time.Now().Add(-10 * time.Second).Truncate(time.Second).UTC()
	for _, alg := range []string{"RS256", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			tok := e.mint(t, devissuer.Claims{
				Algorithm: alg, Subject: "user_1", SessionID: "sess_1", AuthorizedParty: "https://app.example",
				IssuedAt: iat, Expiry: iat.Add(time.Minute),
			})
			got, err := e.v.Verify(t.Context(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := &Session{
				Subject: "user_1", SessionID: "sess_1", AuthorizedParty: "https://app.example",
				Tier:     "free",
				IssuedAt: iat, NotBefore: iat, Expiry: iat.Add(time.Minute),
				// The dev issuer's fva: first factor just verified, no second.
				Factors: &FactorVerification{IssuedAt: iat.Unix(), Ages: [2]int32{0, -1}},
			}
			if kid := e.idp.KeyID(alg); !strings.HasPrefix(got.SigningKey, kid+"#") || len(got.SigningKey) <= len(kid)+1 {
				t.Errorf("SigningKey %q does not name key %s and its digest", got.SigningKey, kid)
			}
			want.SigningKey = got.SigningKey
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("session (-want, +got):\n%s", diff)
			}
		})
	}
	if !e.v.Ready() {
		t.Error("Ready() = false with a loaded key set")
	}
	if got := e.counter(t, "odin_jwt_verifications_total", "result", "ok"); got != 2 {
		t.Errorf("verifications{ok} = %v, want 2", got)
	}
}

func TestVerifyLeeway(t *testing.T) {
	e := newEnv(t, envOptions{config: func(c *Config) { c.Leeway = 30 * time.Second }})
	now := time.Now()
	for name, c := range map[string]devissuer.Claims{
		"expired within leeway":   {IssuedAt: now.Add(-time.Minute), Expiry: now.Add(-10 * time.Second)},
		"nbf within leeway":       {IssuedAt: now, NotBefore: now.Add(10 * time.Second)},
		"iat a bit in the future": {IssuedAt: now.Add(10 * time.Second), NotBefore: now},
	} {
		if _, err := e.v.Verify(t.Context(), e.mint(t, c)); err != nil {
			t.Errorf("%s: Verify: %v", name, err)
		}
	}
}

// refusal is a bad token and the reason it must be refused for.
type refusal struct {
	token string
	want  string
}

// refusalCases sets up a provider (two RSA keys and an EC key), a verifier
// with azp and aud checks, and an attacker provider served on its own
// server, and returns every kind of bad token.
func refusalCases(t *testing.T) (e *testEnv, attacker *devissuer.Provider, valid string, cases map[string]refusal) {
	attacker, err := devissuer.New(devissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	attackerSrv := httptest.NewServer(attacker.Handler())
	t.Cleanup(attackerSrv.Close)
	attackerJWKS := attackerSrv.URL + devissuer.JWKSPath

	e = newEnv(t, envOptions{
		idp: devissuer.Options{ECDSA: true},
		// Two RSA keys in the set, so that a token without kid is ambiguous.
		before: func(p *devissuer.Provider) {
			if _, err := p.Rotate(); err != nil {
				t.Fatal(err)
			}
		},
		config: func(c *Config) {
			c.Algorithms = []string{"RS256", "ES256"}
			c.AuthorizedParties = []string{"https://app.example"}
			c.Audience = []string{"odin-api"}
		},
	})
	good := devissuer.Claims{AuthorizedParty: "https://app.example", Audience: []string{"odin-api"}}
	with := func(f func(*devissuer.Claims)) devissuer.Claims {
		c := good
		f(&c)
		return c
	}
	valid = e.mint(t, good)
	if _, err := e.v.Verify(t.Context(), valid); err != nil {
		t.Fatalf("the baseline token does not verify: %v", err)
	}
	hdrSeg, payloadSeg, sigSeg := segments(t, valid)
	rsaKID := e.idp.KeyID("RS256")

	// HS256 keyed with the RSA public key, as PEM and as DER: the classic
	// algorithm confusion attack.
	pub, _ := e.idp.PublicKey(rsaKID)
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	hs256 := func(secret []byte) string {
		unsigned := forge(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": rsaKID}, payloadSeg, "")
		unsigned = strings.TrimSuffix(unsigned, ".")
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(unsigned))
		return unsigned + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	attackerKID := attacker.KeyID("RS256")
	attackerPub, _ := attacker.PublicKey(attackerKID)
	attackerJWK, err := jwk.FromRaw(attackerPub)
	if err != nil {
		t.Fatal(err)
	}
	attackerMint := func(c devissuer.Claims) string {
		c.Issuer = e.idp.Issuer()
		tok, err := attacker.Mint(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tamperedPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + e.idp.Issuer() + `","sub":"admin","exp":9999999999,"azp":"https://app.example","aud":"odin-api"}`))

	return e, attacker, valid, map[string]refusal{
		"alg none, empty signature":    {forge(t, map[string]any{"alg": "none", "kid": rsaKID}, payloadSeg, ""), ReasonMalformed},
		"alg none, some signature":     {forge(t, map[string]any{"alg": "none", "kid": rsaKID}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"alg None":                     {forge(t, map[string]any{"alg": "None"}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"no alg":                       {forge(t, map[string]any{"kid": rsaKID}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"alg is a number":              {forge(t, map[string]any{"alg": 256, "kid": rsaKID}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"ALG instead of alg":           {forge(t, map[string]any{"ALG": "RS256", "kid": rsaKID}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"HS256 keyed with the PEM key": {hs256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), ReasonBadAlgorithm},
		"HS256 keyed with the DER key": {hs256(der), ReasonBadAlgorithm},
		"RS384 not allowlisted":        {forge(t, map[string]any{"alg": "RS384", "kid": rsaKID}, payloadSeg, sigSeg), ReasonBadAlgorithm},
		"unknown kid":                  {e.mint(t, with(func(c *devissuer.Claims) { c.KeyID = "ins_unknown" })), ReasonUnknownKID},
		"kid is a number":              {forge(t, map[string]any{"alg": "RS256", "kid": 7}, payloadSeg, sigSeg), ReasonBadHeader},
		"ES256 header on an RSA key":   {forge(t, map[string]any{"alg": "ES256", "kid": rsaKID}, payloadSeg, sigSeg), ReasonNoKey},
		"no kid, several keys":         {e.mint(t, with(func(c *devissuer.Claims) { c.OmitKeyID = true })), ReasonNoKey},
		"expired":                      {e.mint(t, with(func(c *devissuer.Claims) { c.IssuedAt = time.Now().Add(-2 * time.Minute) })), ReasonExpired},
		"no exp":                       {e.mint(t, with(func(c *devissuer.Claims) { c.Extra = map[string]any{"exp": nil} })), ReasonExpired},
		"exp is a string":              {e.mint(t, with(func(c *devissuer.Claims) { c.Extra = map[string]any{"exp": "9999999999"} })), ReasonBadClaims},
		"nbf in the future":            {e.mint(t, with(func(c *devissuer.Claims) { c.NotBefore = time.Now().Add(time.Minute) })), ReasonNotYetValid},
		"iat in the future":            {e.mint(t, with(func(c *devissuer.Claims) { c.IssuedAt = time.Now().Add(time.Minute); c.NotBefore = time.Now() })), ReasonNotYetValid},
		"wrong iss":                    {e.mint(t, with(func(c *devissuer.Claims) { c.Issuer = "https://evil.example" })), ReasonBadIssuer},
		"iss with a trailing slash":    {e.mint(t, with(func(c *devissuer.Claims) { c.Issuer = e.idp.Issuer() + "/" })), ReasonBadIssuer},
		"azp not allowed":              {e.mint(t, with(func(c *devissuer.Claims) { c.AuthorizedParty = "https://evil.example" })), ReasonBadAZP},
		"no azp":                       {e.mint(t, with(func(c *devissuer.Claims) { c.AuthorizedParty = "" })), ReasonBadAZP},
		"wrong aud":                    {e.mint(t, with(func(c *devissuer.Claims) { c.Audience = []string{"other-api"} })), ReasonBadAudience},
		"no aud":                       {e.mint(t, with(func(c *devissuer.Claims) { c.Audience = nil })), ReasonBadAudience},
		"no sub":                       {e.mint(t, with(func(c *devissuer.Claims) { c.Extra = map[string]any{"sub": nil} })), ReasonBadClaims},
		"crit header":                  {e.mint(t, with(func(c *devissuer.Claims) { c.Headers = map[string]any{"crit": []string{"exp"}} })), ReasonBadHeader},
		"b64 header":                   {forge(t, map[string]any{"alg": "RS256", "kid": rsaKID, "b64": false}, payloadSeg, sigSeg), ReasonBadHeader},
		"jku and x5u to the attacker":  {attackerMint(devissuer.Claims{AuthorizedParty: "https://app.example", Audience: []string{"odin-api"}, Headers: map[string]any{"jku": attackerJWKS, "x5u": attackerJWKS}}), ReasonUnknownKID},
		"jku to the attacker, our kid": {attackerMint(devissuer.Claims{AuthorizedParty: "https://app.example", Audience: []string{"odin-api"}, KeyID: rsaKID, Headers: map[string]any{"jku": attackerJWKS}}), ReasonBadSignature},
		"embedded jwk of the attacker": {attackerMint(devissuer.Claims{AuthorizedParty: "https://app.example", Audience: []string{"odin-api"}, KeyID: rsaKID, Headers: map[string]any{"jwk": attackerJWK}}), ReasonBadSignature},
		"tampered payload":             {hdrSeg + "." + tamperedPayload + "." + sigSeg, ReasonBadSignature},
		"signature of another token":   {hdrSeg + "." + payloadSeg + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 256)), ReasonBadSignature},
		"three garbage segments":       {"abc.def.ghi", ReasonMalformed},
		"header is a JSON array":       {base64.RawURLEncoding.EncodeToString([]byte(`[1]`)) + "." + payloadSeg + "." + sigSeg, ReasonMalformed},
		"header is null":               {base64.RawURLEncoding.EncodeToString([]byte(`null`)) + "." + payloadSeg + "." + sigSeg, ReasonMalformed},
		"bad base64 character":         {hdrSeg + "." + payloadSeg + "." + sigSeg[:10] + "!" + sigSeg[11:], ReasonMalformed},
		"base64 padding":               {hdrSeg + "=." + payloadSeg + "." + sigSeg, ReasonMalformed},
		"impossible base64 length":     {"a" + hdrSeg + "." + payloadSeg + "." + sigSeg, ReasonMalformed},
		"standard base64 signature":    {hdrSeg + "." + payloadSeg + "." + strings.NewReplacer("-", "+", "_", "/").Replace(sigSeg) + "+/", ReasonMalformed},
		"four segments":                {valid + ".x", ReasonMalformed},
		"JWE-like five segments":       {hdrSeg + ".a.b.c." + sigSeg, ReasonMalformed},
		"empty":                        {"", ReasonMalformed},
		"spaces":                       {" " + valid, ReasonMalformed},
		"64 KiB":                       {hdrSeg + "." + strings.Repeat("A", 64<<10) + "." + sigSeg, ReasonTooLarge},
		"one byte over the limit":      {strings.Repeat("a", MaxTokenSize-2) + ".b.", ReasonTooLarge},
	}
}

// TestVerifyRefuses feeds every kind of bad token and checks each is an
// ErrInvalidToken with the expected reason, whose message does not contain
// the token, and that the attacker's JWKS is never fetched.
func TestVerifyRefuses(t *testing.T) {
	e, attacker, valid, tests := refusalCases(t)
	_, payloadSeg, sigSeg := segments(t, valid)
	checksBefore := e.counter(t, "odin_jwt_signature_checks_total", "", "")
	want := map[string]string{}
	got := map[string]string{}
	for name, tc := range tests {
		want[name] = tc.want
		start := time.Now()
		s, err := e.v.Verify(t.Context(), tc.token)
		got[name] = Reason(err)
		if s != nil || !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Verify = %v, %v; want nil, ErrInvalidToken", name, s, err)
			continue
		}
		if tc.token != "" && strings.Contains(err.Error(), tc.token) || strings.Contains(err.Error(), sigSeg) {
			t.Errorf("%s: the error message contains the token", name)
		}
		if tc.want == ReasonTooLarge && time.Since(start) > 100*time.Millisecond {
			t.Errorf("%s: took %v, want a fast refusal", name, time.Since(start))
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reasons (-want, +got):\n%s", diff)
	}
	if n := attacker.Fetches(); n != 0 {
		t.Errorf("the attacker's JWKS was fetched %d times, want 0", n)
	}
	// Tokens refused on their shape, header or kid cost no signature check.
	wantChecks := 0.0
	for _, r := range got {
		switch r {
		case ReasonMalformed, ReasonTooLarge, ReasonBadAlgorithm, ReasonBadHeader, ReasonUnknownKID, ReasonNoKey:
		default:
			wantChecks++
		}
	}
	if got := e.counter(t, "odin_jwt_signature_checks_total", "", "") - checksBefore; got != wantChecks {
		t.Errorf("signature checks = %v, want %v (refused tokens must not cost a signature check)", got, wantChecks)
	}
	if logs := e.logs.String(); strings.Contains(logs, sigSeg) || strings.Contains(logs, payloadSeg) {
		t.Error("the logs contain a token")
	}
}

func TestVerifyNoKIDSingleKey(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := e.mint(t, devissuer.Claims{OmitKeyID: true})
	if _, err := e.v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("a token without kid must verify against a single-key set: %v", err)
	}
}

func TestVerifyDefaultRefusesES256(t *testing.T) {
	e := newEnv(t, envOptions{idp: devissuer.Options{ECDSA: true}})
	_, err := e.v.Verify(t.Context(), e.mint(t, devissuer.Claims{Algorithm: "ES256"}))
	if Reason(err) != ReasonBadAlgorithm {
		t.Fatalf("ES256 with the default allowlist: got %v, want %s", err, ReasonBadAlgorithm)
	}
}

func TestVerifyContextCanceled(t *testing.T) {
	e := newEnv(t, envOptions{})
	tok := e.mint(t, devissuer.Claims{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := e.v.Verify(ctx, tok)
	if Reason(err) != ReasonCanceled || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify with a canceled context = %v; want a context error, not ErrInvalidToken", err)
	}
}
