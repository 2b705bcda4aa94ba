package jwtauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

const (
	// maxJWKSSize bounds the JWKS body; a real one is a few KiB.
	maxJWKSSize = 1 << 20
	// RSA keys outside these bounds are skipped: below 2048 bits is weak,
	// above 8192 makes each verification needlessly expensive.
	minRSABits, maxRSABits = 2048, 8192
	// minRetry is the first delay after a failed background fetch; it
	// doubles up to the refresh interval.
	minRetry = time.Second
)

// curveOf maps each ES algorithm to the only curve it may be used with.
var curveOf = map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

// publicKey is one usable verification key of the JWKS.
type publicKey struct {
	kid string
	ref string // kid and a digest of the key: see Session.SigningKey
	alg string // the JWK's alg; empty when the JWK does not pin one
	kty string // "RSA" or "EC"
	crv string // the curve name of an EC key
	raw any    // *rsa.PublicKey or *ecdsa.PublicKey
}

// fits reports whether k may verify a signature made with alg: the JWK's own
// alg, when present, must be alg, and the key type (and curve) must be the
// one alg is defined for. This is what stops a token from choosing how a key
// is used.
func (k *publicKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch alg[:2] {
	case "RS", "PS":
		return k.kty == "RSA"
	case "ES":
		return k.kty == "EC" && k.crv == curveOf[alg]
	}
	return false
}

// keySet is an immutable snapshot of the JWKS.
type keySet struct {
	keys      []publicKey
	refs      map[string]struct{} // every key's ref, for HasSigningKey
	fetchedAt time.Time
}

// find returns the keys that may verify a token with this kid and alg, and
// whether the kid names any key at all. Without a kid, every key fitting alg
// is returned; the caller accepts exactly one.
func (s *keySet) find(kid string, alg string) (fit []*publicKey, kidKnown bool) {
	for i := range s.keys {
		k := &s.keys[i]
		if kid != "" && k.kid != kid {
			continue
		}
		kidKnown = true
		if k.fits(alg) {
			fit = append(fit, k)
		}
	}
	return fit, kidKnown
}

func (s *keySet) kids() []string {
	ids := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		ids = append(ids, k.kid)
	}
	return ids
}

// parseKeySet turns a JWKS document into the keys usable for verification.
// Keys that cannot verify an asymmetric JWS are skipped rather than failing
// the set: symmetric (oct) keys, encryption keys, unsupported types, weak
// RSA keys, invalid curve points. Private key material is reduced to its
// public half. A set with no usable key is an error.
func parseKeySet(body []byte, now time.Time) (*keySet, error) {
	set, err := jwk.Parse(body, jwk.WithIgnoreParseError(true))
	if err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	ks := &keySet{fetchedAt: now}
	for i := 0; i < set.Len(); i++ {
		k, ok := set.Key(i)
		if !ok {
			continue
		}
		if pk, ok := usableKey(k); ok {
			ks.keys = append(ks.keys, pk)
		}
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("parse jwks: no usable signature verification key")
	}
	ks.refs = make(map[string]struct{}, len(ks.keys))
	for _, k := range ks.keys {
		ks.refs[k.ref] = struct{}{}
	}
	return ks, nil
}

func usableKey(k jwk.Key) (publicKey, bool) {
	if u := k.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
		return publicKey{}, false
	}
	if ops := k.KeyOps(); len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
		return publicKey{}, false
	}
	pk := publicKey{kid: k.KeyID()}
	if a := k.Algorithm().String(); a != "" {
		if !supportedAlgorithms[a] {
			return publicKey{}, false
		}
		pk.alg = a
	}
	raw, err := jwk.PublicRawKeyOf(k)
	if err != nil {
		return publicKey{}, false
	}
	switch pub := raw.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return publicKey{}, false
		}
		pk.kty, pk.raw = "RSA", pub
	case *ecdsa.PublicKey:
		if _, err := pub.ECDH(); err != nil { // not a point on a supported curve
			return publicKey{}, false
		}
		pk.kty, pk.crv, pk.raw = "EC", pub.Curve.Params().Name, pub
	default:
		return publicKey{}, false
	}
	der, err := x509.MarshalPKIXPublicKey(pk.raw)
	if err != nil {
		return publicKey{}, false
	}
	sum := sha256.Sum256(der)
	pk.ref = pk.kid + "#" + base64.RawURLEncoding.EncodeToString(sum[:9])
	return pk, true
}

// keyStore holds the current key set and fetches new ones. All fetches, the
// background ones and those asked for by Verify, go through refresh, so at
// most one is in flight and callers that arrive meanwhile wait for it.
type keyStore struct {
	url          string
	client       *http.Client
	fetchTimeout time.Duration
	logger       *slog.Logger
	metrics      *metrics
	life         context.Context // fetches end with it, not with a caller's context

	current atomic.Pointer[keySet]

	mu       sync.Mutex
	lastEnd  time.Time  // when the last fetch ended
	inflight *fetchCall // the fetch under way, if any
	lastErr  error      // the outcome of the last fetch
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// errRateLimited says a refresh was skipped because the last fetch is too recent.
var errRateLimited = errors.New("jwks fetched too recently")

// load returns the key set in use, nil before the first successful fetch.
func (ks *keyStore) load() *keySet { return ks.current.Load() }

func (ks *keyStore) age() (time.Duration, bool) {
	s := ks.load()
	if s == nil {
		return 0, false
	}
	return time.Since(s.fetchedAt), true
}

func (ks *keyStore) size() int {
	if s := ks.load(); s != nil {
		return len(s.keys)
	}
	return 0
}

// lastError returns the error of the last fetch, nil if it succeeded.
func (ks *keyStore) lastError() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.lastErr
}

// refresh fetches the JWKS unless the last fetch ended less than minGap
// ago; if a fetch is in flight it waits for that one instead of starting
// another. Measuring from the end keeps a slow, struggling endpoint from
// being asked again the moment it answers. It returns the fetch's error,
// errRateLimited when it skipped, or ctx's error if the caller stopped
// waiting (the fetch then goes on).
func (ks *keyStore) refresh(ctx context.Context, minGap time.Duration) error {
	ks.mu.Lock()
	c := ks.inflight
	if c == nil {
		if !ks.lastEnd.IsZero() && time.Since(ks.lastEnd) < minGap {
			ks.mu.Unlock()
			return errRateLimited
		}
		c = &fetchCall{done: make(chan struct{})}
		ks.inflight = c
		go ks.run(c)
	}
	ks.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (ks *keyStore) run(c *fetchCall) {
	defer func() {
		if p := recover(); p != nil { // jwk.Parse on hostile input must not take the process down
			ks.logger.Error("jwks fetch panicked", "panic", fmt.Sprint(p))
			ks.metrics.fetches.WithLabelValues(fetchInvalid).Inc()
			c.err = errors.New("jwks fetch panicked")
		}
		ks.mu.Lock()
		ks.inflight, ks.lastErr, ks.lastEnd = nil, c.err, time.Now()
		ks.mu.Unlock()
		close(c.done)
	}()
	c.err = ks.fetch()
}

// fetch downloads and installs the key set; on failure the previous set
// stays in use.
func (ks *keyStore) fetch() error {
	ctx, cancel := context.WithTimeout(ks.life, ks.fetchTimeout)
	defer cancel()
	set, result, err := ks.download(ctx)
	ks.metrics.fetches.WithLabelValues(result).Inc()
	if err != nil {
		if prev := ks.load(); prev != nil {
			ks.logger.Warn("jwks refresh failed; keeping the last good key set",
				"error", err, "key_set_age", time.Since(prev.fetchedAt).Round(time.Second))
		} else {
			ks.logger.Warn("jwks fetch failed; no key set loaded, tokens get ErrUnavailable", "error", err)
		}
		return err
	}
	prev := ks.current.Swap(set)
	if prev == nil || !slices.Equal(prev.kids(), set.kids()) {
		ks.logger.Info("jwks loaded", "url", ks.url, "kids", set.kids())
	}
	return nil
}

func (ks *keyStore) download(ctx context.Context) (*keySet, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ks.url, nil)
	if err != nil {
		return nil, fetchError, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "odin-authz")
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, fetchError, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fetchBadStatus, fmt.Errorf("fetch jwks: HTTP status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fetchError, fmt.Errorf("fetch jwks: read body: %w", err)
	}
	if len(body) > maxJWKSSize {
		return nil, fetchInvalid, fmt.Errorf("fetch jwks: body larger than %d bytes", maxJWKSSize)
	}
	set, err := parseKeySet(body, time.Now())
	if err != nil {
		return nil, fetchInvalid, err
	}
	return set, fetchOK, nil
}

// refreshLoop refreshes the key set every interval (with ±10% jitter, so
// replicas spread out) until ctx ends. After a failure it retries sooner,
// from minRetry doubling up to interval.
func (ks *keyStore) refreshLoop(ctx context.Context, interval time.Duration) {
	retry := min(minRetry, interval)
	for {
		wait := jitter(interval)
		if ks.lastError() != nil {
			wait = retry
			retry = min(retry*2, interval)
		} else {
			retry = min(minRetry, interval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		_ = ks.refresh(ctx, 0) // the outcome is logged and counted by fetch
	}
}

func jitter(d time.Duration) time.Duration {
	spread := int64(d / 10)
	if spread <= 0 {
		return d
	}
	return d - time.Duration(spread) + time.Duration(rand.Int64N(2*spread+1))
}
