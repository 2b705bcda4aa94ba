package authzsvc_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/odin-scan/odin-authz/internal/service/authzsvc/authztest"
	"github.com/odin-scan/odin-authz/keystore"
)

// SIGTERM (context cancelled) under load: health flips to NOT_SERVING, every
// check already started gets its answer, and Serve returns.
func TestDrainOnShutdown(t *testing.T) {
	f := authztest.NewFixture(t, authztest.NoRedis)
	r := authztest.StartReplica(t, f.Config())
	key, _ := f.CreateKey(t, keystore.NewKey{})
	hc := healthpb.NewHealthClient(r.Conn)
	if hr, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before drain: %v %v", hr.GetStatus(), err)
	}
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		answered, refused int
		unexpected        []error
		stop              = make(chan struct{})
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := r.Client.Check(context.Background(), authztest.EnvoyRequest("GET", "/", map[string]string{"api-key": key}), grpc.WaitForReady(false))
				mu.Lock()
				switch status.Code(err) {
				case codes.OK:
					answered++
				case codes.Unavailable: // after the listener closed: refused, never cut mid-answer
					refused++
				default:
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	returned, err := r.Drain(10 * time.Second)
	if !returned {
		t.Fatal("Serve did not return after drain")
	}
	if err != nil {
		t.Errorf("Serve returned %v", err)
	}
	close(stop)
	wg.Wait()
	if len(unexpected) > 0 {
		t.Errorf("%d checks failed with unexpected errors, first: %v", len(unexpected), unexpected[0])
	}
	if answered == 0 {
		t.Error("no check answered before shutdown")
	}
	t.Logf("drain: %d checks answered, %d refused after close", answered, refused)
	if !r.Svc.Readiness().Report().Draining {
		t.Error("readiness not draining")
	}
}
