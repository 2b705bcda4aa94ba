// Package jwtauth verifies session JWTs (Clerk session tokens, v1 and v2)
// against a JWKS endpoint and turns them into a Session.
//
// The key set is fetched once at start (bounded by FetchTimeout), refreshed in
// the background, refreshed on demand when a token names an unknown kid (at
// most once per MinRefreshInterval, whoever asks), and kept while the endpoint
// fails. Verification follows docs/CONTRACT.md ("Sessions"): an algorithm allowlist that never
// contains HMAC or none, the token's alg must fit the key's type and alg,
// exp/nbf/iat with a leeway, iss exact, azp and aud when configured; the
// header fields that point at other keys (jku, x5u, jwk, x5c) are ignored and
// a crit header is refused. JWKS parsing comes from
// github.com/lestrrat-go/jwx/v2 (jwk.Parse), once per fetch; the signatures
// are checked with the standard library (crypto/rsa, crypto/ecdsa) against
// the keys parsed then; the header and claims are parsed here, strictly
// (exact member names, duplicates refused: see forEachMember), so that every
// rule is visible in one place and no library default (key fetching, lenient
// base64, "try every key", case-insensitive names) applies by accident.
//
// Errors from Verify are ErrInvalidToken (401), ErrUnavailable (503) or the
// caller's context error; Reason gives a stable label for logs. No error
// message ever contains the token.
package jwtauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// MaxTokenSize is the largest token Verify looks at; anything longer is
// refused before any decoding. Clerk session tokens are well under 2 KiB.
const MaxTokenSize = 8 << 10

// Defaults applied by New to zero fields of Config and ClaimsMapping.
const (
	DefaultAlgorithm          = "RS256"
	DefaultLeeway             = 5 * time.Second
	DefaultRefreshInterval    = 5 * time.Minute
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultFetchTimeout       = 5 * time.Second
	DefaultTierClaim          = "tier"
	DefaultTier               = "free"
)

// maxLeeway bounds Config.Leeway: a clock skew allowance of minutes would
// quietly extend every token's life.
const maxLeeway = 5 * time.Minute

// supportedAlgorithms are the asymmetric JWS algorithms Verify knows how to
// check. HMAC (HS*) and none are deliberately absent: with a public JWKS, an
// HMAC "secret" would be public.
var supportedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
}

// Config is the verifier's configuration. It is loaded once by the command
// and passed in; the package reads no environment.
type Config struct {
	// JWKSURL is the key set endpoint, e.g.
	// https://<clerk-frontend-api>/.well-known/jwks.json. Required.
	JWKSURL string
	// Issuer must equal the token's iss exactly. Required.
	Issuer string
	// AuthorizedParties, when non-empty, is the allowlist for azp (Clerk
	// puts the browser's Origin there and recommends checking it). A token
	// without azp is then refused.
	AuthorizedParties []string
	// Audience, when non-empty, requires aud to contain one of these values.
	Audience []string
	// Algorithms is the allowlist of JWS algorithms, default ["RS256"].
	// RS*, PS* and ES* are accepted; HS* and none are refused by New.
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat, default 5s,
	// at most 5m.
	Leeway time.Duration
	// RefreshInterval is the period of the background JWKS refresh, default 5m.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between the end of a JWKS fetch
	// and a fetch asked for by Verify (an unknown kid, or no key set yet),
	// default 30s, so a flood of random kids cannot flood the identity
	// provider. All callers share it; those arriving during a fetch wait for
	// that fetch.
	MinRefreshInterval time.Duration
	// FetchTimeout bounds each JWKS HTTP fetch, default 5s.
	FetchTimeout time.Duration
	// Claims says where the tier and the permissions are read from.
	Claims ClaimsMapping
	// HTTPClient fetches the JWKS; nil means a plain http.Client.
	HTTPClient *http.Client
}

// ClaimsMapping says which claims carry what Session does not get from the
// registered and Clerk claims.
type ClaimsMapping struct {
	// TierClaim names the claim holding the subscription tier, default
	// "tier". It is read at the top level of the payload and, failing that,
	// inside the "metadata" and "public_metadata" objects, the names Clerk's
	// documentation uses when a session token is customised with
	// {{user.public_metadata}}.
	TierClaim string
	// PermissionsClaim, when set, names a top-level claim (an array of
	// strings or a space-separated string) whose scopes are added to the
	// Clerk organisation permissions. Empty means the organisation
	// permissions alone.
	PermissionsClaim string
	// DefaultTier is the tier of a token without a usable tier claim,
	// default "free".
	DefaultTier string
}

// Session is the identity a verified token carries.
type Session struct {
	// Subject is sub (the Clerk user id), SessionID is sid, and
	// AuthorizedParty is azp.
	Subject, SessionID, AuthorizedParty string
	// OrgID, OrgSlug and OrgRole describe the active organisation, if any.
	// OrgRole is always in the v1 form "org:<role>", for v2 tokens too.
	OrgID, OrgSlug, OrgRole string
	// Permissions are the organisation permissions (v1 org_permissions, or
	// v2 o.per expanded through fea/o.fpm) followed by the scopes of the
	// configured PermissionsClaim, without duplicates.
	Permissions []string
	// Tier is the subscription tier, DefaultTier when the token names none.
	Tier string
	// IssuedAt, NotBefore and Expiry are iat, nbf and exp; the first two are
	// zero when the token does not carry them.
	IssuedAt, NotBefore, Expiry time.Time
	// Actor is the user id of the impersonator (act.sub) when the session
	// is an impersonation: Clerk signs an admin in as another user and
	// names the admin in the act claim (RFC 8693). Empty otherwise.
	Actor string
	// Factors is Clerk's fva claim with the iat it counts from, for
	// step-up verification (Reverification.Satisfied); nil when the token
	// has no usable fva, which fails every reverification requirement but
	// is not a reason to refuse the token.
	Factors *FactorVerification
	// SigningKey identifies the JWKS key that verified the signature: its
	// kid and a digest of the key itself, so that a kid republished with
	// other key material does not match. A cached verification is only as
	// good as its key: see Verifier.HasSigningKey.
	SigningKey string
}

// clone returns a copy that shares no slice with s, so callers that got the
// same verification result cannot see each other's changes.
func (s *Session) clone() *Session {
	c := *s
	c.Permissions = append([]string(nil), s.Permissions...)
	if s.Factors != nil {
		f := *s.Factors
		c.Factors = &f
	}
	return &c
}

var (
	// ErrInvalidToken is wrapped by every error about the token itself:
	// the caller answers 401. The wrapping message says why, never what
	// the token was.
	ErrInvalidToken = errors.New("jwtauth: invalid token")
	// ErrUnavailable means the token cannot be checked because the JWKS
	// endpoint cannot be reached: no key set has ever been loaded, or the
	// token names a kid the loaded set lacks and the refresh failed. The
	// caller answers 503, not 401.
	ErrUnavailable = errors.New("jwtauth: key set unavailable")
)

// LooksLikeJWT reports whether s has the shape of a compact JWS: three
// non-empty base64url segments separated by two dots. It decodes nothing and
// is meant to route a bearer credential to JWT verification.
func LooksLikeJWT(s string) bool {
	dots, segLen := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if base64URL[c] {
			segLen++
			continue
		}
		if c != '.' || segLen == 0 {
			return false
		}
		dots++
		segLen = 0
		if dots > 2 {
			return false
		}
	}
	return dots == 2 && segLen > 0
}

// base64URL holds the bytes of the base64url alphabet: one load per byte
// of a token, where comparisons against five ranges were branches.
var base64URL = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

// withDefaults validates cfg and returns it with defaults filled in.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.JWKSURL == "" {
		return cfg, errors.New("jwtauth: JWKSURL is required")
	}
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return cfg, fmt.Errorf("jwtauth: JWKSURL %q is not an http(s) URL", cfg.JWKSURL)
	}
	if cfg.Issuer == "" {
		return cfg, errors.New("jwtauth: Issuer is required with JWKSURL")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{DefaultAlgorithm}
	}
	algs := make([]string, 0, len(cfg.Algorithms))
	seen := map[string]bool{}
	for _, a := range cfg.Algorithms {
		if !supportedAlgorithms[a] {
			return cfg, fmt.Errorf("jwtauth: algorithm %q is not allowed (use RS*, PS* or ES*; HMAC and none are never accepted)", a)
		}
		if !seen[a] {
			seen[a] = true
			algs = append(algs, a)
		}
	}
	cfg.Algorithms = algs
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"Leeway", &cfg.Leeway, DefaultLeeway},
		{"RefreshInterval", &cfg.RefreshInterval, DefaultRefreshInterval},
		{"MinRefreshInterval", &cfg.MinRefreshInterval, DefaultMinRefreshInterval},
		{"FetchTimeout", &cfg.FetchTimeout, DefaultFetchTimeout},
	}
	for _, d := range durations {
		if *d.d < 0 {
			return cfg, fmt.Errorf("jwtauth: %s must not be negative", d.name)
		}
		if *d.d == 0 {
			*d.d = d.def
		}
	}
	if cfg.Leeway > maxLeeway {
		return cfg, fmt.Errorf("jwtauth: Leeway %v is above the %v maximum", cfg.Leeway, maxLeeway)
	}
	if cfg.Claims.TierClaim == "" {
		cfg.Claims.TierClaim = DefaultTierClaim
	}
	if cfg.Claims.DefaultTier == "" {
		cfg.Claims.DefaultTier = DefaultTier
	}
	cfg.AuthorizedParties = append([]string(nil), cfg.AuthorizedParties...)
	cfg.Audience = append([]string(nil), cfg.Audience...)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	return cfg, nil
}
