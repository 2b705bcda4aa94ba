// Package webhooks delivers the outgoing webhooks of `odin admin`: the
// events the key stores write in their outbox in the transaction of each
// change (key.created, key.revoked, key.rolled, session.revoked) and the
// key.expiring events of a background scan, signed in the Standard Webhooks
// format (webhook-id, webhook-timestamp, webhook-signature) and sent at
// least once, with retries on a schedule, to every configured endpoint.
//
// The state of each event is in its row (keystore.OutboxStore): a worker
// claims due events with a lease, so several admin replicas never send one
// attempt twice at once, and a restart loses nothing.
package webhooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/odin-scan/odin-authz/internal/lograte"
	"github.com/odin-scan/odin-authz/keystore"
)

// DefaultSchedule is the delay before each retry, as Standard Webhooks
// (Svix) retries: the first attempt at once, then after 5 seconds, 5
// minutes, 30 minutes, 2 hours, 5 hours, 10 hours and 10 hours. Attempts
// past its end wait its last delay.
var DefaultSchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// Defaults of Options.
const (
	DefaultMaxAttempts  = 8 // the first and the seven retries of DefaultSchedule: about 28 hours
	DefaultTimeout      = 15 * time.Second
	DefaultConcurrency  = 4
	DefaultPollInterval = time.Second
	DefaultExpiringDays = 7
	// Retention is how long delivered, failed and skipped events stay
	// listed before they are pruned. It also bounds the key.expiring
	// notice (at most that long before the expiry), whose event is what
	// keeps it from being sent twice.
	Retention = 30 * 24 * time.Hour
)

// Options configure a Worker. Zero values take the defaults.
type Options struct {
	Store     keystore.OutboxStore
	Endpoints []Endpoint
	// MaxAttempts caps the attempts of an event; after the last failed
	// one it is failed (DefaultMaxAttempts).
	MaxAttempts int
	// Schedule is the delay before each retry (DefaultSchedule).
	Schedule []time.Duration
	// Timeout bounds one request to one endpoint (DefaultTimeout).
	Timeout time.Duration
	// Concurrency is how many events are delivered at once (DefaultConcurrency).
	Concurrency int
	// PollInterval is how often the outbox is read for due events
	// (DefaultPollInterval).
	PollInterval time.Duration
	// ExpiringWithin is how long before a key's expiry its key.expiring
	// event is sent, at most Retention; zero: never.
	ExpiringWithin time.Duration
	// ExpiringScanInterval is how often keys are scanned for it (10 minutes).
	ExpiringScanInterval time.Duration
	// Client sends the requests; its redirects are not followed.
	Client *http.Client
	// Now is the clock (time.Now); Jitter spreads a retry delay d (by
	// default up to d/5 more), so that retries after an outage do not all
	// come at once.
	Now    func() time.Time
	Jitter func(d time.Duration) time.Duration
	Logger *slog.Logger
	// Registerer takes the metrics; nil: a private registry.
	Registerer prometheus.Registerer
}

// Worker delivers the outbox's events.
type Worker struct {
	opts    Options
	signers map[string]*svix.Webhook
	log     *slog.Logger
	m       *metrics
	outage  lograte.Limiter
}

// New validates opts and returns a worker; Run starts it.
func New(opts Options) (*Worker, error) {
	if opts.Store == nil {
		return nil, errors.New("webhooks: an outbox store is required")
	}
	if err := ValidateEndpoints(opts.Endpoints); err != nil {
		return nil, err
	}
	if opts.ExpiringWithin < 0 || opts.ExpiringWithin > Retention {
		return nil, fmt.Errorf("webhooks: key.expiring notice: between 0 and %d days", int(Retention/(24*time.Hour)))
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if len(opts.Schedule) == 0 {
		opts.Schedule = DefaultSchedule
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.ExpiringScanInterval <= 0 {
		opts.ExpiringScanInterval = 10 * time.Minute
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	client := *opts.Client // a copy: the caller's client keeps its redirect policy
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.Client = &client
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = func(d time.Duration) time.Duration { return d + rand.N(d/5+1) }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	w := &Worker{opts: opts, signers: map[string]*svix.Webhook{}, log: opts.Logger, outage: lograte.Limiter{Every: time.Minute}}
	for _, e := range opts.Endpoints {
		wh, err := svix.NewWebhook(e.Secret)
		if err != nil {
			return nil, fmt.Errorf("outgoing webhook %s: secret: not a signing secret", e)
		}
		w.signers[e.Name] = wh
	}
	var err error
	if w.m, err = newMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	return w, nil
}

// backlogInterval is how often Run counts the pending events for
// odin_webhook_outbox_pending.
const backlogInterval = 15 * time.Second

// lease is how long a claim holds its events: every endpoint's request at
// its timeout, and a margin. A worker that stops mid-way (a crash, a
// deploy) leaves its events to be claimed again when the lease passes.
func (w *Worker) lease() time.Duration {
	return time.Duration(max(1, len(w.opts.Endpoints)))*w.opts.Timeout + 30*time.Second
}

// Run delivers due events, scans for expiring keys and prunes old events
// until ctx ends; an attempt under way when it ends is left to its lease.
func (w *Worker) Run(ctx context.Context) {
	w.log.Info("outgoing webhooks started", "endpoints", len(w.opts.Endpoints), "max_attempts", w.opts.MaxAttempts)
	var lastScan, lastPrune, lastCount time.Time
	for {
		now := w.opts.Now()
		if w.opts.ExpiringWithin > 0 && now.Sub(lastScan) >= w.opts.ExpiringScanInterval {
			if _, err := w.ScanExpiring(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("scan for expiring keys", "error", err.Error())
			}
			lastScan = now
		}
		if now.Sub(lastPrune) >= time.Hour {
			if n, err := w.opts.Store.PruneOutbox(ctx, now.Add(-Retention)); err != nil && ctx.Err() == nil {
				w.log.Warn("prune webhook events", "error", err.Error())
			} else if n > 0 {
				w.log.Info("pruned webhook events", "events", n)
			}
			lastPrune = now
		}
		n, err := w.Step(ctx)
		if err != nil && ctx.Err() == nil && w.outage.Allow() { // a store outage: a line a minute, not a second
			w.log.Warn("deliver webhook events", "error", err.Error())
		}
		if now.Sub(lastCount) >= backlogInterval { // a count, not every poll: a backlog can be large
			if backlog, err := w.opts.Store.OutboxBacklog(ctx); err == nil {
				w.m.backlog.Set(float64(backlog))
			}
			lastCount = now
		}
		if n == w.opts.Concurrency && err == nil {
			continue // a full batch: more may be due
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.opts.PollInterval):
		}
	}
}

// ScanExpiring writes the key.expiring events now due (Run calls it every
// ExpiringScanInterval) and returns how many it wrote.
func (w *Worker) ScanExpiring(ctx context.Context) (int, error) {
	if w.opts.ExpiringWithin <= 0 {
		return 0, nil
	}
	return w.opts.Store.EnqueueExpiring(ctx, w.opts.Now(), w.opts.ExpiringWithin)
}

// Step claims the events due now, at most Concurrency, delivers them at
// once and records each attempt; it returns how many it claimed. Run
// calls it every PollInterval.
func (w *Worker) Step(ctx context.Context) (int, error) {
	now := w.opts.Now()
	events, err := w.opts.Store.ClaimOutbox(ctx, now, w.lease(), w.opts.Concurrency)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(events))
	for i := range events {
		wg.Go(func() { errs[i] = w.deliver(ctx, events[i]) })
	}
	wg.Wait()
	return len(events), errors.Join(errs...)
}

// deliver makes one attempt of ev: to each endpoint that takes its type and
// has not answered 2xx yet, then records the outcome.
func (w *Worker) deliver(ctx context.Context, ev keystore.OutboxEvent) error {
	if ev.Attempts == 0 && len(ev.DeliveredTo) == 0 {
		w.m.enqueued.WithLabelValues(ev.Type).Inc()
	}
	var targets []Endpoint
	taken := false
	for _, e := range w.opts.Endpoints {
		if e.takes(ev.Type) {
			taken = true
			if !slices.Contains(ev.DeliveredTo, e.Name) {
				targets = append(targets, e)
			}
		}
	}
	delivered := slices.Clone(ev.DeliveredTo)
	var failures []string
	lastStatus := 0
	for _, e := range targets {
		status, err := w.send(ctx, e, ev)
		if err == nil {
			delivered = append(delivered, e.Name)
			continue
		}
		if ctx.Err() != nil {
			return nil // stopping: the lease hands the event to the next claim
		}
		lastStatus = status
		failures = append(failures, e.Name+": "+err.Error())
	}
	r := keystore.AttemptResult{At: w.opts.Now(), LastStatus: lastStatus, LastError: strings.Join(failures, "; "), DeliveredTo: delivered}
	switch {
	case !taken:
		r.Status = keystore.OutboxSkipped
		r.LastError = "no endpoint takes this event type"
	case len(failures) == 0:
		r.Status = keystore.OutboxDelivered
	case ev.Attempts+1 >= w.opts.MaxAttempts:
		r.Status = keystore.OutboxFailed
	default:
		r.Status = keystore.OutboxPending
		r.NextAttemptAt = r.At.Add(w.opts.Jitter(w.retryDelay(ev.Attempts + 1)))
	}
	if len(r.LastError) > 1000 {
		r.LastError = r.LastError[:1000]
	}
	ok, err := w.opts.Store.FinishAttempt(context.WithoutCancel(ctx), ev.ID, ev.Lease, r)
	if err != nil {
		return fmt.Errorf("webhook event %d: %w", ev.ID, err)
	}
	if !ok {
		w.log.Warn("a webhook event's lease passed before its attempt ended; another worker has it", "event_id", ev.ID, "type", ev.Type)
		return nil
	}
	switch r.Status {
	case keystore.OutboxDelivered, keystore.OutboxFailed, keystore.OutboxSkipped:
		w.m.events.WithLabelValues(ev.Type, r.Status).Inc()
	}
	if r.Status == keystore.OutboxFailed {
		w.log.Error("webhook event failed: no more attempts", "event_id", ev.ID, "message_id", ev.MessageID, "type", ev.Type,
			"attempts", ev.Attempts+1, "error", r.LastError)
	} else if len(failures) > 0 {
		w.log.Warn("webhook attempt failed; retrying", "event_id", ev.ID, "type", ev.Type, "attempt", ev.Attempts+1,
			"next_attempt_at", r.NextAttemptAt, "error", r.LastError)
	}
	return nil
}

// retryDelay is the delay after the n-th failed attempt (from 1).
func (w *Worker) retryDelay(n int) time.Duration {
	s := w.opts.Schedule
	return s[min(n, len(s))-1]
}

// send POSTs ev to e, signed, and returns nil on a 2xx answer, else the
// status (0 when there was none) and what failed. The error never holds
// the URL (its query may carry a token) nor the secret.
func (w *Worker) send(ctx context.Context, e Endpoint, ev keystore.OutboxEvent) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	at := time.Now() // the wall clock, not Options.Now: receivers check it against theirs
	sig, err := w.signers[e.Name].Sign(ev.MessageID, at, ev.Payload)
	if err != nil {
		return 0, errors.New("sign the event")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, strings.NewReader(string(ev.Payload)))
	if err != nil {
		return 0, errors.New("build the request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "odin-webhooks/1")
	req.Header.Set("webhook-id", ev.MessageID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	start := time.Now()
	resp, err := w.opts.Client.Do(req)
	w.m.latency.WithLabelValues(ev.Type).Observe(time.Since(start).Seconds())
	if err != nil {
		w.m.attempts.WithLabelValues(ev.Type, resultNetwork).Inc()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no answer within %s", w.opts.Timeout)
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		w.m.attempts.WithLabelValues(ev.Type, resultHTTP).Inc()
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	w.m.attempts.WithLabelValues(ev.Type, resultSuccess).Inc()
	return resp.StatusCode, nil
}
