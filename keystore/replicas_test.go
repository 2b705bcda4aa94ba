package keystore_test

import (
	"context"
	"fmt"
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
