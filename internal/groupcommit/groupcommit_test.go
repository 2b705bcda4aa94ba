package groupcommit

import (
	"context"
	"sync"
	"testing"
	"time"
)

type call struct {
	in, out int
}

// TestCallsQueuedDuringAFlightGoTogether: the first call is sent alone;
// the calls made while it is in flight go in one batch of at most max, the
// rest in the next; every call gets its own answer; a caller whose context
// ends stops waiting.
func TestCallsQueuedDuringAFlightGoTogether(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	var b *Batcher[*call]
	b = New(10, func(batch []*call) {
		mu.Lock()
		first := len(sizes) == 0
		sizes = append(sizes, len(batch))
		mu.Unlock()
		if first {
			<-release
		}
		for _, c := range batch {
			c.out = c.in * 2
		}
	})
	const n = 25
	calls := make([]*call, n)
	for i := range calls {
		calls[i] = &call{in: i}
	}
	var wg sync.WaitGroup
	wg.Go(func() { b.Do(context.Background(), calls[0]) })
	for {
		mu.Lock()
		started := len(sizes) == 1
		mu.Unlock()
		if started {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < n; i++ {
		wg.Go(func() {
			if !b.Do(context.Background(), calls[i]) {
				t.Errorf("call %d not answered", i)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	late := &call{in: 100}
	gaveUp := make(chan bool)
	go func() { gaveUp <- b.Do(ctx, late) }()
	for b.Queued() != n {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if <-gaveUp {
		t.Error("a call whose context ended reported an answer")
	}
	close(release)
	wg.Wait()
	for _, c := range calls {
		if c.out != c.in*2 {
			t.Errorf("call %d answered %d", c.in, c.out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 4 || sizes[0] != 1 || sizes[1] != 10 || sizes[2] != 10 || sizes[3] != 5 {
		t.Errorf("batches of %v, want [1 10 10 5] (24 queued and one that gave up, at most 10 a batch)", sizes)
	}
	if b.Queued() != 0 {
		t.Error("calls left queued")
	}
}
