package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The bus's timing. A replica pings its subscription every busPing; it
// counts as in contact while it has received the answer to a ping sent
// less than FenceAfter ago. Revokes wait for acknowledgements at most
// FenceAfter + clockMargin: by then every replica that has not
// acknowledged has stopped trusting its LRU (see Bus.Fenced).
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
)

// Bus is a replica's end of the invalidation bus. Besides delivering
// invalidations it
//   - pings its subscription and records when it last heard an answer to a
//     ping it sent after a given time (pongs come back in order after any
//     message published before the ping reached Redis);
//   - announces itself in a heartbeat set while in contact, so a revoker
//     knows whom to wait for;
//   - acknowledges every invalidation that asks for it, after acting on it.
//
// A replica out of contact for longer than FenceAfter, or whose heartbeat
// revokers may no longer see, is fenced: it answers no key from its LRU.
// Together these make a revoke that returned after all acknowledgements (or
// after FenceAfter + margin) final on every replica.
type Bus struct {
	r          *Redis
	id         string // empty: a listener only (no heartbeat, no acks)
	fenceAfter time.Duration

	// contact is the UnixNano send time of the newest ping whose pong was
	// received: every message published before then has been handled.
	contact atomic.Int64
	// heartbeat is the UnixNano time of the last heartbeat Redis accepted:
	// revokers wait only for replicas they can see in the heartbeat set.
	heartbeat atomic.Int64
	mu        sync.Mutex
	pings     []int64 // send times of pings in flight, oldest first
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

// outOfContact: no answer to a ping sent within FenceAfter.
func (b *Bus) outOfContact(now time.Time) bool {
	return now.UnixNano()-b.contact.Load() > int64(b.fenceAfter)
}

func (b *Bus) heartbeatKey() string { return b.r.prefix + "replicas" }
func (b *Bus) acksChannel() string  { return b.r.prefix + "acks" }

// Run delivers invalidations to fn until ctx ends (see Redis.Subscribe for
// reconnects), pinging, heartbeating and acknowledging as described on Bus.
func (b *Bus) Run(ctx context.Context, fn func(Invalidation), ready func()) {
	r := b.r
	ps := r.client.Subscribe(ctx, r.channel())
	defer ps.Close()
	if b.id != "" {
		go b.pingLoop(ctx, ps)
		go b.heartbeatLoop(ctx)
	}
	subscribed, retry := false, 50*time.Millisecond
	for ctx.Err() == nil {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.resetPings()
			r.m.redisErrors.WithLabelValues("subscribe").Inc()
			if r.errLog.allow() {
				r.log.Warn("invalidation bus disconnected, retrying", "error", err.Error())
			}
			select { // go-redis reconnects on the next Receive; do not spin meanwhile
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, 2*time.Second)
			continue
		}
		retry = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if subscribed {
				r.m.busMessages.WithLabelValues("resubscribed").Inc()
				r.log.Info("invalidation bus reconnected, dropping cached entries that may have missed messages")
				fn(Invalidation{Kind: InvalidateAll})
			} else if ready != nil {
				ready()
			}
			subscribed = true
		case *redis.Pong:
			b.pong()
		case *redis.Message:
			inv, err := decodeInvalidation(m.Payload)
			if err != nil {
				r.m.busMessages.WithLabelValues("invalid").Inc()
				continue
			}
			r.m.busMessages.WithLabelValues("received").Inc()
			fn(inv)
			if inv.AckID != "" && b.id != "" {
				actx, cancel := context.WithTimeout(ctx, r.opTimeout)
				if err := r.client.Publish(actx, b.acksChannel(), inv.AckID+" "+b.id).Err(); err != nil {
					r.m.redisErrors.WithLabelValues("ack").Inc()
				}
				cancel()
			}
		}
	}
}

func (b *Bus) pingLoop(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(busPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		if len(b.pings) < 64 { // unanswered pings pile up only while disconnected
			b.pings = append(b.pings, time.Now().UnixNano())
		}
		b.mu.Unlock()
		if err := ps.Ping(ctx); err != nil {
			b.resetPings()
		}
	}
}

// pong matches an answer with the oldest ping in flight.
func (b *Bus) pong() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pings) == 0 {
		return
	}
	sent := b.pings[0]
	b.pings = b.pings[1:]
	if sent > b.contact.Load() {
		b.contact.Store(sent)
	}
}

func (b *Bus) resetPings() {
	b.mu.Lock()
	b.pings = b.pings[:0]
	b.mu.Unlock()
}

func (b *Bus) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(busPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.r.opTimeout)
			b.r.client.ZRem(dctx, b.heartbeatKey(), b.id)
			cancel()
			return
		case <-t.C:
		}
		now := time.Now()
		if b.outOfContact(now) {
			continue // out of contact: do not ask revokers to wait for us
		}
		hctx, cancel := context.WithTimeout(ctx, b.r.opTimeout)
		pipe := b.r.client.Pipeline()
		pipe.ZAdd(hctx, b.heartbeatKey(), redis.Z{Score: float64(now.UnixMilli()), Member: b.id})
		pipe.ZRemRangeByScore(hctx, b.heartbeatKey(), "-inf", fmt.Sprint(now.Add(-10*heartbeatRetention).UnixMilli()))
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
	acks := r.client.Subscribe(ctx, r.prefix+"acks")
	defer acks.Close()
	if _, err := acks.ReceiveTimeout(ctx, time.Second); err != nil { // the subscription confirmation
		return nil, fmt.Errorf("subscribe to acknowledgements: %w", err)
	}
	now := time.Now()
	live, err := r.client.ZRangeByScore(ctx, r.prefix+"replicas", &redis.ZRangeBy{
		Min: fmt.Sprint(now.Add(-heartbeatRetention).UnixMilli()), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read live replicas: %w", err)
	}
	if err := r.Publish(ctx, inv); err != nil {
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
		return nil, nil
	}
	missing := make([]string, 0, len(waiting))
	for id := range waiting {
		missing = append(missing, id)
	}
	// Whoever did not answer has been out of contact for FenceAfter by now.
	time.Sleep(time.Until(deadline))
	return missing, nil
}
