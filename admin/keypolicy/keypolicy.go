// Package keypolicy runs the operator's key policy in `odin admin`: a
// background job that revokes keys left unused for longer than the policy
// allows (`--revoke-unused-after`), or in dry run only reports them.
//
// Each sweep lists the active keys unused since the cutoff (the store's
// unused-since filter: last used before it, or never used and created
// before it) and revokes each through keystore.Manager.RevokeUnused, with
// the audit actor Actor and the reason expired-by-policy: the key.revoked
// webhook event carries that reason, and the revoke has every revoke's
// propagation guarantee. RevokeUnused checks the key again as it locks it,
// so a key used (and flushed) since the sweep listed it is kept. Several
// admin replicas on one PostgreSQL take turns: a sweep holds the store's
// job lock (keystore.JobLocker, an advisory lock), and a replica that finds
// it held skips its sweep. Even without it, each key would be revoked once:
// the row lock and the second check make the others find it revoked.
package keypolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/odin-scan/odin-authz/keystore"
)

// Actor is the audit actor of the job's revokes, and the name of its lock.
const Actor = "policy:unused-keys"

// DefaultInterval is how often the job sweeps by default.
const DefaultInterval = time.Hour

// pageSize is how many keys a sweep reads at once.
const pageSize = 500

// Options configure the job. Zero values take the defaults.
type Options struct {
	// UnusedFor is how long a key may go unused; zero: the job is off.
	UnusedFor time.Duration
	// DryRun reports (log lines, odin_admin_unused_keys_would_revoke)
	// what a sweep would revoke, and revokes nothing.
	DryRun bool
	// Interval is the time between sweeps (DefaultInterval); the first is
	// at start.
	Interval time.Duration
	// Manager revokes; its store is the one swept. Required when on.
	Manager *keystore.Manager
	// Now is the clock (time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Registerer takes the metrics; nil: a private registry.
	Registerer prometheus.Registerer
}

// Result is what one sweep found: the ids of the keys it revoked (or in
// dry run would revoke), and how many it listed but kept (used since, or
// revoked by someone else, in the meantime).
type Result struct {
	// Skipped: another replica holds the job's lock; this sweep did nothing.
	Skipped     bool
	Revoked     []string
	WouldRevoke []string
	Kept        int
	// Unconfirmed counts revokes committed but not confirmed on every
	// replica (every replica denies the key within the cache TTL).
	Unconfirmed int
}

// Job is the unused-keys policy.
type Job struct {
	opts Options
	log  *slog.Logger
	m    *metrics
}

// New validates opts and returns the job; Run starts it.
func New(opts Options) (*Job, error) {
	if opts.UnusedFor < 0 {
		return nil, errors.New("keypolicy: the unused period must not be negative")
	}
	if opts.UnusedFor > 0 && opts.Manager == nil {
		return nil, errors.New("keypolicy: a key manager is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
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
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Job{opts: opts, log: opts.Logger, m: m}, nil
}

// Enabled reports whether the job has anything to do.
func (j *Job) Enabled() bool { return j.opts.UnusedFor > 0 }

// Run sweeps at once and then every Interval until ctx ends. A failed
// sweep is logged and counted; the next one starts over.
func (j *Job) Run(ctx context.Context) {
	if !j.Enabled() {
		return
	}
	j.log.Info("unused-keys policy started", "unused_for", keystore.FormatAge(j.opts.UnusedFor),
		"dry_run", j.opts.DryRun, "interval", j.opts.Interval.String())
	t := time.NewTicker(j.opts.Interval)
	defer t.Stop()
	for {
		if _, err := j.Sweep(ctx); err != nil && ctx.Err() == nil {
			j.log.Warn("unused-keys sweep failed; the next one starts over", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep revokes (in dry run: reports) every active key unused for
// UnusedFor at the job's clock's now, and returns what it did.
func (j *Job) Sweep(ctx context.Context) (Result, error) {
	var res Result
	if !j.Enabled() {
		return res, nil
	}
	store := j.opts.Manager.Store()
	if l, ok := store.(keystore.JobLocker); ok {
		release, held, err := l.TryJobLock(ctx, Actor)
		if err != nil {
			j.m.sweeps.WithLabelValues(sweepError).Inc()
			return res, err
		}
		if !held {
			j.m.sweeps.WithLabelValues(sweepSkipped).Inc()
			j.log.Debug("unused-keys sweep skipped: another replica is sweeping")
			return Result{Skipped: true}, nil
		}
		defer release()
	}
	now := j.opts.Now()
	cutoff := now.Add(-j.opts.UnusedFor)
	details := map[string]any{"unused_for": keystore.FormatAge(j.opts.UnusedFor)}
	by := keystore.Actor{ID: Actor}
	opts := keystore.ListKeysOptions{UnusedSince: cutoff, Revoked: new(bool), Limit: pageSize}
	for {
		keys, next, err := store.ListKeys(ctx, opts)
		if err != nil {
			j.m.sweeps.WithLabelValues(sweepError).Inc()
			return res, fmt.Errorf("list unused keys: %w", err)
		}
		for _, k := range keys {
			if k.Usable(now) != nil { // expired: nothing left to revoke
				continue
			}
			if err := j.handle(ctx, by, k, cutoff, details, &res); err != nil {
				j.m.sweeps.WithLabelValues(sweepError).Inc()
				return res, err
			}
		}
		if next == "" {
			break
		}
		opts.Cursor = next
	}
	j.m.sweeps.WithLabelValues(sweepOK).Inc()
	if j.opts.DryRun {
		j.m.wouldRevoke.Set(float64(len(res.WouldRevoke)))
		j.log.Info("unused-keys sweep (dry run): nothing revoked", "would_revoke", len(res.WouldRevoke))
	} else if len(res.Revoked) > 0 || res.Kept > 0 {
		j.log.Info("unused-keys sweep", "revoked", len(res.Revoked), "kept", res.Kept, "unconfirmed", res.Unconfirmed)
	}
	return res, nil
}

// handle revokes (or in dry run reports) key k, listed as unused since
// cutoff, and records the outcome in res.
func (j *Job) handle(ctx context.Context, by keystore.Actor, k *keystore.Key, cutoff time.Time, details map[string]any, res *Result) error {
	attrs := []any{"key_id", k.ID, "owner", k.Owner(), "hint", k.Hint, "created_at", k.CreatedAt, "last_used_at", k.LastUsedAt}
	if j.opts.DryRun {
		res.WouldRevoke = append(res.WouldRevoke, k.ID)
		j.log.Info("unused key would be revoked (dry run)", attrs...)
		return nil
	}
	_, err := j.opts.Manager.RevokeUnused(ctx, by, k.ID, cutoff, details)
	switch {
	case errors.Is(err, keystore.ErrUsed), errors.Is(err, keystore.ErrNotFound):
		res.Kept++
		return nil
	case errors.Is(err, keystore.ErrNotPropagated):
		res.Unconfirmed++
		j.log.Warn("unused key revoked, but not every replica confirmed it", append(attrs, "error", err.Error())...)
	case err != nil:
		return fmt.Errorf("revoke unused key %s: %w", k.ID, err)
	default:
		j.log.Info("unused key revoked", attrs...)
	}
	res.Revoked = append(res.Revoked, k.ID)
	j.m.revoked.Inc()
	return nil
}

// The result label values of odin_admin_unused_keys_sweeps_total.
const (
	sweepOK      = "ok"
	sweepError   = "error"
	sweepSkipped = "skipped" // another replica held the lock
)

type metrics struct {
	revoked     prometheus.Counter
	wouldRevoke prometheus.Gauge
	sweeps      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "odin_admin_unused_keys_revoked_total",
			Help: "Keys this admin replica revoked for going unused longer than --revoke-unused-after (reason expired-by-policy).",
		}),
		wouldRevoke: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "odin_admin_unused_keys_would_revoke",
			Help: "Keys the last dry-run sweep of the unused-keys policy would have revoked (--revoke-unused-dry-run); 0 outside dry run.",
		}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "odin_admin_unused_keys_sweeps_total",
			Help: "Sweeps of the unused-keys policy, by result: ok, error (the store failed; the next sweep starts over), skipped (another admin replica was sweeping).",
		}, []string{"result"}),
	}
	for _, r := range []string{sweepOK, sweepError, sweepSkipped} {
		m.sweeps.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.revoked, m.wouldRevoke, m.sweeps} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
