// Package extauthz decides whether a request may pass: credential →
// identity → answer. One decision core (Decide) serves the gRPC Check API of
// Envoy's ext_authz filter and the HTTP forward-auth API; each front end only
// renders the Decision.
package extauthz

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/extauthz/policy"
	"github.com/odin-scan/odin-authz/extauthz/ratelimit"
	"github.com/odin-scan/odin-authz/internal/requestid"
	"github.com/odin-scan/odin-authz/keystore"
)

// Outcome is the kind of a decision.
type Outcome uint8

// The outcomes of the contract's decisions table (docs/CONTRACT.md).
const (
	Allow Outcome = iota
	DenyUnauthorized
	DenyForbidden
	DenyRateLimited
	DenyUnavailable
	// DenyMisconfigured: the deployment, not the caller, is at fault (a
	// forward-auth proxy that does not send what the configured mode says
	// it sends). Retrying does not help; an operator must fix it.
	DenyMisconfigured
	numOutcomes
)

// outcomeInfo is the one table that maps an outcome to what each protocol
// says: the error body's code (which fixes the HTTP status, see
// denial.Code.Status) and default message, and the gRPC status. The labels
// and code strings double as metric label values.
type outcomeInfo struct {
	label   string
	code    denial.Code
	message string
	grpc    codes.Code
}

var outcomes = [numOutcomes]outcomeInfo{
	Allow:             {"allow", "", "", codes.OK},
	DenyUnauthorized:  {"unauthorized", denial.Unauthorized, denial.MessageUnauthorized, codes.Unauthenticated},
	DenyForbidden:     {"forbidden", denial.Forbidden, "Insufficient permissions for this resource", codes.PermissionDenied},
	DenyRateLimited:   {"rate_limited", denial.RateLimited, "Rate limit exceeded", codes.ResourceExhausted},
	DenyUnavailable:   {"unavailable", denial.Unavailable, "Authentication service temporarily unavailable", codes.Unavailable},
	DenyMisconfigured: {"misconfigured", denial.Internal, "Authentication service misconfigured", codes.Internal},
}

func (o Outcome) String() string { return outcomes[o].label }

// HTTPStatus is the status the client receives.
func (o Outcome) HTTPStatus() int {
	if o == Allow {
		return http.StatusOK
	}
	return outcomes[o].code.Status()
}

// Code is the error code ("" for Allow).
func (o Outcome) Code() string { return string(outcomes[o].code) }

// Request is what a decision needs, whatever protocol carried it.
type Request struct {
	Method  string
	Path    string // with the query string, as Envoy sends :path
	Host    string
	Headers Headers
	// Misconfigured, when set, is why the original request is not known
	// (a forward-auth proxy did not send what its mode promises): it is
	// refused as DenyMisconfigured with that reason, whatever it carries.
	Misconfigured string
	// Client is where the client's address is read, when a key with a
	// network allowlist asks for it.
	Client ClientSource
}

// Decision is the answer for one request: Allow with a Principal, or a
// denial with a fixed Reason (for logs and metrics, never a secret).
type Decision struct {
	Outcome    Outcome
	Reason     string
	Credential Credential
	Principal  *Principal
	RequestID  string
	Message    string // overrides the outcome's default message
	RetryAfter time.Duration
	// RateLimit is the limiter's answer when one was asked (HasRateLimit).
	RateLimit    ratelimit.Result
	HasRateLimit bool
	// StoreWait is the part of the decision spent waiting for PostgreSQL
	// or Redis (the authenticator's lookups, the rate limiter's lease);
	// the rest of it is odin's own.
	StoreWait time.Duration
	// Reverify is the requirement a session token missed, when the
	// denial asks it to verify a factor again: the body then carries
	// Clerk's reverification hint (denial.NewReverification).
	Reverify *policy.Reverify
	// ClientAddr is the client's address when the decision read it (a key
	// with a network allowlist); the zero Addr otherwise.
	ClientAddr netip.Addr
}

// Body renders the error body for a denial.
func (d *Decision) Body(now time.Time) []byte {
	msg := d.Message
	if msg == "" {
		msg = outcomes[d.Outcome].message
	}
	if d.Reverify != nil {
		b := denial.NewReverification(d.Reverify.Level.String(), d.Reverify.AfterMinutes(), d.RequestID, now)
		b.Error.Message = msg
		return b.Compact()
	}
	b := denial.New(outcomes[d.Outcome].code, msg, d.RequestID, now)
	return b.Compact()
}

// DenialHeaders are the response headers of a denial: content-type always,
// the challenge on 401 (RFC 6750), retry-after on 429.
func (d *Decision) DenialHeaders() []Pair {
	h := []Pair{{"content-type", denial.ContentType}, {"x-request-id", d.RequestID}}
	if outcomes[d.Outcome].code.Challenges() {
		h = append(h, Pair{denial.ChallengeHeader, denial.Challenge})
	}
	if d.Outcome == DenyRateLimited {
		secs := int((d.RetryAfter + time.Second - 1) / time.Second)
		h = append(h, Pair{"retry-after", strconv.Itoa(max(secs, 1))})
	}
	return append(h, d.RateLimitHeaders()...)
}

// Authorizer is the decision core.
type Authorizer struct {
	policy  *policy.Holder     // nil: the built-in default policy (docs/CONTRACT.md, method, path and scopes)
	limiter *ratelimit.Limiter // nil: no rate limits
	limitBy string
	// authenticators decide each kind of credential; nil: that kind is
	// refused (session tokens when no JWKS is configured).
	authenticators [numCredentialKinds]Authenticator
	log            *slog.Logger
	metrics        *Metrics
}

// Options are the Authorizer's collaborators.
type Options struct {
	// Policy maps routes to required scopes; nil: the built-in default.
	Policy *policy.Holder
	// Limiter enforces the tier rate limits; nil: none.
	Limiter *ratelimit.Limiter
	// LimitBy is what a limit counts: "credential" (the API key, or the
	// session token's user; the default) or "org" (the organisation when
	// there is one).
	LimitBy  string
	Keys     *keystore.Cache[*Principal]
	Sessions *Sessions               // optional: without it every JWT is refused
	Usage    *keystore.UsageRecorder // optional
	Logger   *slog.Logger
	Metrics  *Metrics
}

// NewAuthorizer returns the decision core.
func NewAuthorizer(o Options) *Authorizer {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	a := &Authorizer{policy: o.Policy, limiter: o.Limiter, limitBy: o.LimitBy, log: o.Logger, metrics: o.Metrics}
	a.authenticators[CredentialAPIKey] = &apiKeys{keys: o.Keys, usage: o.Usage}
	if o.Sessions != nil { // no JWKS configured: no bearer but a key can be trusted
		a.authenticators[CredentialJWT] = o.Sessions
	}
	return a
}

// Decide authenticates one request. It never returns an error: every failure
// is a denial, and a store that cannot be reached is DenyUnavailable, never
// DenyUnauthorized nor Allow.
func (a *Authorizer) Decide(ctx context.Context, r *Request) Decision {
	start := time.Now()
	d := a.decide(ctx, r, start)
	a.observe(&d, r, time.Since(start))
	return d
}

func (a *Authorizer) decide(ctx context.Context, r *Request, now time.Time) Decision {
	d := Decision{RequestID: requestID(r.Headers)}
	d.Credential = ExtractCredential(r.Headers)
	if r.Misconfigured != "" {
		d.Outcome, d.Reason = DenyMisconfigured, r.Misconfigured
		return d
	}
	pol := policy.Default()
	if a.policy != nil {
		pol = a.policy.Current()
	}
	rule := pol.Match(r.Method, r.Path)
	if rule.Public() { // no credential needed; whatever the client sent proves nothing
		d.Outcome, d.Reason, d.Principal = Allow, "public_route", anonymous
		return d
	}
	switch d.Credential.Kind {
	case CredentialNone:
		d.Outcome, d.Reason, d.Message = DenyUnauthorized, "missing", denial.MessageMissing
	case CredentialMalformed:
		d.Outcome, d.Reason = DenyUnauthorized, d.Credential.Reason
	default:
		auth := a.authenticators[d.Credential.Kind]
		if auth == nil {
			d.Outcome, d.Reason = DenyUnauthorized, notConfigured[d.Credential.Kind]
			break
		}
		res := auth.Authenticate(ctx, d.Credential.Value, now)
		d.Outcome, d.Reason, d.Principal, d.StoreWait = res.Outcome, res.Reason, res.Principal, res.StoreWait
		d.Message = res.Message
	}
	// A key's network allowlist comes first: a refused network learns
	// nothing of the route's scopes and spends no rate-limit budget.
	if d.Outcome == Allow && d.Principal.networks != nil {
		checkNetwork(&d, r, d.Principal.networks)
	}
	if d.Outcome == Allow {
		if res := rule.Check(d.Principal.Scopes); !res.Allowed() {
			d.Outcome, d.Message = DenyForbidden, res.Message()
			d.Reason = "missing_scope"
			if res.Invalid {
				d.Reason = "invalid_path"
			}
		}
	}
	if d.Outcome == Allow {
		if rv := rule.Reverify(); rv != nil {
			reverify(&d, rv, rule.Name(), now)
		}
	}
	if d.Outcome == Allow && a.limiter != nil {
		a.rateLimit(ctx, &d, now)
	}
	if d.Outcome != Allow && ctx.Err() != nil && d.Outcome != DenyUnavailable {
		d.Outcome, d.Reason = DenyUnavailable, "cancelled"
	}
	return d
}

// reverify applies a rule's step-up requirement to an allowed caller: an
// API key is refused unless the rule admits keys (it cannot re-verify); a
// session token whose factors are not recent enough gets a 403 with
// Clerk's reverification hint, which the dashboard answers by prompting
// for the factor and retrying.
func reverify(d *Decision, rv *policy.Reverify, rule string, now time.Time) {
	switch {
	case d.Principal.Method != "jwt":
		if !rv.AllowAPIKeys {
			d.Outcome, d.Reason = DenyForbidden, "reverify_api_key"
			d.Message = denial.MessageReverifyAPIKey + `; rule "` + rule + `"`
		}
	case !rv.Satisfied(d.Principal.Factors, now):
		d.Outcome, d.Reason, d.Reverify = DenyForbidden, "reverification_required", rv
		d.Message = denial.MessageReverify + ": " + rv.Requirement() + `; rule "` + rule + `"`
	}
}

// rateLimit spends one request of the caller's tier, or of its API key's
// own limit when an operator gave it one: 429 when it is spent, 503 when
// the limiter is down and configured to fail closed.
func (a *Authorizer) rateLimit(ctx context.Context, d *Decision, now time.Time) {
	p := d.Principal
	key := p.limitByCredential
	if a.limitBy == "org" {
		key = p.limitByOrg
	}
	if p.RateLimit != nil {
		d.RateLimit = a.limiter.AllowOwn(ctx, key, *p.RateLimit, now)
	} else {
		d.RateLimit = a.limiter.Allow(ctx, key, p.Tier, now)
	}
	d.HasRateLimit = true
	d.StoreWait += d.RateLimit.StoreWait
	switch {
	case d.RateLimit.Allowed:
	case d.RateLimit.Unavailable:
		d.Outcome, d.Reason = DenyUnavailable, "rate_limiter_unavailable"
	default:
		d.Outcome, d.Reason, d.RetryAfter = DenyRateLimited, "rate_limited", d.RateLimit.RetryAfter
	}
}

// RateLimitHeaders are the ratelimit-* headers of a decision (none when no
// limit applied): the tier's burst, what is left, and seconds until whole.
func (d *Decision) RateLimitHeaders() []Pair {
	if !d.HasRateLimit {
		return nil
	}
	v := d.rateLimitValues()
	h := make([]Pair, len(v))
	for i, p := range v {
		h[i] = Pair{p.name, strconv.Itoa(p.value)}
	}
	return h
}

// rateLimitValues are a decision's ratelimit-* header values
// (RateLimitHeaders), kept as numbers: the gRPC answer formats them into
// its wire bytes without a string of their own.
type rateLimitValues [3]struct {
	name  string
	value int
}

func (d *Decision) rateLimitValues() rateLimitValues {
	r := d.RateLimit
	return rateLimitValues{
		{"ratelimit-limit", r.Limit},
		{"ratelimit-remaining", r.Remaining},
		{"ratelimit-reset", int((r.Reset + time.Second - 1) / time.Second)},
	}
}

// size is the size of the three headers as fields f of overwrite options.
func (v *rateLimitValues) size(f protowire.Number) int {
	n := 0
	for _, h := range v {
		var buf [20]byte
		n += sizeHeaderOption(f, h.name, strconv.AppendInt(buf[:0], int64(h.value), 10))
	}
	return n
}

// append appends the three headers as fields f of overwrite options.
func (v *rateLimitValues) append(b []byte, f protowire.Number) []byte {
	for _, h := range v {
		var buf [20]byte
		b = appendHeaderOption(b, f, h.name, strconv.AppendInt(buf[:0], int64(h.value), 10))
	}
	return b
}

// anonymous is the principal of a public route: no identity, so every
// x-odin-* header the client sent is removed.
var anonymous = NewPrincipal(Identity{})

// requestID returns the request's x-request-id when it is sane, else a fresh
// req-<random> (the rule odin admin follows too).
func requestID(h Headers) string { return requestid.FromHeader(h.Get("x-request-id")) }
