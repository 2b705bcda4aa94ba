// Package groupcommit shares round trips between concurrent callers: the
// first caller sends its request at once, with no wait; callers arriving
// while a round trip is in flight queue, and go together in the next. Each
// request is sent after its caller asked, so nothing is answered from
// before the call, and nothing waits that would not have waited anyway.
package groupcommit

import (
	"context"
	"sync"
)

// Batcher groups calls of type T (a pointer to the request, whose answer
// Send fills in) into batches for Send. Its zero value is not usable: see
// New.
type Batcher[T any] struct {
	send func(batch []T)
	max  int

	mu     sync.Mutex
	queue  []T
	dones  []chan struct{}
	flying bool
}

// New returns a Batcher whose batches, at most max calls each, go to
// send. send must answer every call of its batch before it returns.
func New[T any](max int, send func(batch []T)) *Batcher[T] {
	return &Batcher[T]{send: send, max: max}
}

// Do sends v, alone if no round trip is in flight, else with the calls
// queued meanwhile once the round trip in flight is over. It reports false
// when ctx ended before v was answered (v's answer, when it comes, is then
// not used).
func (b *Batcher[T]) Do(ctx context.Context, v T) bool {
	b.mu.Lock()
	if b.flying {
		done := make(chan struct{})
		b.queue = append(b.queue, v)
		b.dones = append(b.dones, done)
		b.mu.Unlock()
		select {
		case <-done:
			return true
		case <-ctx.Done():
			return false
		}
	}
	b.flying = true
	b.mu.Unlock()
	b.send([]T{v})
	if next, dones := b.take(); len(next) > 0 {
		go b.drain(next, dones) // the caller goes on at once
	}
	return true
}

// take removes up to max queued calls; when none are queued it ends the
// flight.
func (b *Batcher[T]) take() ([]T, []chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch, dones := b.queue, b.dones
	if len(batch) > b.max {
		batch, dones = batch[:b.max:b.max], dones[:b.max:b.max]
		b.queue, b.dones = b.queue[b.max:], b.dones[b.max:]
	} else {
		b.queue, b.dones = nil, nil
	}
	if len(batch) == 0 {
		b.flying = false
	}
	return batch, dones
}

// drain sends queued calls until none are left.
func (b *Batcher[T]) drain(batch []T, dones []chan struct{}) {
	for len(batch) > 0 {
		b.send(batch)
		for _, d := range dones {
			close(d)
		}
		batch, dones = b.take()
	}
}

// Queued is the number of calls waiting, for tests.
func (b *Batcher[T]) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}
