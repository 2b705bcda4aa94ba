package jwtauth

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
)

// b64 is the only base64 Verify accepts: base64url, no padding, no stray
// bits, as RFC 7515 requires.
var b64 = base64.RawURLEncoding.Strict()

// Verifier checks session JWTs against a JWKS. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	results map[string]prometheus.Counter // verification counter by reason
	keys    *keyStore
	life    context.Context // ends the background refresh and bounds waits on fetches
	// algorithms are the allowlisted algorithms (Config.Algorithms).
	algorithms map[string]algorithm
	azp        map[string]bool
	flights    flightGroup

	// beforeSignatureCheck, when set (by tests only), runs just before a
	// signature is verified.
	beforeSignatureCheck func()
}

// New validates cfg, registers the metrics on reg (nil: no metrics), tries
// one JWKS fetch bounded by cfg.FetchTimeout and returns; when that fetch
// fails the verifier answers ErrUnavailable until a later one succeeds. The
// background refresh runs until ctx ends. A nil logger discards logs.
func New(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Verifier, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jwtauth: new verifier: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "jwtauth")
	v := &Verifier{
		cfg:        cfg,
		logger:     logger,
		life:       ctx,
		algorithms: make(map[string]algorithm, len(cfg.Algorithms)),
		azp:        make(map[string]bool, len(cfg.AuthorizedParties)),
		flights:    flightGroup{m: make(map[[sha256.Size]byte]*flight)},
	}
	for _, a := range cfg.Algorithms {
		v.algorithms[a] = algorithms[a] // withDefaults allowed supported ones only
	}
	for _, p := range cfg.AuthorizedParties {
		v.azp[p] = true
	}
	v.keys = &keyStore{
		url:          cfg.JWKSURL,
		client:       cfg.HTTPClient,
		fetchTimeout: cfg.FetchTimeout,
		logger:       logger,
		life:         ctx,
	}
	if v.metrics, err = newMetrics(reg, v.keys); err != nil {
		return nil, err
	}
	v.keys.metrics = v.metrics
	v.results = make(map[string]prometheus.Counter, len(allReasons))
	for _, r := range allReasons {
		v.results[r] = v.metrics.verifications.WithLabelValues(r)
	}
	// The first fetch is bounded by FetchTimeout inside fetch, so a dead
	// identity provider delays start-up by that much at most; its failure
	// is logged there and retried by the background loop.
	_ = v.keys.refresh(ctx, 0)
	go v.keys.refreshLoop(ctx, cfg.RefreshInterval)
	return v, nil
}

// Ready reports whether a key set is loaded, for readiness checks. It stays
// true while the endpoint fails after a first success: the last good set is
// still used.
func (v *Verifier) Ready() bool { return v.keys.load() != nil }

// Verify checks token and returns its Session. Errors wrap ErrInvalidToken
// (answer 401) or ErrUnavailable (answer 503), or are ctx's error. Concurrent
// calls with the same token share one verification.
func (v *Verifier) Verify(ctx context.Context, token string) (*Session, error) {
	s, err := v.verify(ctx, token)
	v.results[Reason(err)].Inc()
	return s, err
}

func (v *Verifier) verify(ctx context.Context, token string) (*Session, error) {
	if len(token) > MaxTokenSize {
		return nil, invalid(ReasonTooLarge, fmt.Sprintf("token longer than %d bytes", MaxTokenSize))
	}
	if !LooksLikeJWT(token) {
		return nil, invalid(ReasonMalformed, "not three base64url segments")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("jwtauth: verify: %w", err)
	}
	// The flight key is a digest: the token itself is never kept as a key.
	s, owned, err := v.flights.do(ctx, sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token))),
		func(mayFetch bool) (*Session, error) { return v.verifyOnce(token, mayFetch) })
	if err != nil {
		return nil, err
	}
	if !owned {
		s = s.clone()
	}
	return s, nil
}

// errMustFetch is verifyOnce's answer, when told not to fetch, for a token
// it cannot judge without a JWKS fetch.
var errMustFetch = errors.New("jwtauth: a key set fetch is needed")

// verifyOnce does the work of one verification. Unless mayFetch, it stops
// with errMustFetch where a JWKS fetch would be needed, so that it never
// blocks: it then runs on the first caller's goroutine (see flightGroup).
// It recovers any panic rather than let a hostile token take the process
// down.
func (v *Verifier) verifyOnce(token string, mayFetch bool) (s *Session, err error) {
	defer func() {
		if p := recover(); p != nil {
			v.logger.Error("jwt verification panicked", "panic", fmt.Sprint(p))
			s, err = nil, invalid(ReasonInternal, "internal error")
		}
	}()
	dot1 := strings.IndexByte(token, '.')
	dot2 := strings.LastIndexByte(token, '.')
	h, err := v.parseHeader(token[:dot1])
	if err != nil {
		return nil, err
	}
	keys, err := v.selectKeys(h, mayFetch)
	if err != nil {
		return nil, err
	}
	sig, err := b64.DecodeString(token[dot2+1:])
	if err != nil {
		return nil, invalid(ReasonMalformed, "signature is not base64url")
	}
	if v.beforeSignatureCheck != nil {
		v.beforeSignatureCheck()
	}
	v.metrics.signatureChecks.Inc()
	alg := v.algorithms[h.alg]
	var buf [sha512.Size]byte
	// The signing input is read in place: hashing only reads it.
	digest := alg.digest(&buf, unsafe.Slice(unsafe.StringData(token), dot2))
	var signer *publicKey
	for _, k := range keys {
		if alg.verify(k.raw, digest, sig) {
			signer = k
			break
		}
	}
	if signer == nil {
		return nil, invalid(ReasonBadSignature, "signature does not verify")
	}
	s, err = v.sessionFromPayload(token[dot1+1:dot2], time.Now())
	if err != nil {
		return nil, err
	}
	s.SigningKey = signer.ref
	return s, nil
}

// HasSigningKey reports whether the key set in use still holds the key a
// session was verified with (Session.SigningKey). A session cached before
// a refresh removed its key must not be allowed any more: that is how an
// emergency key rotation at the identity provider takes effect. The set
// only changes on a successful fetch, so while the JWKS is unreachable the
// last good set, and the sessions it verified, stay. It is an atomic load
// and a map lookup, cheap enough for every cached check.
func (v *Verifier) HasSigningKey(ref string) bool {
	set := v.keys.load()
	if set == nil {
		return false
	}
	_, ok := set.refs[ref]
	return ok
}

// header is what Verify reads from the JOSE header. Everything else is
// ignored, in particular jku, x5u, jwk and x5c: keys come from the
// configured JWKS only.
type header struct {
	alg, kid string
}

// parseHeader reads the JOSE header: one JSON object with distinct member
// names, matched exactly ("ALG" is not alg; see forEachMember).
func (v *Verifier) parseHeader(seg string) (header, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return header{}, invalid(ReasonMalformed, "header is not base64url")
	}
	var alg, kid []byte
	var crit, b64Member bool
	if !forEachMember(raw, func(name, value []byte) {
		switch string(name) {
		case "alg":
			alg = value
		case "kid":
			kid = value
		case "crit":
			crit = true
		case "b64":
			b64Member = true
		}
	}) {
		return header{}, invalid(ReasonMalformed, "header is not a JSON object with distinct member names")
	}
	var h header
	if alg == nil {
		return header{}, invalid(ReasonBadAlgorithm, "no alg")
	}
	if h.alg, err = headerString(alg); err != nil {
		return header{}, invalid(ReasonBadAlgorithm, "alg is not a string")
	}
	if _, ok := v.algorithms[h.alg]; !ok { // none, HS*, and anything not allowlisted
		return header{}, invalid(ReasonBadAlgorithm, "alg not allowed")
	}
	if crit {
		return header{}, invalid(ReasonBadHeader, "crit header: no extension is understood")
	}
	if b64Member {
		return header{}, invalid(ReasonBadHeader, "b64 header: unencoded payloads are not accepted")
	}
	if kid != nil {
		if h.kid, err = headerString(kid); err != nil {
			return header{}, invalid(ReasonBadHeader, "kid is not a string")
		}
	}
	return h, nil
}

// headerString reads a header member that must be a string. null reads as
// "", as encoding/json read it before: an alg of null is then not allowed,
// a kid of null is no kid.
func headerString(raw []byte) (string, error) {
	s, _, err := str(raw)
	return s, err
}

// selectKeys returns the keys that may have signed a token with header h.
// An unknown kid triggers one refresh, shared and rate-limited across all
// callers; a token without kid needs exactly one key fitting its alg.
func (v *Verifier) selectKeys(h header, mayFetch bool) ([]*publicKey, error) {
	set := v.keys.load()
	if set == nil {
		if !mayFetch {
			return nil, errMustFetch
		}
		_ = v.keys.refresh(v.life, v.cfg.MinRefreshInterval)
		if set = v.keys.load(); set == nil {
			return nil, &unavailableError{cause: v.keys.lastError()}
		}
	}
	fit, known := set.find(h.kid, h.alg)
	if !known && h.kid != "" {
		if !mayFetch {
			return nil, errMustFetch
		}
		// The identity provider may have rotated its keys since our last fetch.
		err := v.keys.refresh(v.life, v.cfg.MinRefreshInterval)
		set = v.keys.load()
		if fit, known = set.find(h.kid, h.alg); !known {
			// Unknown only counts when the key set could be read: while the
			// JWKS is unreachable (this refresh failed, or the last one did
			// and another may not start yet), a new kid may be the
			// provider's rotated key, and refusing it as invalid would sign
			// its users out.
			if errors.Is(err, errRateLimited) {
				err = v.keys.lastError()
			}
			if err != nil {
				return nil, &unavailableError{cause: err}
			}
			return nil, invalid(ReasonUnknownKID, "kid not in the key set")
		}
	}
	switch {
	case len(fit) == 0:
		return nil, invalid(ReasonNoKey, "no key of the set fits the token's alg")
	case h.kid == "" && len(fit) > 1:
		return nil, invalid(ReasonNoKey, "no kid and several keys fit the token's alg")
	}
	return fit, nil
}

// flightGroup collapses concurrent verifications of the same token into
// one. The work runs on the first caller's goroutine while it cannot block
// (the key set is loaded and names the token's kid: parsing, one signature
// check, the claims); where it needs a JWKS fetch it moves to its own
// goroutine, so that every caller, the first included, can stop waiting
// when its context ends without cancelling the work the others wait for.
// Callers that join a flight can always stop waiting. (x/sync/singleflight
// has neither: its callers all wait for the work.)
type flightGroup struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*flight
}

type flight struct {
	done    chan struct{}
	session *Session
	err     error
	callers int // callers sharing the flight; read by tests
}

// do runs fn once for all concurrent callers with the same key and returns
// its result. fn(false) runs first, on the first caller's goroutine, and
// must return errMustFetch rather than block; fn(true) then runs on a new
// goroutine. owned reports that no other caller shares the Session: the
// others must copy it before handing it out.
func (g *flightGroup) do(ctx context.Context, key [sha256.Size]byte, fn func(mayFetch bool) (*Session, error)) (s *Session, owned bool, err error) {
	g.mu.Lock()
	if f, ok := g.m[key]; ok {
		f.callers++
		g.mu.Unlock()
		s, err = f.wait(ctx)
		return s, false, err
	}
	f := &flight{done: make(chan struct{}), callers: 1}
	g.m[key] = f
	g.mu.Unlock()
	if s, err = fn(false); err != errMustFetch {
		return s, g.finish(key, f, s, err), err
	}
	go func() {
		s, err := fn(true)
		g.finish(key, f, s, err)
	}()
	s, err = f.wait(ctx)
	return s, false, err
}

// finish publishes a flight's result and reports whether its first caller
// was alone.
func (g *flightGroup) finish(key [sha256.Size]byte, f *flight, s *Session, err error) (alone bool) {
	f.session, f.err = s, err
	g.mu.Lock()
	delete(g.m, key)
	alone = f.callers == 1
	g.mu.Unlock()
	close(f.done)
	return alone
}

func (f *flight) wait(ctx context.Context) (*Session, error) {
	select {
	case <-f.done:
		return f.session, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("jwtauth: verify: %w", ctx.Err())
	}
}

// callers returns how many callers share the flight for key, 0 if none.
func (g *flightGroup) callers(key [sha256.Size]byte) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return f.callers
	}
	return 0
}
