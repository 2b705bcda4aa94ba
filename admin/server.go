// Package admin is `odin admin`: the JSON-over-HTTP service the dashboard's
// "Settings > API Keys" page and CI scripts use to issue, list, read, roll
// and revoke keys, log sessions out, receive Clerk webhooks and read the
// audit log (docs/CONTRACT.md, "Admin API"). Every error carries the error body.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/internal/requestid"
	"github.com/odin-scan/odin-authz/internal/telemetry"
	"github.com/odin-scan/odin-authz/jwtauth"
	"github.com/odin-scan/odin-authz/keystore"
)

// Options are the admin service's collaborators and settings.
type Options struct {
	Store   keystore.Store
	Manager *keystore.Manager
	// Verifier checks callers' Clerk session tokens; nil: only the operator
	// token is accepted.
	Verifier *jwtauth.Verifier
	// Revoked refuses callers whose session was logged out.
	Revoked *keystore.RevokedSessions
	// AllowNoSessionID admits session tokens without sid, as odin authz's
	// setting of the same name (credential.Admission).
	AllowNoSessionID bool
	// AllowImpersonatedKeys lets an impersonated session (Clerk's act
	// claim) create and roll keys; by default that is a 403.
	AllowImpersonatedKeys bool
	// Reverify, when set, is the step-up verification a session token
	// needs for the sensitive operations (creating and rolling keys): a
	// session whose factors were not verified recently enough gets 403
	// with Clerk's reverification hint. The operator token is exempt. Nil:
	// off.
	Reverify *jwtauth.Reverification
	// OperatorToken is ODIN_ADMIN_TOKEN: full access, compared in constant
	// time. Empty: no operator access over HTTP.
	OperatorToken string
	// WebhookSecret is the Clerk (Svix) signing secret, whsec_...; empty
	// disables the webhook endpoint (404).
	WebhookSecret string
	// Scopes is the set of scopes a key may carry.
	Scopes []string
	// UserScopes are the scopes of a caller whose token carries no
	// permissions (a personal account); default: all of Scopes.
	UserScopes []string
	// OrgAdminRoles are the organisation roles that manage the
	// organisation's keys, default ["org:admin"].
	OrgAdminRoles []string
	// Tiers, when set, are the tier names a request may give a key (the
	// tiers odin authz is configured with): another is 400. Empty: any
	// well-formed name, which odin authz limits as its default tier when
	// it does not know it.
	Tiers []string
	// MaxBodyBytes bounds a request body, default 64 KiB.
	MaxBodyBytes int64
	// FailedAuthPerMinute and FailedAuthBurst bound failed authentications
	// per client address (default 10 a minute, burst 20); past them the
	// client's failures get 429 until its budget refills. A valid
	// credential is always served.
	FailedAuthPerMinute, FailedAuthBurst int
	// GitHubSecretScanning configures the endpoint GitHub reports leaked
	// keys to; off by default.
	GitHubSecretScanning GitHubSecretScanning
	// TrustedProxies are the addresses or CIDR ranges of the proxies in
	// front of the admin API; from them, the client address is the
	// rightmost X-Forwarded-For entry that is not a trusted proxy. Empty:
	// the socket peer is the client, and X-Forwarded-For is ignored.
	TrustedProxies []string
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Server is the admin API.
type Server struct {
	opts        Options
	log         *slog.Logger
	webhook     *svix.Webhook
	secretScan  *secretScanning // nil: GitHub secret scanning is disabled
	authFail    *failedAuthLimiter
	clientAddr  *clientAddress
	scopes      map[string]bool
	tiers       map[string]bool // nil: any well-formed tier
	requests    *prometheus.CounterVec
	unconfirmed *prometheus.CounterVec
	handlerOnce sync.Once
	handler     http.Handler
}

// DefaultKeyScopes are the scopes a key may carry when Options.Scopes is
// empty.
func DefaultKeyScopes() []string { return []string{"scans:read", "scans:write"} }

// DefaultOrgAdminRoles are the organisation roles that manage an
// organisation's keys when Options.OrgAdminRoles is empty.
func DefaultOrgAdminRoles() []string { return []string{"org:admin"} }

// New validates opts and returns the server.
func New(opts Options) (*Server, error) {
	if opts.Store == nil || opts.Manager == nil || opts.Revoked == nil {
		return nil, errors.New("admin: store, manager and revoked sessions are required")
	}
	if opts.OperatorToken == "" && opts.Verifier == nil {
		return nil, errors.New("admin: no way to authenticate callers: set an operator token (ODIN_ADMIN_TOKEN) or a JWKS (ODIN_JWKS_URL)")
	}
	if opts.OperatorToken != "" && len(opts.OperatorToken) < 32 {
		return nil, errors.New("admin: the operator token must be at least 32 characters")
	}
	if len(opts.Scopes) == 0 {
		opts.Scopes = DefaultKeyScopes()
	}
	if opts.UserScopes == nil {
		opts.UserScopes = opts.Scopes
	}
	if len(opts.OrgAdminRoles) == 0 {
		opts.OrgAdminRoles = DefaultOrgAdminRoles()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.FailedAuthPerMinute <= 0 {
		opts.FailedAuthPerMinute = 10
	}
	if opts.FailedAuthBurst <= 0 {
		opts.FailedAuthBurst = 20
	}
	s := &Server{opts: opts, log: opts.Logger, scopes: map[string]bool{},
		authFail: newFailedAuthLimiter(opts.FailedAuthPerMinute, opts.FailedAuthBurst)}
	var err error
	if s.clientAddr, err = newClientAddress(opts.TrustedProxies); err != nil {
		return nil, err
	}
	for _, sc := range opts.Scopes {
		s.scopes[sc] = true
	}
	if len(opts.Tiers) > 0 {
		s.tiers = map[string]bool{}
		for _, t := range opts.Tiers {
			s.tiers[t] = true
		}
	}
	if opts.WebhookSecret != "" {
		wh, err := svix.NewWebhook(opts.WebhookSecret)
		if err != nil {
			return nil, errors.New("admin: the webhook secret is not a valid Svix secret (whsec_...)")
		}
		s.webhook = wh
	}
	if s.secretScan, err = newSecretScanning(opts); err != nil {
		return nil, err
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_requests_total",
		Help: "Admin API requests by route and status code.",
	}, []string{"route", "code"})
	s.unconfirmed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_unconfirmed_changes_total",
		Help: "Changes committed but not confirmed on every replica (answered 503 with committed: true), by kind: key_revoke, key_roll, key_update, key_disable, key_enable, session_revoke, webhook.",
	}, []string{"kind"})
	for _, kind := range unconfirmedKinds {
		s.unconfirmed.WithLabelValues(kind) // exported at 0 from the start, so rate() sees the first one
	}
	for _, c := range []prometheus.Collector{s.requests, s.unconfirmed} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Handler routes the API. Operations endpoints (/healthz, /readyz,
// /metrics) are mounted beside it by the command.
func (s *Server) Handler() http.Handler {
	s.handlerOnce.Do(func() { s.handler = s.routes() })
	return s.handler
}

// routes is the API's router, built once (Handler).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h func(http.ResponseWriter, *http.Request, *caller) error) {
		mux.Handle(pattern, s.wrap(pattern, callerRequired, h))
	}
	route("POST /v1/keys", s.reverified(s.createKey))
	route("GET /v1/keys", s.listKeys)
	route("GET /v1/keys/{id}", s.getKey)
	route("POST /v1/keys/{id}/revoke", s.revokeKey)
	route("POST /v1/keys/{id}/roll", s.reverified(s.rollKey))
	route("PATCH /v1/keys/{id}", s.updateKey)
	route("POST /v1/keys/{id}/disable", s.disableKey)
	route("POST /v1/keys/{id}/enable", s.reverified(s.enableKey))
	route("POST /v1/sessions/{sid}/revoke", s.revokeSession)
	route("GET /v1/audit-log", s.auditLog)
	route("GET /v1/webhooks/deliveries", s.listWebhookDeliveries)
	route("POST /v1/webhooks/deliveries/{id}/retry", s.retryWebhookDelivery)
	mux.Handle("POST /v1/webhooks/clerk", s.wrap("POST /v1/webhooks/clerk", noCaller, s.clerkWebhook))
	mux.Handle(secretScanningRoute, s.wrap(secretScanningRoute, noCaller, s.githubSecretScanning))
	mux.HandleFunc("GET /openapi.json", serveOpenAPI)
	unknown := s.wrap("unknown", noCaller, func(http.ResponseWriter, *http.Request, *caller) error {
		return errNotFound("no such endpoint")
	})
	mux.Handle("/", unknown)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if UncleanPath(r.URL.Path) { // ServeMux would redirect, with an HTML body
			unknown.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// checkTier refuses a tier a request names that is not among Options.Tiers
// (when they are set): odin authz would limit it as its default tier, and
// a misspelt tier would go unnoticed until its keys are throttled.
func (s *Server) checkTier(tier string) error {
	if s.tiers == nil || s.tiers[tier] {
		return nil
	}
	known := make([]string, 0, len(s.tiers))
	for t := range s.tiers {
		known = append(known, t)
	}
	slices.Sort(known)
	return errInvalid("tier", "tier: unknown tier "+strconv.Quote(tier)+" (known: "+strings.Join(known, ", ")+")")
}

// UncleanPath reports whether p has an empty segment or a "." or ".."
// segment ("/v1//keys", "/v1/keys/../audit-log"): no endpoint has one,
// and net/http's ServeMux would answer it with a redirect and an HTML
// body rather than the API's 404 error body. A server that mounts the API
// behind a ServeMux of its own sends such paths straight to Handler.
func UncleanPath(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

// access says whether a route authenticates its caller.
type access uint8

const (
	// callerRequired: the route needs an authenticated caller; its
	// handler receives it.
	callerRequired access = iota
	// noCaller: the route authenticates no one (the webhook checks its own
	// signature); its handler receives a nil caller.
	noCaller
)

// wrap gives every handler a request id, a body limit, panic recovery,
// authentication (for callerRequired), the error body and a metric.
func (s *Server) wrap(route string, acc access, h func(http.ResponseWriter, *http.Request, *caller) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The id reaches the audit log, logs and a response header: a client's
		// is taken only when it is short printable ASCII, as odin authz does.
		reqID := requestid.FromHeader(r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Request-Id", reqID)
		r.Body = http.MaxBytesReader(w, r.Body, s.bodyLimit(route))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic in admin handler", "route", route, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				writeError(rec, reqID, errInternal())
			}
			s.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		}()
		var c *caller
		if acc == callerRequired {
			var err error
			if c, err = s.callerOf(r); err != nil {
				var ae *apiError
				if errors.As(err, &ae) && ae.code == denial.Unauthorized {
					if throttled, retry := s.authFail.failed(s.clientAddr.of(r)); throttled {
						rec.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
						err = errTooManyFailures()
					}
				}
				writeError(rec, reqID, err)
				s.log.Info("admin request refused", "route", route, "request_id", reqID, "error", err.Error())
				return
			}
			c.requestID = reqID
			telemetry.AnnotateActor(r.Context(), c.kind())
		}
		err := checkQuery(r)
		if err == nil {
			err = h(rec, r, c)
		}
		if err != nil {
			writeError(rec, reqID, err)
			level := slog.LevelInfo
			var ae *apiError
			if !errors.As(err, &ae) || ae.status() >= 500 {
				level = slog.LevelError
			}
			s.log.Log(r.Context(), level, "admin request failed", "route", route, "request_id", reqID, "error", err.Error())
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// apiError is an error with its error code (which fixes the HTTP status)
// and message.
type apiError struct {
	code    denial.Code
	message string
	field   string
	// reverify, on a 403, is the requirement the session missed: the body
	// carries Clerk's reverification hint.
	reverify *jwtauth.Reverification
}

func (e *apiError) Error() string { return string(e.code) + ": " + e.message }

// status is the HTTP status the error is answered with.
func (e *apiError) status() int { return e.code.Status() }

func errInvalid(field, message string) *apiError {
	return &apiError{code: denial.InvalidRequest, message: message, field: field}
}
func errNotFound(message string) *apiError {
	return &apiError{code: denial.NotFound, message: message}
}
func errForbidden(message string) *apiError {
	return &apiError{code: denial.Forbidden, message: message}
}
func errConflict(message string) *apiError {
	return &apiError{code: denial.Conflict, message: message}
}
func errUnauthorized() *apiError {
	return &apiError{code: denial.Unauthorized, message: denial.MessageUnauthorized}
}
func errUnavailable() *apiError {
	return &apiError{code: denial.Unavailable, message: "Service temporarily unavailable"}
}
func errTooManyFailures() *apiError {
	return &apiError{code: denial.RateLimited, message: "Too many failed authentication attempts"}
}
func errInternal() *apiError {
	return &apiError{code: denial.Internal, message: "Internal error"}
}

// writeError renders any error as the error body, with the challenge on a
// 401. Errors that are not an apiError are internal: their text is logged,
// never sent.
func writeError(w http.ResponseWriter, reqID string, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		switch {
		case errors.Is(err, keystore.ErrNotFound):
			ae = errNotFound("no such key")
		case errors.Is(err, keystore.ErrConflict):
			ae = errConflict(err.Error())
		case errors.Is(err, keystore.ErrInvalid):
			ae = errInvalid("", err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			ae = errUnavailable()
		default:
			ae = errUnavailable()
		}
	}
	b := denial.New(ae.code, ae.message, reqID, time.Now())
	if ae.reverify != nil {
		b = denial.NewReverification(ae.reverify.Level.String(), ae.reverify.AfterMinutes(), reqID, time.Now())
		b.Error.Message = ae.message
	}
	b.Error.Field = ae.field
	if ae.code.Challenges() {
		w.Header().Set(denial.ChallengeHeader, denial.Challenge)
	}
	_ = writeJSON(w, ae.status(), b)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// checkQuery refuses a query string that does not parse (a malformed
// %-escape, a ';'): r.URL.Query() would drop the broken parameter
// silently, so that "limit=%zz" would answer a default page instead of
// saying what is wrong.
func checkQuery(r *http.Request) error {
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		return errInvalid("", "the query string is not valid: a malformed %-escape or a ';' separator")
	}
	return nil
}

// decodeOptional is decode for an optional body: an empty one (however it
// was sent, chunked included) leaves v as it is.
func decodeOptional(r *http.Request, v any) error {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		return errInvalid("", "request body too large")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	return decode(r, v)
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors that name what is wrong.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		var timeErr *time.ParseError
		switch {
		case errors.As(err, &maxErr):
			return errInvalid("", "request body too large")
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return errInvalid("", "request body must be a JSON object, not "+typeErr.Value)
		case errors.As(err, &typeErr):
			return errInvalid(typeErr.Field, "wrong type for field "+typeErr.Field)
		case errors.As(err, &timeErr), strings.HasPrefix(err.Error(), "Time.UnmarshalJSON:"):
			// expires_at is the only time a request body holds; time's own
			// message shows Go's layout string, which helps no one.
			return errInvalid("expires_at", "expires_at: must be an RFC 3339 time, e.g. 2030-01-15T10:30:00Z")
		case err.Error() == "EOF":
			return errInvalid("", "request body is empty: a JSON object is required")
		}
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			// The body is valid JSON: say what is wrong with it. The field
			// may be nested (in rate_limit), so it is named in the message
			// only.
			return errInvalid("", "unknown field "+field)
		}
		return errInvalid("", "request body is not valid JSON: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF { // anything after the object, even a stray "}"
		return errInvalid("", "request body has data after the JSON object")
	}
	return nil
}
