package keystore

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Invalidation is one message on the bus.
type Invalidation struct {
	// Kind says what to drop.
	Kind InvalidationKind
	// Hash is the key's hash for InvalidateKey.
	Hash Hash
	// SessionID is the session for InvalidateSession.
	SessionID string
	// AckID, when set, asks every replica to acknowledge the message on the
	// acks channel once it has acted on it.
	AckID string
	// LSN, when set, is the primary's WAL position after the change: a read
	// replica that has not replayed it must not answer for the key
	// (Watermark). Messages without one are still understood.
	LSN LSN
}

// InvalidationKind says what an Invalidation drops.
type InvalidationKind uint8

// The kinds of invalidation.
const (
	// InvalidateKey drops one key hash from every cache.
	InvalidateKey InvalidationKind = iota + 1
	// InvalidateAll drops everything: sent to a subscriber after it
	// reconnects, since it may have missed messages while it was away.
	InvalidateAll
	// InvalidateSession revokes every token of one session.
	InvalidateSession
)

func (inv Invalidation) encode() string {
	var msg string
	switch inv.Kind {
	case InvalidateKey:
		msg = "key " + inv.Hash.String()
	case InvalidateSession:
		msg = "session " + inv.SessionID
	default:
		msg = "all -"
	}
	if inv.AckID != "" {
		msg += " " + inv.AckID
	}
	if inv.LSN != 0 { // "16/B374D848": the slash tells it from an ack id
		msg += " " + inv.LSN.String()
	}
	return msg
}

func decodeInvalidation(s string) (Invalidation, error) {
	kind, arg, _ := strings.Cut(s, " ")
	arg, rest, _ := strings.Cut(arg, " ")
	inv, err := decodeKind(kind, arg)
	for _, f := range strings.Fields(rest) {
		if !strings.Contains(f, "/") {
			inv.AckID = f
		} else if lsn, perr := ParseLSN(f); perr == nil { // a bad one is dropped: receivers then resync
			inv.LSN = lsn
		}
	}
	return inv, err
}

func decodeKind(kind, arg string) (Invalidation, error) {
	switch kind {
	case "key":
		h, err := ParseHash(arg)
		if err != nil {
			return Invalidation{}, err
		}
		return Invalidation{Kind: InvalidateKey, Hash: h}, nil
	case "all":
		return Invalidation{Kind: InvalidateAll}, nil
	case "session":
		if !ValidSessionID(arg) {
			return Invalidation{}, errors.New("invalid session id")
		}
		return Invalidation{Kind: InvalidateSession, SessionID: arg}, nil
	}
	return Invalidation{}, fmt.Errorf("unknown invalidation %q", kind)
}

// Receivers are what one process keeps that invalidations change. Apply is
// the one way an invalidation reaches them, whether it came on the bus or,
// in a process without Redis, from the Manager's Notify.
type Receivers struct {
	// Watermark, when set (a read replica is configured), is told first:
	// a lookup that misses the caches must already see the change's
	// position.
	Watermark *Watermark
	// Keys, when set, drops what the invalidation names from the key
	// cache tiers (a *Cache).
	Keys interface{ Invalidate(Invalidation) }
	// Sessions, when set, adds a revoked session at once, or re-syncs
	// after InvalidateAll.
	Sessions *RevokedSessions
}

// Apply hands inv to every receiver, in the order above. ctx bounds the
// background work it starts (a session re-sync).
func (r Receivers) Apply(ctx context.Context, inv Invalidation) {
	r.Watermark.Apply(inv) // a nil Watermark ignores it
	if r.Keys != nil {
		r.Keys.Invalidate(inv)
	}
	if r.Sessions != nil {
		r.Sessions.Apply(ctx, inv)
	}
}
