// Package console is the operator console of `odin admin`: server-rendered
// HTML pages under /console/ to sign in, list, create, read, roll and
// revoke keys. Every action goes through the admin API's own handlers in
// process (admin.Server.Do), so the console has the API's authorization
// rules, validation and audit log and no copy of them. A token is traded
// once for a session cookie (HttpOnly, SameSite=Strict, Secure except on
// loopback); every form carries the session's CSRF token; every answer
// carries a strict Content-Security-Policy; all assets are embedded.
// docs/CONSOLE.md has the security checklist.
package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/odin-scan/odin-authz/admin"
	"github.com/odin-scan/odin-authz/internal/requestid"
)

// Path is where the console is mounted.
const Path = "/console/"

// DefaultSessionTTL is how long a console session lasts by default; it is
// not extended by use.
const DefaultSessionTTL = 30 * time.Minute

// DefaultMaxSessions bounds the live sessions one process keeps.
const DefaultMaxSessions = 10000

// CSP is the Content-Security-Policy of every console answer: no inline
// script or style, nothing from another origin, no framing.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Cookie names: __Host- (Secure, Path=/, no Domain) wherever the cookie is
// Secure; plain names on loopback over plain HTTP, where a browser refuses
// Secure cookies.
const (
	sessionCookie       = "odin_console"
	signinCookie        = "odin_console_signin"
	securePrefix        = "__Host-"
	maxFormBytes        = 16 << 10
	signinCookieMaxAge  = 10 * time.Minute
	defaultLinkLifetime = 15 * time.Minute
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure the console.
type Options struct {
	// API is the admin API the console acts through (required).
	API *admin.Server
	// SessionTTL is a session's lifetime from sign-in (default
	// DefaultSessionTTL).
	SessionTTL time.Duration
	// MaxSessions bounds the live sessions (default DefaultMaxSessions);
	// past it the one closest to its end is dropped.
	MaxSessions int
	Logger      *slog.Logger
	// Status, when set, is the status page's view of this process and of
	// the bus (the operator's page /console/status).
	Status func(context.Context) Status
	// AuthzMetricsURL, when set, is an odin authz /metrics URL whose
	// decision counters the status page shows, with rates.
	AuthzMetricsURL string
	// HTTPClient reads AuthzMetricsURL (default: a client with no proxy
	// from the environment and a 2 s timeout).
	HTTPClient *http.Client
}

// Console serves the console pages.
type Console struct {
	api      *admin.Server
	sessions *sessions
	pages    map[string]*pageTemplate
	log      *slog.Logger
	mux      *http.ServeMux
	now      func() time.Time
	status   func(context.Context) Status
	// decisions scrapes odin authz's metrics; nil without a URL.
	decisions *decisions
}

// New builds the console.
func New(opts Options) (*Console, error) {
	if u := opts.AuthzMetricsURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, errors.New("console: the authz metrics URL must be an http or https URL")
		}
	}
	if opts.API == nil {
		return nil, errors.New("console: the admin API is required")
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{api: opts.API, sessions: newSessions(opts.SessionTTL, opts.MaxSessions), pages: pages, log: opts.Logger, now: time.Now, status: opts.Status}
	if opts.AuthzMetricsURL != "" {
		client := opts.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
		}
		c.decisions = &decisions{url: opts.AuthzMetricsURL, client: client}
	}
	c.routes()
	return c, nil
}

// Handler serves everything under Path.
func (c *Console) Handler() http.Handler { return c.mux }

// SignInLink returns the path of a one-time link that signs its first
// visitor in as p, valid for ttl (0: 15 minutes). odin dev prints one for
// the operator: the link, never the operator token.
func (c *Console) SignInLink(p admin.Principal, ttl time.Duration) string {
	if ttl <= 0 {
		ttl = defaultLinkLifetime
	}
	return Path + "signin/once/" + c.sessions.newLink(p, ttl, c.now())
}

func (c *Console) routes() {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET "+Path+"static/", c.plain(http.StripPrefix(Path+"static/", staticFiles(static))))
	mux.Handle("GET "+Path+"signin", c.plain(http.HandlerFunc(c.signinPage)))
	mux.Handle("POST "+Path+"signin", c.plain(http.HandlerFunc(c.signin)))
	mux.Handle("GET "+Path+"signin/once/{secret}", c.plain(http.HandlerFunc(c.signinOnce)))
	mux.Handle("POST "+Path+"signout", c.authed(c.signout))
	mux.Handle("GET "+Path+"{$}", c.authed(func(w http.ResponseWriter, r *http.Request, _ *request) {
		http.Redirect(w, r, Path+"keys", http.StatusSeeOther)
	}))
	mux.Handle("GET "+Path+"keys", c.authed(c.keysPage))
	mux.Handle("POST "+Path+"keys", c.authed(c.createKey))
	mux.Handle("GET "+Path+"keys/{id}", c.authed(c.keyPage))
	mux.Handle("POST "+Path+"keys/{id}/revoke", c.authed(c.revokeKey))
	mux.Handle("POST "+Path+"keys/{id}/roll", c.authed(c.rollKey))
	mux.Handle("POST "+Path+"keys/{id}/edit", c.authed(c.updateKey))
	mux.Handle("POST "+Path+"keys/{id}/disable", c.authed(c.setDisabled("disable")))
	mux.Handle("POST "+Path+"keys/{id}/enable", c.authed(c.setDisabled("enable")))
	mux.Handle("GET "+Path+"audit", c.authed(c.auditPage))
	mux.Handle("GET "+Path+"sessions", c.authed(c.sessionsPage))
	mux.Handle("POST "+Path+"sessions/revoke", c.authed(c.revokeSession))
	mux.Handle("GET "+Path+"status", c.authed(c.statusPage))
	mux.Handle(Path, c.plain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", nil, errorPage{Title: "Not found", Message: "There is no such page."})
	})))
	c.mux = mux
}

// securityHeaders are set on every console answer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), clipboard-write=(self)")
}

// plain wraps a handler that needs no session: headers, a body limit and
// a request id.
func (c *Console) plain(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if !strings.HasPrefix(r.URL.Path, Path+"static/") {
			w.Header().Set("Cache-Control", "no-store")
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		h.ServeHTTP(w, r)
	})
}

// request is what a signed-in handler gets: the session, its cookie value
// and the request id the audit log records.
type request struct {
	session   *session
	cookie    string
	requestID string
}

// authed wraps a handler that needs a session: without one, a redirect to
// the sign-in page; a POST must pass the same-origin checks and carry the
// session's CSRF token, else 403.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, *request)) http.Handler {
	return c.plain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, _ := r.Cookie(cookieName(r, sessionCookie))
		var id string
		if ck != nil {
			id = ck.Value
		}
		se := c.sessions.get(id, c.now())
		if se != nil && c.api.Recheck(se.principal) != nil { // its Clerk session was logged out
			c.sessions.end(id)
			se = nil
		}
		if se == nil {
			if r.Method == http.MethodPost && id == "" && !sameOrigin(r) {
				c.forbidden(w, r, nil)
				return
			}
			http.Redirect(w, r, Path+"signin", http.StatusSeeOther)
			return
		}
		req := &request{session: se, cookie: id, requestID: requestid.FromHeader(r.Header.Get("X-Request-Id"))}
		if r.Method == http.MethodPost {
			if !sameOrigin(r) || !equal(r.PostFormValue("csrf"), se.csrf) {
				c.forbidden(w, r, req)
				return
			}
		}
		h(w, r, req)
	}))
}

func (c *Console) forbidden(w http.ResponseWriter, r *http.Request, req *request) {
	c.log.Info("console request refused: cross-site or without its CSRF token", "path", r.URL.Path)
	c.render(w, r, http.StatusForbidden, "error", req, errorPage{Title: "Refused",
		Message: "This form was not sent from this console page (its CSRF token is missing or stale). Reload the page and try again."})
}

// sameOrigin is the defence in depth beside the CSRF token: a browser's
// Sec-Fetch-Site must say same-origin (or none: typed, bookmarked), and an
// Origin, when sent, must be this host. Under Referrer-Policy no-referrer
// a browser sends "Origin: null" with its own forms: that is accepted only
// with Sec-Fetch-Site: same-origin.
func sameOrigin(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	switch site {
	case "", "same-origin", "none":
	default:
		return false
	}
	switch o := r.Header.Get("Origin"); {
	case o == "null":
		return site == "same-origin"
	case o != "":
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	return true
}

// secure reports whether the console's cookies are Secure for r: always,
// except for plain HTTP to a loopback host (odin dev), where a browser
// would not keep them.
func secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsLoopback()
}

func cookieName(r *http.Request, name string) string {
	if secure(r) {
		return securePrefix + name
	}
	return name
}

// setCookie sets an HttpOnly, SameSite=Strict cookie on Path=/ (Secure
// except on loopback); maxAge < 0 deletes it.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	ck := &http.Cookie{Name: cookieName(r, name), Value: value, Path: "/", HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode}
	switch {
	case maxAge < 0:
		ck.MaxAge = -1
	default:
		ck.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, ck)
}

// staticFiles serves the embedded assets, cacheable for an hour.
func staticFiles(fsys fs.FS) http.Handler {
	fileServer := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		w.Header().Set("Cache-Control", "private, max-age=3600")
		fileServer.ServeHTTP(w, r)
	})
}
