package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/odin-scan/odin-authz/jwtauth/devissuer"
	"github.com/odin-scan/odin-authz/keystore"
)

const devIssuerSummary = `DEVELOPMENT TOOL - NEVER RUN IT WHERE ANYONE BUT YOU CAN REACH IT.
Anyone who can reach POST /mint gets a session token that every odin authz
and odin admin pointed at this JWKS accepts, for any user, organisation,
permissions and tier they ask for.

A stand-in for Clerk on a laptop, in docker compose and for the load harness.
It serves:
  GET  /.well-known/jwks.json   the public keys (point ODIN_JWKS_URL here)
  POST /mint                    a signed Clerk-shaped (v2) session token, from
                                {"sub","sid","org_id","org_role","org_slug",
                                 "permissions":[...],"tier","ttl_seconds","azp"}
                                (every field optional) ->
                                {"token","sid","expires_at"}
  GET  /healthz                 200 while serving

The RS256 signing key is generated at each start and kept in memory only:
after a restart, tokens minted before it no longer verify (odin authz fetches
the new key set on the first unknown kid, at most once per --jwks-min-refresh).
Permissions go in the top-level "permissions" claim (run odin authz and admin
with ODIN_JWT_PERMISSIONS_CLAIM=permissions) and, with org_id, in the
organisation's "o.per" too; the tier goes in "tier". Set odin's
ODIN_JWT_ISSUER to --issuer.`

// devIssuerConfig is the configuration of `odin devissuer`.
type devIssuerConfig struct {
	// issuer is the iss of every minted token.
	issuer string
	// defaultTTL is the lifetime of a token minted without ttl_seconds;
	// maxTTL is the longest one may ask for. Keep maxTTL under odin's
	// --session-retention, which refuses tokens that live longer.
	defaultTTL, maxTTL time.Duration
}

// devIssuerFlagSet defines odin devissuer's flags, writing to cfg, lo and
// addr.
func devIssuerFlagSet(cfg *devIssuerConfig, lo *logOptions, addr *string) *flags {
	f := newFlags("devissuer", devIssuerSummary)
	f.String(addr, "addr", "ODIN_DEVISSUER_ADDR", ":9005", "listen address")
	f.String(&cfg.issuer, "issuer", "ODIN_DEVISSUER_ISSUER", devissuer.DefaultIssuer, "iss of the minted tokens; give odin the same as --jwt-issuer")
	f.Duration(&cfg.defaultTTL, "default-ttl", "ODIN_DEVISSUER_DEFAULT_TTL", 5*time.Minute, "lifetime of a token minted without ttl_seconds (Clerk's own live about 60s)")
	f.Duration(&cfg.maxTTL, "max-ttl", "ODIN_DEVISSUER_MAX_TTL", time.Hour, "longest ttl_seconds accepted; keep it under odin's --session-retention ("+formatDuration(keystore.DefaultSessionRetention)+")")
	lo.bind(f, "text")
	return f
}

func runDevIssuer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg  devIssuerConfig
		lo   logOptions
		addr string
	)
	f := devIssuerFlagSet(&cfg, &lo, &addr)
	f.SetOutput(stderr)
	if err := f.parseNoArgs(args); err != nil {
		return err
	}
	if cfg.defaultTTL <= 0 || cfg.maxTTL < cfg.defaultTTL {
		return fmt.Errorf("devissuer: want 0 < --default-ttl (%s) <= --max-ttl (%s)", cfg.defaultTTL, cfg.maxTTL)
	}
	logger, err := lo.logger(stderr)
	if err != nil {
		return err
	}
	provider, err := devissuer.New(devissuer.Options{Issuer: cfg.issuer})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("devissuer: listen: %w", err)
	}
	logger.Warn("development identity provider: anyone who can reach it can mint trusted session tokens; never expose it",
		"addr", l.Addr().String(), "key_lifetime", "this process (regenerated at each start)")
	fmt.Fprintf(stdout, "odin devissuer (development only): JWKS http://%s%s, mint with POST http://%s/mint, iss %q\n",
		l.Addr(), devissuer.JWKSPath, l.Addr(), cfg.issuer)
	return serveDevIssuer(ctx, l, newDevIssuerHandler(provider, cfg, logger), logger)
}

// serveDevIssuer serves h on l until ctx ends, then shuts down gracefully.
func serveDevIssuer(ctx context.Context, l net.Listener, h http.Handler, logger *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("devissuer: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("devissuer: shutdown: %w", err)
	}
	logger.Info("devissuer stopped")
	return nil
}

// mintRequest is the body of POST /mint. Every field is optional.
type mintRequest struct {
	Subject         string   `json:"sub"`
	SessionID       string   `json:"sid"`
	OrgID           string   `json:"org_id"`
	OrgRole         string   `json:"org_role"`
	OrgSlug         string   `json:"org_slug"`
	Permissions     []string `json:"permissions"`
	Tier            string   `json:"tier"`
	TTLSeconds      int64    `json:"ttl_seconds"`
	AuthorizedParty string   `json:"azp"`
}

// mintResponse is the answer of POST /mint. The session id is returned so
// that it can be revoked through the admin API.
type mintResponse struct {
	Token     string    `json:"token"`
	SessionID string    `json:"sid"`
	ExpiresAt time.Time `json:"expires_at"`
}

// newDevIssuerHandler routes the JWKS, /mint and /healthz.
func newDevIssuerHandler(p *devissuer.Provider, cfg devIssuerConfig, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+devissuer.JWKSPath, p.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /mint", func(w http.ResponseWriter, r *http.Request) {
		resp, c, err := mint(p, cfg, r)
		if err != nil {
			writeMintError(w, err)
			return
		}
		var orgID string
		if c.Org != nil {
			orgID = c.Org.ID
		}
		// Never log the token itself.
		logger.Info("minted session token", "sub", c.Subject, "sid", resp.SessionID, "org_id", orgID, "expires_at", resp.ExpiresAt)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(resp)
	})
	return mux
}

// errBadMint is a request /mint refuses with 400.
var errBadMint = errors.New("bad mint request")

// mint decodes a /mint request and signs the token it describes. It also
// returns the claims, defaults filled in, for the log line.
func mint(p *devissuer.Provider, cfg devIssuerConfig, r *http.Request) (mintResponse, devissuer.Claims, error) {
	var req mintRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return mintResponse{}, devissuer.Claims{}, fmt.Errorf("%w: body: %v", errBadMint, err)
	}
	if dec.More() {
		return mintResponse{}, devissuer.Claims{}, fmt.Errorf("%w: body: data after the JSON object", errBadMint)
	}
	ttl := cfg.defaultTTL
	switch {
	case req.TTLSeconds < 0:
		return mintResponse{}, devissuer.Claims{}, fmt.Errorf("%w: ttl_seconds must not be negative", errBadMint)
	case req.TTLSeconds > int64(cfg.maxTTL/time.Second):
		return mintResponse{}, devissuer.Claims{}, fmt.Errorf("%w: ttl_seconds %d exceeds the most this issuer mints (%d)", errBadMint, req.TTLSeconds, int64(cfg.maxTTL/time.Second))
	case req.TTLSeconds > 0:
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if req.OrgID == "" && (req.OrgRole != "" || req.OrgSlug != "") {
		return mintResponse{}, devissuer.Claims{}, fmt.Errorf("%w: org_role and org_slug need org_id", errBadMint)
	}
	sid := req.SessionID
	if sid == "" {
		sid = newSessionID()
	}
	now := time.Now()
	c := devissuer.Claims{
		Subject:         req.Subject,
		SessionID:       sid,
		AuthorizedParty: req.AuthorizedParty,
		IssuedAt:        now,
		Expiry:          now.Add(ttl),
		Extra:           map[string]any{},
	}
	if req.OrgID != "" {
		role := req.OrgRole
		if role == "" {
			role = "member"
		}
		c.Org = &devissuer.Org{ID: req.OrgID, Slug: req.OrgSlug, Role: role, Permissions: req.Permissions}
	}
	if len(req.Permissions) > 0 {
		c.Extra["permissions"] = req.Permissions
	}
	if req.Tier != "" {
		c.Extra["tier"] = req.Tier
	}
	token, err := p.Mint(c)
	if err != nil {
		return mintResponse{}, devissuer.Claims{}, err
	}
	if c.Subject == "" {
		c.Subject = devissuer.DefaultSubject
	}
	// exp is whole seconds in the token; report the same instant.
	exp := time.Unix(c.Expiry.Unix(), 0).UTC()
	return mintResponse{Token: token, SessionID: sid, ExpiresAt: exp}, c, nil
}

func writeMintError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, "INTERNAL"
	if errors.Is(err, errBadMint) {
		status, code = http.StatusBadRequest, "BAD_REQUEST"
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, err.Error()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// newSessionID returns a Clerk-like session id, "sess_" and 16 hex digits.
func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return "sess_" + hex.EncodeToString(b[:])
}
