package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/odin-scan/odin-authz/admin/secretscan"
	"github.com/odin-scan/odin-authz/denial"
	"github.com/odin-scan/odin-authz/keystore"
)

// GitHubSecretScanning configures POST /v1/secret-scanning/github, where
// GitHub's secret scanning partner program reports odin_sk_ keys it found
// in public (docs/ADMIN.md, "GitHub secret scanning").
type GitHubSecretScanning struct {
	// Enabled serves the endpoint; off, it answers 404.
	Enabled bool
	// KeysURL is GitHub's document of signing keys (default
	// secretscan.DefaultKeysURL).
	KeysURL string
	// Token, when set, authenticates the key document's fetch (a GitHub
	// token with no scopes lifts the per-address rate limit).
	Token string
	// FetchTimeout bounds a fetch of the document (default 10s).
	FetchTimeout time.Duration
	// MinRefreshInterval is the least time between two fetches of the
	// document (default 1m), however many unknown key identifiers arrive.
	MinRefreshInterval time.Duration
	// Client fetches the document (default: a client of its own).
	Client *http.Client
}

// The bounds of a secret scanning report. GitHub sends one match per token
// found; its documentation asks for endpoints that take large batches, and
// 1000 matches of a few hundred bytes each fit well in 1 MiB.
const (
	// MaxLeakMatches is the most matches one report may carry (400 past it).
	MaxLeakMatches = 1000
	// leakReportMaxBytes bounds the report's body (413 past it).
	leakReportMaxBytes = 1 << 20
	// maxLeakURLLen and maxLeakFieldLen bound what of a match's url, type
	// and source reaches the audit log (longer ones are cut).
	maxLeakURLLen   = 2048
	maxLeakFieldLen = 128
	// leakRevokeTimeout bounds a report's revocations. They run detached
	// from the request: GitHub hanging up must not stop them halfway.
	leakRevokeTimeout = time.Minute
)

// GitHubSecretPattern is the regular expression to register with GitHub's
// secret scanning for odin_sk_ keys (docs/ADMIN.md): the prefix, then the
// 43 base62 characters of secret and 6 of checksum (keystore.KeyLen in
// all), between word boundaries. It cannot check the checksum: a string
// that only looks like a key is answered false_positive.
const GitHubSecretPattern = `\bodin_sk_[0-9A-Za-z]{49}\b`

// secretScanningRoute is the endpoint's route pattern.
const secretScanningRoute = "POST /v1/secret-scanning/github"

// SecretScanningActor is the actor of the audit events of revocations
// GitHub secret scanning caused.
const SecretScanningActor = "github-secret-scanning"

// The labels of a match, as GitHub's partner feedback format spells them.
const (
	labelTruePositive  = "true_positive"
	labelFalsePositive = "false_positive"
)

// The outcomes of a match, the outcome label of
// odin_admin_secret_scanning_tokens_total.
const (
	leakRevoked        = "revoked"         // a live key of ours, revoked now
	leakAlreadyRevoked = "already_revoked" // a key of ours revoked before
	leakUnknown        = "unknown"         // well formed, but no such key
	leakMalformed      = "malformed"       // not an odin_sk_ key (format or checksum)
)

// The results of a report, the result label of
// odin_admin_secret_scanning_reports_total.
const (
	reportProcessed    = "processed"
	reportUnauthorized = "unauthorized"
	reportInvalid      = "invalid"
	reportTooLarge     = "too_large"
	reportUnavailable  = "unavailable"
)

// leakMatch is one match of a report: the token, the type name registered
// with GitHub, where it was found (url may be empty) and what kind of
// place that is (content, commit, issue_comment…). Other fields GitHub may
// add are ignored.
type leakMatch struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

// leakFeedback is the answer for one match, in GitHub's partner feedback
// format: the hex SHA-256 of the token (never the token), its type as
// reported, and whether it is a real credential.
type leakFeedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// secretScanning is the endpoint's state: nil in Server when disabled.
type secretScanning struct {
	verifier *secretscan.Verifier
	reports  *prometheus.CounterVec
	tokens   *prometheus.CounterVec
}

// newSecretScanning builds the endpoint's verifier and metrics, or nil when
// it is disabled.
func newSecretScanning(opts Options) (*secretScanning, error) {
	cfg := opts.GitHubSecretScanning
	if !cfg.Enabled {
		return nil, nil
	}
	v, err := secretscan.New(secretscan.Options{
		KeysURL: cfg.KeysURL, Token: cfg.Token, FetchTimeout: cfg.FetchTimeout,
		MinRefreshInterval: cfg.MinRefreshInterval, Client: cfg.Client,
		Logger: opts.Logger, Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, err
	}
	ss := &secretScanning{verifier: v}
	ss.reports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_secret_scanning_reports_total",
		Help: "Reports received from GitHub secret scanning, by result: processed (200), unauthorized (signature refused, 401), invalid (400), too_large (413), unavailable (503).",
	}, []string{"result"})
	ss.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "odin_admin_secret_scanning_tokens_total",
		Help: "Tokens reported by GitHub secret scanning, by label (true_positive, false_positive) and outcome: revoked, already_revoked, unknown (well formed, no such key), malformed.",
	}, []string{"label", "outcome"})
	for _, r := range []string{reportProcessed, reportUnauthorized, reportInvalid, reportTooLarge, reportUnavailable} {
		ss.reports.WithLabelValues(r)
	}
	for _, o := range []string{leakRevoked, leakAlreadyRevoked, leakUnknown, leakMalformed} {
		ss.tokens.WithLabelValues(leakLabel(o), o)
	}
	for _, c := range []prometheus.Collector{ss.reports, ss.tokens} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	return ss, nil
}

// leakLabel is the feedback label of an outcome: a key of ours is a true
// positive whatever its state.
func leakLabel(outcome string) string {
	if outcome == leakRevoked || outcome == leakAlreadyRevoked {
		return labelTruePositive
	}
	return labelFalsePositive
}

// bodyLimit is the most a route's request body may hold.
func (s *Server) bodyLimit(route string) int64 {
	if route == secretScanningRoute {
		return leakReportMaxBytes
	}
	return s.opts.MaxBodyBytes
}

// githubSecretScanning is POST /v1/secret-scanning/github. The report's
// signature is checked first (a bad, missing or unknown one is a 401 and
// changes nothing); then every reported odin_sk_ key that exists is
// revoked, with Revoke's guarantee, and the answer labels each match. A
// revocation that is committed but not confirmed on every replica still
// answers true_positive (the key is revoked, and every replica denies it
// by the cache TTL at the latest): the count and the log say so.
func (s *Server) githubSecretScanning(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ss := s.secretScan
	if ss == nil {
		return errNotFound("GitHub secret scanning is not enabled")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			ss.reports.WithLabelValues(reportTooLarge).Inc()
			b := denial.New(denial.InvalidRequest, "request body too large: at most "+strconv.Itoa(leakReportMaxBytes)+" bytes", w.Header().Get("X-Request-Id"), time.Now())
			return writeJSON(w, http.StatusRequestEntityTooLarge, b)
		}
		ss.reports.WithLabelValues(reportInvalid).Inc()
		return errInvalid("", "request body could not be read")
	}
	if err := ss.verifier.Verify(r.Context(), r.Header, body); err != nil {
		if errors.Is(err, secretscan.ErrKeysUnavailable) {
			ss.reports.WithLabelValues(reportUnavailable).Inc()
			return err // 503: GitHub retries
		}
		ss.reports.WithLabelValues(reportUnauthorized).Inc()
		s.log.Info("secret scanning report refused", "reason", err.Error(), "request_id", w.Header().Get("X-Request-Id"))
		return errUnauthorized()
	}
	matches, err := parseLeakReport(body)
	if err != nil {
		ss.reports.WithLabelValues(reportInvalid).Inc()
		return err
	}
	feedback, err := s.revokeLeaks(r.Context(), w.Header().Get("X-Request-Id"), matches)
	if err != nil {
		ss.reports.WithLabelValues(reportUnavailable).Inc()
		return err // 503: the revocations made stand; GitHub's retry finds them revoked
	}
	ss.reports.WithLabelValues(reportProcessed).Inc()
	return writeJSON(w, http.StatusOK, feedback)
}

// parseLeakReport reads a report: a JSON array of matches, at most
// MaxLeakMatches.
func parseLeakReport(body []byte) ([]leakMatch, error) {
	var matches []leakMatch
	if err := json.Unmarshal(body, &matches); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return nil, errInvalid("", "the report must be a JSON array of matches")
			}
			return nil, errInvalid(typeErr.Field, "wrong type for field "+typeErr.Field)
		}
		return nil, errInvalid("", "the report is not valid JSON")
	}
	if matches == nil { // null
		return nil, errInvalid("", "the report must be a JSON array of matches")
	}
	if len(matches) > MaxLeakMatches {
		return nil, errInvalid("", "at most "+strconv.Itoa(MaxLeakMatches)+" matches per report")
	}
	return matches, nil
}

// leak is what one distinct reported key came to.
type leak struct {
	match   leakMatch // the first match that reported it
	outcome string
}

// revokeLeaks revokes the reported keys that exist and are not revoked
// yet, and labels every match. Each distinct key is handled once however
// often the report names it (its first match's url goes to the audit
// log). A key revoked within the replicas' cache TTL is revoked again,
// which writes no event but propagates again, so that the redelivery of a
// report whose revoke was not confirmed confirms it. An error (the store
// unreachable) leaves the revocations already made standing.
func (s *Server) revokeLeaks(reqCtx context.Context, reqID string, matches []leakMatch) ([]leakFeedback, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), leakRevokeTimeout)
	defer cancel()
	by := keystore.Actor{ID: SecretScanningActor, RequestID: reqID}
	leaks := map[keystore.Hash]*leak{}
	for _, m := range matches {
		h, err := keystore.ParseKey(m.Token)
		if err != nil {
			continue
		}
		if _, seen := leaks[h]; !seen {
			leaks[h] = &leak{match: m}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8) // a silent replica makes each revoke wait out the fence: overlap the waits
	for h, l := range leaks {
		g.Go(func() error { // each writes its own leak; Wait orders the reads after
			var err error
			l.outcome, err = s.revokeLeak(gctx, by, h, l.match)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	feedback := make([]leakFeedback, 0, len(matches))
	for _, m := range matches {
		h, outcome := keystore.HashKey(m.Token), leakMalformed
		if keystore.ValidKey(m.Token) {
			outcome = leaks[h].outcome
		}
		s.secretScan.tokens.WithLabelValues(leakLabel(outcome), outcome).Inc()
		feedback = append(feedback, leakFeedback{TokenHash: h.String(), TokenType: m.Type, Label: leakLabel(outcome)})
	}
	return feedback, nil
}

// revokeLeak handles one reported key with hash h: unknown, revoked before
// (nothing to do, unless recently enough to propagate again), or revoked
// now with the reason leaked and where GitHub found it.
func (s *Server) revokeLeak(ctx context.Context, by keystore.Actor, h keystore.Hash, m leakMatch) (string, error) {
	k, err := s.opts.Store.KeyByHash(ctx, h)
	switch {
	case errors.Is(err, keystore.ErrNotFound):
		return leakUnknown, nil
	case err != nil:
		return "", err
	}
	outcome := leakRevoked
	if !k.RevokedAt.IsZero() {
		outcome = leakAlreadyRevoked
		if time.Since(k.RevokedAt) > s.opts.Manager.KeyPropagationBound() {
			return outcome, nil // every replica denies it without the bus
		}
	}
	details := map[string]any{
		"url":    truncateUTF8(m.URL, maxLeakURLLen),
		"source": truncateUTF8(m.Source, maxLeakFieldLen),
		"type":   truncateUTF8(m.Type, maxLeakFieldLen),
	}
	k, err = s.opts.Manager.RevokeWithReason(ctx, by, k.ID, keystore.RevokeReasonLeaked, details)
	np, unconfirmed := asNotPropagated(err)
	switch {
	case errors.Is(err, keystore.ErrNotFound): // deleted meanwhile
		return leakUnknown, nil
	case err != nil && !unconfirmed:
		return "", err
	}
	if outcome == leakRevoked {
		s.log.Warn("leaked key revoked: GitHub secret scanning found it in public",
			"key_id", k.ID, "owner", k.Owner(), "url", details["url"], "source", details["source"], "request_id", by.RequestID)
	}
	if unconfirmed {
		s.unconfirmed.WithLabelValues(unconfirmedKeyRevoke).Inc()
		s.log.Warn("leaked key revoked, but not every replica confirmed it; every replica denies it by denied_by",
			"key_id", k.ID, "denied_by", np.DeniedBy.UTC().Format(time.RFC3339Nano), "request_id", by.RequestID, "error", np.Cause.Error())
	}
	return outcome, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
