package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The bus's timing. A replica publishes a probe to itself every busPing; it
// counts as in contact while it has received a probe it sent less than
// FenceAfter ago. Revokes wait for acknowledgements at most FenceAfter +
// clockMargin: by then every replica that has not acknowledged has stopped
// trusting its LRU (see Bus.Fenced).
const (
	busPing            = 200 * time.Millisecond
	DefaultFenceAfter  = time.Second
	clockMargin        = 500 * time.Millisecond
	heartbeatRetention = 3 * time.Second
	// heartbeatVisible is how recent a replica's last accepted heartbeat
	// must be for it to trust its LRU: well inside heartbeatRetention, so
	// that any revoker, even with a skewed clock, counts it as live and
	// waits for its acknowledgement.
	heartbeatVisible = 2 * time.Second
	// busStall is how long a subscription may go without a probe coming
	// back before it is dropped and made again: a connection to a node
	// that vanished without a reset, or a subscription left on a node that
	// no longer takes the bus's publishes.
	busStall = 3 * time.Second
)

// Bus is a replica's end of the invalidation bus. Besides delivering
// invalidations it publishes a probe to itself every busPing (through the
// same routing as every revoke: a probe that came back means every earlier
// message was handled), announces itself in a heartbeat set while in
// contact, and acknowledges the invalidations that ask for it. A replica
// out of contact for longer than FenceAfter is fenced (it answers no key
// from its LRU), and one that may have lost messages empties its caches.
// The protocol, and why probes rather than PINGs, is in docs/DESIGN.md
// ("Revocation and consistency") and docs/SCALING.md.
type Bus struct {
	r          *Redis
	id         string // empty: a listener only (no probes, heartbeat or acks)
	fenceAfter time.Duration

	// contact is the UnixNano send time of the newest probe received: every
	// message published before then has been handled.
	contact atomic.Int64
	// heartbeat is the UnixNano time of the last heartbeat Redis accepted:
	// revokers wait only for replicas they can see in the heartbeat set.
	heartbeat atomic.Int64
	// inflight are the send times of the probes published on the current
	// subscription and not back yet, oldest first.
	// lastBack is the send time of the newest probe back on it.
	mu       sync.Mutex
	inflight []int64
	lastBack int64
}

// NewBus returns a replica's bus end. fenceAfter <= 0 takes the default.
func (r *Redis) NewBus(replicaID string, fenceAfter time.Duration) *Bus {
	if fenceAfter <= 0 {
		fenceAfter = DefaultFenceAfter
	}
	return &Bus{r: r, id: replicaID, fenceAfter: fenceAfter}
}

// NewReplicaID returns a random replica id.
func NewReplicaID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "r-" + hex.EncodeToString(b[:])
}

// FenceAfter is the contact window.
func (b *Bus) FenceAfter() time.Duration { return b.fenceAfter }

// Fenced reports whether the replica may have missed invalidations: it has
// not heard from the bus about anything sent in the last FenceAfter.
func (b *Bus) Fenced(now time.Time) bool {
	return b.outOfContact(now) || now.UnixNano()-b.heartbeat.Load() > int64(heartbeatVisible)
}

// outOfContact: no probe sent within FenceAfter came back.
func (b *Bus) outOfContact(now time.Time) bool {
	return now.UnixNano()-b.contact.Load() > int64(b.fenceAfter)
}

func (r *Redis) channel() string { return r.busName("invalidate") }

// Publish sends an invalidation to every subscribed replica, after retrying
// a failed overwrite of the key's record (retryOverwrite), whose failure it
// reports once the message is out.
func (r *Redis) Publish(ctx context.Context, inv Invalidation) error {
	werr, err := r.publishInvalidation(ctx, inv)
	if err != nil {
		return err
	}
	return werr
}

// publishInvalidation publishes inv (err: it was not) after retrying the
// key's overwrite (werr: that failed).
func (r *Redis) publishInvalidation(ctx context.Context, inv Invalidation) (werr, err error) {
	if inv.Kind == InvalidateKey {
		werr = r.retryOverwrite(ctx, inv.Hash)
	}
	if err := r.publish(ctx, r.channel(), inv.encode()); err != nil {
		r.m.redisErrors.WithLabelValues("publish").Inc()
		return werr, fmt.Errorf("publish invalidation: %w", err)
	}
	return werr, nil
}

// Subscribe delivers every invalidation to fn until ctx ends, as a bus
// with no replica identity (no heartbeat, no acknowledgements): for
// processes such as odin admin that only listen.
func (r *Redis) Subscribe(ctx context.Context, fn func(Invalidation), ready func()) {
	(&Bus{r: r}).Run(ctx, fn, ready)
}

// busName names a key or channel of the bus. On a cluster they all carry
// the hash tag {bus}, so that the invalidation channel, the probes, the
// acknowledgements and the heartbeat set live on one shard: one master's
// failure either takes the whole bus (and every replica fences itself) or
// none of it. Elsewhere the names are unchanged since the first release.
func (r *Redis) busName(name string) string {
	if r.sharded {
		return r.prefix + "{bus}:" + name
	}
	return r.prefix + name
}

func (b *Bus) heartbeatKey() string   { return b.r.busName("replicas") }
func (b *Bus) allowlistsKey() string  { return b.r.busName(allowlistsSet) }
func (r *Redis) acksChannel() string  { return r.busName("acks") }
func (b *Bus) probeChannel() string   { return b.r.busName("probe:" + b.id) }
func isSubscribed(kind string) bool   { return kind == "subscribe" || kind == "ssubscribe" }
func isUnsubscribed(kind string) bool { return kind == "unsubscribe" || kind == "sunsubscribe" }

// publish sends a bus message: SPUBLISH on a cluster, so that it goes to the
// master owning the channel's slot, where the subscribers are; PUBLISH
// elsewhere.
func (r *Redis) publish(ctx context.Context, channel, msg string) error {
	if r.sharded {
		return r.client.SPublish(ctx, channel, msg).Err()
	}
	return r.client.Publish(ctx, channel, msg).Err()
}

// subscribe subscribes to bus channels (of one slot, on a cluster).
func (r *Redis) subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	if r.sharded {
		return r.client.SSubscribe(ctx, channels...)
	}
	return r.client.Subscribe(ctx, channels...)
}

// errResubscribe ends a subscription that has to be made again.
var errResubscribe = errors.New("subscription dropped")

// Run delivers invalidations to fn until ctx ends, probing, heartbeating and
// acknowledging as described on Bus. Whenever it (re)subscribes, fn gets
// InvalidateAll before anything else: messages published while it was not
// subscribed are lost. ready is called after the first subscription.
func (b *Bus) Run(ctx context.Context, fn func(Invalidation), ready func()) {
	r := b.r
	if b.id != "" {
		go b.heartbeatLoop(ctx)
	}
	first, retry := true, 50*time.Millisecond
	onSubscribed := func() {
		if r.sharded && !first {
			// A failover of the bus's shard: other writes may be lost too.
			r.trust.raise(time.Now().UnixNano())
		}
		fn(Invalidation{Kind: InvalidateAll})
		if first {
			first = false
			if ready != nil {
				ready()
			}
			return
		}
		r.m.busMessages.WithLabelValues("resubscribed").Inc()
		r.log.Info("invalidation bus reconnected, dropping cached entries that may have missed messages")
	}
	for ctx.Err() == nil {
		subscribed, err := b.session(ctx, fn, onSubscribed)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			retry = 50 * time.Millisecond
		}
		r.m.redisErrors.WithLabelValues("subscribe").Inc()
		if r.errLog.Allow() {
			r.log.Warn("invalidation bus disconnected, retrying", "error", err.Error())
		}
		r.conn.ReloadTopology(ctx) // the channel's slot may have a new master
		select {                   // do not spin while Redis is away
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, time.Second)
	}
}

// session makes one subscription and handles what arrives on it until it
// is lost, which it reports with whether it was ever confirmed. Only probes
// received on a confirmed subscription count as contact, and a second
// confirmation (go-redis reconnected underneath) ends the session, so that
// each subscription starts with InvalidateAll.
func (b *Bus) session(ctx context.Context, fn func(Invalidation), onSubscribed func()) (bool, error) {
	r := b.r
	sctx, cancel := context.WithCancel(ctx)
	channels := []string{r.channel()}
	if b.id != "" {
		channels = append(channels, b.probeChannel())
	}
	ps := r.subscribe(sctx, channels...)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		_ = ps.Close()
		wg.Wait()
	}()
	if b.id != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.probeLoop(sctx, ps)
		}()
	}
	live, confirmed := false, 0
	for {
		msg, err := ps.Receive(sctx)
		if err != nil {
			return live, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			switch {
			case isSubscribed(m.Kind):
				confirmed++
				if confirmed > len(channels) {
					return live, errResubscribe
				}
				if confirmed == len(channels) {
					live = true
					b.mu.Lock()
					b.inflight = b.inflight[:0] // sent before: delivered or not
					b.lastBack = time.Now().UnixNano()
					b.mu.Unlock()
					onSubscribed()
				}
			case isUnsubscribed(m.Kind):
				// The server dropped us: on a cluster, the bus's slot moved.
				return live, errResubscribe
			}
		case *redis.Message:
			if m.Channel != channels[0] {
				if live {
					b.probed(m.Payload, fn)
				}
				continue
			}
			inv, err := decodeInvalidation(m.Payload)
			if err != nil {
				r.m.busMessages.WithLabelValues("invalid").Inc()
				continue
			}
			r.m.busMessages.WithLabelValues("received").Inc()
			if inv.Kind == InvalidateKey {
				r.trust.invalidated(inv.Hash, time.Now())
			}
			fn(inv)
			if inv.AckID != "" && b.id != "" {
				actx, cancel := context.WithTimeout(ctx, r.opTimeout)
				if err := r.publish(actx, r.acksChannel(), inv.AckID+" "+b.id); err != nil {
					r.m.redisErrors.WithLabelValues("ack").Inc()
				}
				cancel()
			}
		}
	}
}

// probeLoop publishes a probe every busPing, and closes ps when no probe
// has come back for busStall, so that session starts over.
func (b *Bus) probeLoop(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(busPing)
	defer t.Stop()
	start := time.Now().UnixNano()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		if now-max(start, b.contact.Load()) > int64(busStall) {
			_ = ps.Close()
			return
		}
		b.mu.Lock()                // before the publish: the probe may be back before it returns
		if len(b.inflight) >= 64 { // none back for 12s: the stall check resubscribes
			b.inflight = b.inflight[1:]
		}
		b.inflight = append(b.inflight, now)
		b.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, b.r.opTimeout)
		if err := b.r.publish(pctx, b.probeChannel(), strconv.FormatInt(now, 10)); err != nil {
			b.mu.Lock() // not sent (or not known to be): not awaited
			if i := slices.Index(b.inflight, now); i >= 0 {
				b.inflight = slices.Delete(b.inflight, i, i+1)
			}
			b.mu.Unlock()
			if ctx.Err() == nil {
				b.r.m.redisErrors.WithLabelValues("probe").Inc()
			}
		}
		cancel()
	}
}

// probed records a probe that came back. Probes are published one after
// the other and delivered in order, so a probe published before it that is
// still awaited was lost, and so may have been any message published
// around it: the subscription stayed up, but the path to it broke (on a
// cluster, a subscription held by a replica whose master died). So may a
// message published while no probe could be: when the previous probe that
// came back was sent more than FenceAfter earlier, the replica was out of
// contact. Either way the caches start over, as after a resubscription.
func (b *Bus) probed(payload string, fn func(Invalidation)) {
	sent, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		return
	}
	b.mu.Lock()
	i := 0
	for i < len(b.inflight) && b.inflight[i] < sent {
		i++
	}
	lost := i > 0 || sent-b.lastBack > int64(b.fenceAfter)
	if i < len(b.inflight) && b.inflight[i] == sent {
		i++
	}
	b.inflight = b.inflight[i:]
	b.lastBack = max(b.lastBack, sent)
	b.mu.Unlock()
	if lost {
		r := b.r
		if r.sharded {
			r.trust.raise(time.Now().UnixNano())
		}
		fn(Invalidation{Kind: InvalidateAll})
		r.m.busMessages.WithLabelValues("resynced").Inc()
		if r.errLog.Allow() {
			r.log.Warn("invalidation bus lost messages, dropping cached entries that may have missed them")
		}
	}
	for {
		cur := b.contact.Load()
		if sent <= cur || b.contact.CompareAndSwap(cur, sent) {
			return
		}
	}
}

func (b *Bus) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(busPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.r.opTimeout)
			b.r.client.ZRem(dctx, b.heartbeatKey(), b.id)
			b.r.client.ZRem(dctx, b.allowlistsKey(), b.id)
			cancel()
			return
		case <-t.C:
		}
		now := time.Now()
		if b.outOfContact(now) {
			continue // out of contact: do not ask revokers to wait for us
		}
		hctx, cancel := context.WithTimeout(ctx, b.r.opTimeout)
		pipe := b.r.client.Pipeline() // one key: one node, even on a cluster
		pipe.ZAdd(hctx, b.heartbeatKey(), redis.Z{Score: float64(now.UnixMilli()), Member: b.id})
		pipe.ZRemRangeByScore(hctx, b.heartbeatKey(), "-inf", fmt.Sprint(now.Add(-10*heartbeatRetention).UnixMilli()))
		// This version enforces keys' network allowlists: say so beside
		// the heartbeat (same slot), for ReplicasIgnoringAllowlists.
		pipe.ZAdd(hctx, b.allowlistsKey(), redis.Z{Score: float64(now.UnixMilli()), Member: b.id})
		pipe.ZRemRangeByScore(hctx, b.allowlistsKey(), "-inf", fmt.Sprint(now.Add(-10*heartbeatRetention).UnixMilli()))
		if _, err := pipe.Exec(hctx); err != nil {
			b.r.m.redisErrors.WithLabelValues("heartbeat").Inc()
		} else {
			b.heartbeat.Store(now.UnixNano())
		}
		cancel()
	}
}

// PublishAndWait publishes inv and waits until every replica seen alive in
// the last few seconds has acknowledged it, or until FenceAfter + margin,
// after which any replica that has not acknowledged is fenced. It returns
// the replicas that did not acknowledge.
func (r *Redis) PublishAndWait(ctx context.Context, inv Invalidation, fenceAfter time.Duration) ([]string, error) {
	if fenceAfter <= 0 {
		fenceAfter = DefaultFenceAfter
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	inv.AckID = hex.EncodeToString(b[:])
	acks := r.subscribe(ctx, r.acksChannel())
	defer acks.Close()
	msg, err := acks.ReceiveTimeout(ctx, time.Second) // the subscription confirmation
	if err != nil {
		return nil, fmt.Errorf("subscribe to acknowledgements: %w", err)
	}
	if s, ok := msg.(*redis.Subscription); !ok || !isSubscribed(s.Kind) {
		return nil, fmt.Errorf("subscribe to acknowledgements: unexpected %v", msg)
	}
	now := time.Now()
	live, err := r.client.ZRangeByScore(ctx, r.busName("replicas"), &redis.ZRangeBy{
		Min: fmt.Sprint(now.Add(-heartbeatRetention).UnixMilli()), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read live replicas: %w", err)
	}
	werr, err := r.publishInvalidation(ctx, inv)
	if err != nil {
		return nil, err
	}
	waiting := make(map[string]bool, len(live))
	for _, id := range live {
		waiting[id] = true
	}
	deadline := time.Now().Add(fenceAfter + clockMargin)
	for len(waiting) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		msg, err := acks.ReceiveTimeout(ctx, left)
		if err != nil {
			break // deadline, or the connection failed: fencing covers the rest
		}
		if m, ok := msg.(*redis.Message); ok {
			if ackID, id, ok := strings.Cut(m.Payload, " "); ok && ackID == inv.AckID {
				delete(waiting, id)
			}
		}
	}
	if len(waiting) == 0 {
		return nil, werr
	}
	missing := make([]string, 0, len(waiting))
	for id := range waiting {
		missing = append(missing, id)
	}
	// Whoever did not answer has been out of contact for FenceAfter by now.
	time.Sleep(time.Until(deadline))
	return missing, werr
}

// allowlistsSet names the set in which replicas that enforce keys'
// network allowlists announce themselves, with the heartbeat's score.
// Releases before allowlists heartbeat only in "replicas": they read a
// key's allowlist as nothing at all, and would let the key in from any
// network.
const allowlistsSet = "features:allowed_cidrs"

// ReplicasIgnoringAllowlists returns the live replicas on the bus (those
// a revoker waits for) that do not announce enforcing network
// allowlists: replicas of a release before them, during a rolling
// upgrade. Giving a key an allowlist while one runs would leave that
// replica accepting the key from anywhere, so the Manager refuses it
// (ErrNotEnforced).
func (r *Redis) ReplicasIgnoringAllowlists(ctx context.Context, now time.Time) ([]string, error) {
	since := &redis.ZRangeBy{Min: fmt.Sprint(now.Add(-heartbeatRetention).UnixMilli()), Max: "+inf"}
	live, err := r.client.ZRangeByScore(ctx, r.busName("replicas"), since).Result()
	if err != nil {
		return nil, fmt.Errorf("read live replicas: %w", err)
	}
	if len(live) == 0 {
		return nil, nil
	}
	// Any announcement in the retention counts: a replica announces in
	// the heartbeat's own pipeline, so one seen alive has announced.
	all := &redis.ZRangeBy{Min: fmt.Sprint(now.Add(-10 * heartbeatRetention).UnixMilli()), Max: "+inf"}
	enforcing, err := r.client.ZRangeByScore(ctx, r.busName(allowlistsSet), all).Result()
	if err != nil {
		return nil, fmt.Errorf("read replicas enforcing allowlists: %w", err)
	}
	var missing []string
	for _, id := range live {
		if !slices.Contains(enforcing, id) {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// Replica is one replica in the bus's heartbeat set, as a reader outside
// it sees it (Redis.Replicas).
type Replica struct {
	ID string
	// LastSeen is its last heartbeat Redis accepted, by its own clock.
	LastSeen time.Time
	// Live: that heartbeat is recent enough for the replica to trust its
	// cache. Otherwise it is fenced (out of contact with the bus: it
	// answers no key from its cache) or stopped without leaving the set;
	// either way revokers no longer wait for it, and its entry leaves the
	// set within half a minute.
	Live bool
}

// Replicas lists the replicas in the bus's heartbeat set at now, most
// recently seen first: read only, for a status page (one ZRANGE).
func (r *Redis) Replicas(ctx context.Context, now time.Time) ([]Replica, error) {
	zs, err := r.client.ZRevRangeWithScores(ctx, r.busName("replicas"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read the replicas' heartbeats: %w", err)
	}
	out := make([]Replica, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		seen := time.UnixMilli(int64(z.Score))
		out = append(out, Replica{ID: id, LastSeen: seen, Live: now.Sub(seen) <= heartbeatVisible})
	}
	return out, nil
}
