// Package devissuer is a small identity provider for tests and local use. It
// mints Clerk-shaped session tokens (v2 by default, v1 on request) signed
// with RS256 or ES256 keys, and serves their public keys as a JWKS over HTTP,
// with switches to rotate and retire keys and to make the endpoint fail or
// slow down. It is not meant for production: keys live in memory only.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// JWKSPath is the path Handler serves the key set on, as Clerk does.
const JWKSPath = "/.well-known/jwks.json"

// Defaults used by New and Mint.
const (
	DefaultIssuer  = "https://clerk.odin.localhost"
	DefaultSubject = "user_dev"
	DefaultTTL     = 60 * time.Second // Clerk session tokens live about a minute
)

// Options configure a Provider.
type Options struct {
	// Issuer is the iss of minted tokens, default DefaultIssuer.
	Issuer string
	// ECDSA adds a P-256 key so that tokens can be minted with ES256.
	ECDSA bool
	// RSABits is the RSA key size, default 2048.
	RSABits int
}

// Org is the active organisation of a minted token.
type Org struct {
	// ID, Slug and Role; Role is given without the "org:" prefix (v2 form),
	// which v1 tokens get added.
	ID, Slug, Role string
	// Permissions become o.per joined with "," (v2) or org_permissions (v1).
	Permissions []string
	// FeaturePermissionMap is o.fpm as is (v2 only); pair it with an "fea"
	// claim in Claims.Extra.
	FeaturePermissionMap string
}

// Claims describe one token to mint. Zero fields get Clerk-like defaults.
type Claims struct {
	Subject         string // default DefaultSubject
	SessionID       string // default a random "sess_…"
	AuthorizedParty string // azp, omitted when empty
	Audience        []string
	Issuer          string    // overrides the provider's issuer
	IssuedAt        time.Time // default now
	NotBefore       time.Time // default IssuedAt
	Expiry          time.Time // default IssuedAt + DefaultTTL
	Org             *Org
	// Version is 2 (the default) for Clerk's v2 shape, 1 for the v1 shape.
	Version int
	// Extra claims are set last, overriding the others; a nil value
	// removes the claim.
	Extra map[string]any

	// Algorithm is RS256 (default) or ES256 (needs Options.ECDSA).
	Algorithm string
	// KeyID overrides the kid header; OmitKeyID leaves it out.
	KeyID     string
	OmitKeyID bool
	// Headers are extra protected header fields (jku, x5u, crit…); a nil
	// value removes the field.
	Headers map[string]any
}

type signingKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer
}

// Provider is a running dev identity provider. It is safe for concurrent use.
type Provider struct {
	issuer  string
	rsaBits int
	ecdsa   bool

	mu        sync.Mutex
	published []*signingKey                          // in the JWKS, oldest first
	current   map[jwa.SignatureAlgorithm]*signingKey // signing key per algorithm
	down      bool
	delay     time.Duration

	fetches atomic.Int64
}

// New creates a provider with one RS256 key, and one ES256 key when
// opts.ECDSA is set.
func New(opts Options) (*Provider, error) {
	p := &Provider{
		issuer:  opts.Issuer,
		rsaBits: opts.RSABits,
		ecdsa:   opts.ECDSA,
		current: map[jwa.SignatureAlgorithm]*signingKey{},
	}
	if p.issuer == "" {
		p.issuer = DefaultIssuer
	}
	if p.rsaBits == 0 {
		p.rsaBits = 2048
	}
	if _, err := p.Rotate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Issuer returns the iss of the tokens the provider mints.
func (p *Provider) Issuer() string { return p.issuer }

// Rotate adds a new signing key per algorithm to the JWKS and signs with it
// from now on; the previous keys stay published until retired. It returns
// the new RS256 kid.
func (p *Provider) Rotate() (string, error) {
	rk, err := rsa.GenerateKey(rand.Reader, p.rsaBits)
	if err != nil {
		return "", fmt.Errorf("devissuer: generate RSA key: %w", err)
	}
	keys := []*signingKey{{kid: newID("ins_rsa_"), alg: jwa.RS256, priv: rk}}
	if p.ecdsa {
		ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", fmt.Errorf("devissuer: generate ECDSA key: %w", err)
		}
		keys = append(keys, &signingKey{kid: newID("ins_ec_"), alg: jwa.ES256, priv: ek})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		p.published = append(p.published, k)
		p.current[k.alg] = k
	}
	return keys[0].kid, nil
}

// Retire removes the key kid from the JWKS and reports whether it was
// there. Minting with its algorithm then fails until Rotate, if it was the
// current signing key.
func (p *Provider) Retire(kid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, k := range p.published {
		if k.kid == kid {
			p.published = append(p.published[:i:i], p.published[i+1:]...)
			if p.current[k.alg] == k {
				delete(p.current, k.alg)
			}
			return true
		}
	}
	return false
}

// KeyID returns the kid of the current signing key for alg ("RS256" or
// "ES256"), "" if there is none.
func (p *Provider) KeyID(alg string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k := p.current[jwa.SignatureAlgorithm(alg)]; k != nil {
		return k.kid
	}
	return ""
}

// PublicKey returns the public half of the published key kid.
func (p *Provider) PublicKey(kid string) (crypto.PublicKey, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range p.published {
		if k.kid == kid {
			return k.priv.Public(), true
		}
	}
	return nil, false
}

// SetDown makes the JWKS endpoint answer 503 (true) or work again (false).
func (p *Provider) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// SetDelay makes the JWKS endpoint wait d before answering (0: no delay).
func (p *Provider) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Fetches returns how many requests the JWKS endpoint has received,
// including those it failed or is still delaying.
func (p *Provider) Fetches() int { return int(p.fetches.Load()) }

// JWKS returns the published key set as JSON.
func (p *Provider) JWKS() ([]byte, error) {
	p.mu.Lock()
	published := append([]*signingKey(nil), p.published...)
	p.mu.Unlock()
	set := jwk.NewSet()
	for _, k := range published {
		pub, err := jwk.FromRaw(k.priv.Public())
		if err != nil {
			return nil, fmt.Errorf("devissuer: public JWK: %w", err)
		}
		for name, v := range map[string]any{jwk.KeyIDKey: k.kid, jwk.AlgorithmKey: k.alg, jwk.KeyUsageKey: jwk.ForSignature} {
			if err := pub.Set(name, v); err != nil {
				return nil, fmt.Errorf("devissuer: set %s: %w", name, err)
			}
		}
		if err := set.AddKey(pub); err != nil {
			return nil, fmt.Errorf("devissuer: add key: %w", err)
		}
	}
	return json.Marshal(set)
}

// Handler serves the JWKS on JWKSPath, honouring SetDown and SetDelay.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		down, delay := p.down, p.delay
		p.mu.Unlock()
		if delay > 0 {
			t := time.NewTimer(delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		if down {
			http.Error(w, "identity provider down", http.StatusServiceUnavailable)
			return
		}
		body, err := p.JWKS()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(body)
	})
	return mux
}

// Mint returns a signed compact JWT described by c.
func (p *Provider) Mint(c Claims) (string, error) {
	alg := jwa.SignatureAlgorithm(c.Algorithm)
	if alg == "" {
		alg = jwa.RS256
	}
	p.mu.Lock()
	key := p.current[alg]
	p.mu.Unlock()
	if key == nil {
		return "", fmt.Errorf("devissuer: no signing key for %s", alg)
	}
	payload, err := json.Marshal(p.claims(c))
	if err != nil {
		return "", fmt.Errorf("devissuer: encode claims: %w", err)
	}
	hdr := jws.NewHeaders()
	fields := map[string]any{jws.TypeKey: "JWT", jws.KeyIDKey: key.kid}
	if c.KeyID != "" {
		fields[jws.KeyIDKey] = c.KeyID
	}
	if c.OmitKeyID {
		delete(fields, jws.KeyIDKey)
	}
	maps.Copy(fields, c.Headers)
	for name, v := range fields {
		if v == nil {
			continue
		}
		if err := hdr.Set(name, v); err != nil {
			return "", fmt.Errorf("devissuer: header %s: %w", name, err)
		}
	}
	signed, err := jws.Sign(payload, jws.WithKey(alg, key.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	return string(signed), nil
}

// claims builds the payload of c in Clerk's shape.
func (p *Provider) claims(c Claims) map[string]any {
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	nbf, exp := c.NotBefore, c.Expiry
	if nbf.IsZero() {
		nbf = iat
	}
	if exp.IsZero() {
		exp = iat.Add(DefaultTTL)
	}
	m := map[string]any{
		"iss": firstNonEmpty(c.Issuer, p.issuer),
		"sub": firstNonEmpty(c.Subject, DefaultSubject),
		"sid": firstNonEmpty(c.SessionID, newID("sess_")),
		"iat": iat.Unix(),
		"nbf": nbf.Unix(),
		"exp": exp.Unix(),
		"jti": newID(""),
	}
	if c.AuthorizedParty != "" {
		m["azp"] = c.AuthorizedParty
	}
	if len(c.Audience) > 0 {
		m["aud"] = c.Audience
	}
	if c.Version == 1 {
		if o := c.Org; o != nil {
			m["org_id"], m["org_slug"] = o.ID, o.Slug
			m["org_role"] = "org:" + strings.TrimPrefix(o.Role, "org:")
			m["org_permissions"] = o.Permissions
		}
	} else {
		m["v"], m["sts"] = 2, "active"
		m["fva"] = []int{0, -1}
		if o := c.Org; o != nil {
			org := map[string]any{
				"id":  o.ID,
				"slg": o.Slug,
				"rol": strings.TrimPrefix(o.Role, "org:"),
				"per": strings.Join(o.Permissions, ","),
			}
			if o.FeaturePermissionMap != "" {
				org["fpm"] = o.FeaturePermissionMap
			}
			m["o"] = org
		}
	}
	for k, v := range c.Extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// newID returns prefix followed by 16 random hex digits.
func newID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never returns an error since Go 1.24
	return prefix + hex.EncodeToString(b[:])
}
