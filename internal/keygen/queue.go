package keygen

import (
	"container/heap"
	"context"
	"sync"
)

// slots hands the pool's worker slots to waiting generations cheapest first: an RSA-2048
// key (tens of milliseconds) never waits behind a queue of RSA-4096 ones (up to seconds
// each), so small keys stay fast while big ones drain. Equal costs go in arrival order.
type slots struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters waiterHeap
}

type waiter struct {
	cost  int
	seq   uint64
	ready chan struct{}
	index int
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire waits for a slot, or returns false when ctx ends first.
func (s *slots) acquire(ctx context.Context, cost int) bool {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters) == 0 {
		s.free--
		s.mu.Unlock()
		return true
	}
	w := &waiter{cost: cost, seq: s.seq, ready: make(chan struct{})}
	s.seq++
	heap.Push(&s.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-w.ready: // handed a slot just as ctx ended: give it back
			s.releaseLocked()
		default:
			heap.Remove(&s.waiters, w.index)
		}
		return false
	}
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *slots) releaseLocked() {
	if len(s.waiters) > 0 {
		close(heap.Pop(&s.waiters).(*waiter).ready)
		return
	}
	s.free++
}

type waiterHeap []*waiter

func (h waiterHeap) Len() int { return len(h) }
func (h waiterHeap) Less(i, j int) bool {
	if h[i].cost != h[j].cost {
		return h[i].cost < h[j].cost
	}
	return h[i].seq < h[j].seq
}
func (h waiterHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waiterHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waiterHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	*h = old[:len(old)-1]
	return w
}
