package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/odin-scan/odin-authz/keystore"
)

// Replicas lists the bus's heartbeat set: a running replica is live, one
// whose last heartbeat is old is not, and a stopped replica leaves it.
func TestReplicas(t *testing.T) {
	rd, raw, prefix := openTestRedis(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if got, err := rd.Replicas(ctx, time.Now()); err != nil || len(got) != 0 {
		t.Fatalf("no replica yet: %v, %v", got, err)
	}
	id := keystore.NewReplicaID()
	bus := rd.NewBus(id, 0)
	go bus.Run(ctx, func(keystore.Invalidation) {}, nil)
	stale := time.Now().Add(-10 * time.Second)
	if err := raw.ZAdd(ctx, prefix+"replicas", redis.Z{Score: float64(stale.UnixMilli()), Member: "replica-gone"}).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := rd.Replicas(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 && got[0].ID == id && got[0].Live {
			if got[1].ID != "replica-gone" || got[1].Live || !got[1].LastSeen.Equal(time.UnixMilli(stale.UnixMilli())) {
				t.Fatalf("the stale replica: %+v", got[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running replica is not listed live within 10s: %s", fmt.Sprint(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel() // its heartbeat loop takes it out of the set as it stops
	for deadline := time.Now().Add(10 * time.Second); ; {
		got, err := rd.Replicas(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && got[0].ID == "replica-gone" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped replica is still listed after 10s: %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A key is given an allowlist only while every live replica on the bus
// enforces allowlists: a replica of an older release (one that
// heartbeats without announcing them) would accept the key from
// anywhere, so creating or changing a key to have one is refused, naming
// it, until it is gone. Keys without an allowlist, and removing one, are
// not held up.
func TestAllowlistsNeedEveryReplica(t *testing.T) {
	rd, raw, prefix := openTestRedis(t)
	m := keystore.NewManager(newStore(t), rd, keystore.ManagerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	current := keystore.NewReplicaID()
	go rd.NewBus(current, 0).Run(ctx, func(keystore.Invalidation) {}, nil)
	for deadline := time.Now().Add(10 * time.Second); ; {
		live, err := rd.Replicas(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(live) == 1 && live[0].Live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica is not live within 10s: %v", live)
		}
		time.Sleep(20 * time.Millisecond)
	}
	nets, _ := keystore.ParseCIDRs([]string{"192.0.2.0/24"})
	by := keystore.Actor{ID: "operator"}
	if _, _, err := m.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "ci", AllowedCIDRs: nets}); err != nil {
		t.Fatalf("every replica enforces allowlists: %v", err)
	}

	// An older replica: it heartbeats, and never announces allowlists.
	oldCtx, stopOld := context.WithCancel(ctx)
	oldDone := make(chan struct{})
	go func() {
		defer close(oldDone)
		for {
			raw.ZAdd(oldCtx, prefix+"replicas", redis.Z{Score: float64(time.Now().UnixMilli()), Member: "replica-old"})
			select {
			case <-oldCtx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		missing, err := rd.ReplicasIgnoringAllowlists(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 1 && missing[0] == "replica-old" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the older replica is not seen: %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _, err := m.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "ci", AllowedCIDRs: nets})
	if !errors.Is(err, keystore.ErrNotEnforced) || !strings.Contains(err.Error(), "1 odin authz replica(s) on the bus do not enforce network allowlists (replica-old)") {
		t.Fatalf("create with an allowlist beside an older replica: %v; want ErrNotEnforced naming it", err)
	}
	_, plain, err := m.Create(ctx, by, keystore.NewKey{UserID: "user_1", Name: "anywhere"})
	if err != nil {
		t.Fatalf("a key without an allowlist: %v", err)
	}
	if _, err := m.Update(ctx, by, plain.ID, keystore.KeyUpdate{AllowedCIDRs: &nets}); !errors.Is(err, keystore.ErrNotEnforced) {
		t.Fatalf("give a key an allowlist beside an older replica: %v; want ErrNotEnforced", err)
	}
	if k, err := m.Store().Key(ctx, plain.ID); err != nil || k.AllowedCIDRs != nil {
		t.Fatalf("the refused change was stored: %+v, %v", k, err)
	}

	stopOld()
	<-oldDone
	raw.ZRem(ctx, prefix+"replicas", "replica-old") // as a stopping replica does
	if _, err := m.Update(ctx, by, plain.ID, keystore.KeyUpdate{AllowedCIDRs: &nets}); err != nil {
		t.Fatalf("once the older replica is gone: %v", err)
	}
}
