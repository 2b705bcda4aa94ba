// Package secretscan verifies the reports of GitHub's secret scanning
// partner program: GitHub POSTs the tokens it found in public to the
// provider, signed with ECDSA (NIST P-256, SHA-256) by one of the keys it
// publishes in a JSON document; the request names the key and carries the
// signature in two headers. This package keeps those public keys (fetched,
// cached, refreshed when an unknown key signs, at most once per interval)
// and checks a request's signature over its raw body. What a report asks
// is the admin API's business (admin/secretscanning.go).
//
// The formats are GitHub's, from its documentation and samples:
//   - docs.github.com, "Secret scanning partner program" (source:
//     github/docs content/code-security/secret-scanning/
//     secret-scanning-partnership-program/secret-scanning-partner-program.md):
//     the headers Github-Public-Key-Identifier and
//     Github-Public-Key-Signature, the key document at
//     https://api.github.com/meta/public_keys/secret_scanning with
//     public_keys[].key_identifier, .key (PEM) and .is_current, the
//     signature "ECDSA-NIST-P256V1-SHA256" over the raw body;
//   - github-technology-partners/signature-verification go/main.go: the
//     signature is standard base64 of an ASN.1 DER ECDSA signature (r, s)
//     over the SHA-256 of the body; the key a PKIX public key in PEM;
//   - pypi/warehouse warehouse/integrations/verifier.py: a provider caches
//     the key document and fetches it again when an unknown key signs.
package secretscan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The request headers GitHub signs a report with (Go canonicalises them;
// GitHub sends them in any case).
const (
	HeaderKeyID     = "Github-Public-Key-Identifier"
	HeaderSignature = "Github-Public-Key-Signature"
)

// DefaultKeysURL is GitHub's document of secret scanning public keys.
const DefaultKeysURL = "https://api.github.com/meta/public_keys/secret_scanning"

// Defaults of Options.
const (
	DefaultFetchTimeout       = 10 * time.Second
	DefaultMinRefreshInterval = time.Minute
	// KeysMaxAge is how long a fetched document is trusted without a
	// fetch: past it the next report fetches it again (rate-limited), so
	// that a key GitHub withdrew stops being accepted. When that fetch
	// fails, the keys already known still verify: GitHub's API being down
	// must not stop revocations.
	KeysMaxAge = 24 * time.Hour
	// maxDocumentBytes bounds the key document read (GitHub's is about
	// 1 KiB per key).
	maxDocumentBytes = 1 << 20
	// maxKeyIDLen and maxSignatureLen bound the headers: GitHub's key
	// identifiers are 64 hex characters, a P-256 DER signature at most 72
	// bytes (96 in base64).
	maxKeyIDLen     = 256
	maxSignatureLen = 256
)

// Why a signature is refused: the errors Verify returns, and the values of
// odin_admin_secret_scanning_signature_failures_total's reason label.
var (
	// ErrMissingSignature: a header is missing or empty.
	ErrMissingSignature = errors.New("missing_signature")
	// ErrMalformedSignature: the signature is not base64, or a header is
	// too long.
	ErrMalformedSignature = errors.New("malformed_signature")
	// ErrUnknownKey: no published key has that identifier, even after a
	// fetch of the document (or a fetch was not allowed yet).
	ErrUnknownKey = errors.New("unknown_key")
	// ErrBadSignature: the signature does not verify with the key.
	ErrBadSignature = errors.New("bad_signature")
)

// ErrKeysUnavailable is Verify's error when the key is not known and the
// document could not be fetched: the report cannot be judged, so it is
// neither accepted nor refused as forged (answer 503; GitHub retries).
var ErrKeysUnavailable = errors.New("secret scanning public keys unavailable")

// Options configure a Verifier.
type Options struct {
	// KeysURL is the key document's URL (default DefaultKeysURL).
	KeysURL string
	// Token, when set, is sent as a bearer token with the fetch: GitHub's
	// API limits unauthenticated requests per address; any token (no
	// scopes) lifts that limit.
	Token string
	// FetchTimeout bounds one fetch of the document (default
	// DefaultFetchTimeout).
	FetchTimeout time.Duration
	// MinRefreshInterval is the least time between two fetches (default
	// DefaultMinRefreshInterval): reports signed by unknown keys fetch the
	// document at most once per interval, so forged identifiers cannot
	// make us hammer GitHub.
	MinRefreshInterval time.Duration
	// Client fetches the document (default: a client of its own).
	Client *http.Client
	// Now is the clock (default time.Now), for tests.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Verifier checks reports' signatures against GitHub's published keys.
// It is safe for concurrent use.
type Verifier struct {
	opts Options

	mu        sync.Mutex
	keys      map[string]*ecdsa.PublicKey
	fetchedAt time.Time     // the last successful fetch
	triedAt   time.Time     // the last fetch attempt, for the rate limit
	lastErr   error         // the last attempt's error, nil when it succeeded
	inflight  chan struct{} // closed when the fetch under way ends

	fetches  *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// Values of odin_admin_secret_scanning_key_fetches_total's result label.
const (
	fetchOK          = "ok"
	fetchError       = "error"
	fetchRateLimited = "rate_limited"
)

// New returns a verifier; the first report fetches the document.
func New(opts Options) (*Verifier, error) {
	if opts.KeysURL == "" {
		opts.KeysURL = DefaultKeysURL
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.MinRefreshInterval <= 0 {
		opts.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	v := &Verifier{opts: opts, keys: map[string]*ecdsa.PublicKey{}}
	v.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_secret_scanning_key_fetches_total",
		Help: "Fetches of GitHub's secret scanning public keys, by result: ok, error, rate_limited (an unknown key identifier found the last fetch too recent).",
	}, []string{"result"})
	v.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_secret_scanning_signature_failures_total",
		Help: "Secret scanning reports refused for their signature (401), by reason: missing_signature, malformed_signature, unknown_key, bad_signature.",
	}, []string{"reason"})
	for _, r := range []string{fetchOK, fetchError, fetchRateLimited} {
		v.fetches.WithLabelValues(r)
	}
	for _, err := range []error{ErrMissingSignature, ErrMalformedSignature, ErrUnknownKey, ErrBadSignature} {
		v.failures.WithLabelValues(err.Error())
	}
	for _, c := range []prometheus.Collector{v.fetches, v.failures} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("secret scanning metrics: %w", err)
		}
	}
	return v, nil
}

// Verify checks that body was signed by the GitHub key the request's
// headers name. It returns nil for a genuine report; ErrMissingSignature,
// ErrMalformedSignature, ErrUnknownKey or ErrBadSignature for one to refuse
// (401); or an error wrapping ErrKeysUnavailable when the key is not known
// and the document could not be fetched (503).
func (v *Verifier) Verify(ctx context.Context, h http.Header, body []byte) error {
	err := v.verify(ctx, h, body)
	if err != nil && !errors.Is(err, ErrKeysUnavailable) {
		v.failures.WithLabelValues(err.Error()).Inc()
	}
	return err
}

func (v *Verifier) verify(ctx context.Context, h http.Header, body []byte) error {
	keyID, sig64 := h.Get(HeaderKeyID), h.Get(HeaderSignature)
	if keyID == "" || sig64 == "" {
		return ErrMissingSignature
	}
	if len(keyID) > maxKeyIDLen || len(sig64) > maxSignatureLen {
		return ErrMalformedSignature
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		return ErrMalformedSignature
	}
	key, err := v.key(ctx, keyID)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(key, digest[:], sig) {
		return ErrBadSignature
	}
	return nil
}

// key returns the public key with identifier id: from the cache while the
// document is fresh, else after a fetch when the rate limit allows one.
func (v *Verifier) key(ctx context.Context, id string) (*ecdsa.PublicKey, error) {
	for {
		v.mu.Lock()
		now := v.opts.Now()
		k, known := v.keys[id]
		fresh := !v.fetchedAt.IsZero() && now.Sub(v.fetchedAt) < KeysMaxAge
		if known && fresh {
			v.mu.Unlock()
			return k, nil
		}
		if wait := v.inflight; wait != nil { // another report is fetching: take its result
			v.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, ctx.Err())
			}
		}
		if !v.triedAt.IsZero() && now.Sub(v.triedAt) < v.opts.MinRefreshInterval {
			lastErr := v.lastErr
			v.mu.Unlock()
			v.fetches.WithLabelValues(fetchRateLimited).Inc()
			switch {
			case known: // stale, and the refresh was tried: keep trusting it
				return k, nil
			case lastErr != nil:
				return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, lastErr)
			}
			return nil, ErrUnknownKey
		}
		done := make(chan struct{})
		v.inflight, v.triedAt = done, now
		v.mu.Unlock()

		keys, err := v.fetch(ctx)

		v.mu.Lock()
		v.inflight, v.lastErr = nil, err
		if err == nil {
			v.keys, v.fetchedAt = keys, v.opts.Now()
		}
		k, known = v.keys[id]
		v.mu.Unlock()
		close(done)
		switch {
		case err == nil && known:
			v.fetches.WithLabelValues(fetchOK).Inc()
			return k, nil
		case err == nil:
			v.fetches.WithLabelValues(fetchOK).Inc()
			return nil, ErrUnknownKey
		}
		v.fetches.WithLabelValues(fetchError).Inc()
		v.opts.Logger.Warn("fetch GitHub's secret scanning public keys", "url", v.opts.KeysURL, "error", err.Error())
		if known { // a stale key still verifies while GitHub's API is down
			return k, nil
		}
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	}
}

// keyDocument is GitHub's document of public keys.
type keyDocument struct {
	PublicKeys []struct {
		KeyIdentifier string `json:"key_identifier"`
		Key           string `json:"key"`
		IsCurrent     bool   `json:"is_current"`
	} `json:"public_keys"`
}

// fetch reads and parses the key document. A document without a single
// usable key is an error: the keys known before are kept.
func (v *Verifier) fetch(ctx context.Context) (map[string]*ecdsa.PublicKey, error) {
	// A report whose sender gave up must not cancel a fetch other reports
	// wait for.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.opts.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.opts.KeysURL, nil)
	if err != nil {
		return nil, fmt.Errorf("key document request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if v.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+v.opts.Token)
	}
	resp, err := v.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch key document: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch key document: status %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read key document: %w", err)
	}
	if len(raw) > maxDocumentBytes {
		return nil, fmt.Errorf("key document larger than %d bytes", maxDocumentBytes)
	}
	return ParseKeys(raw)
}

// ParseKeys parses a key document into its P-256 keys by identifier.
// Entries that are not P-256 public keys in PEM are skipped; a document
// with none is an error.
func ParseKeys(raw []byte) (map[string]*ecdsa.PublicKey, error) {
	var doc keyDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("parse key document: %w", err)
	}
	keys := make(map[string]*ecdsa.PublicKey, len(doc.PublicKeys))
	for _, e := range doc.PublicKeys {
		if e.KeyIdentifier == "" {
			continue
		}
		block, _ := pem.Decode([]byte(e.Key))
		if block == nil {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			continue
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			continue
		}
		keys[e.KeyIdentifier] = ec
	}
	if len(keys) == 0 {
		return nil, errors.New("key document has no P-256 public key")
	}
	return keys, nil
}
