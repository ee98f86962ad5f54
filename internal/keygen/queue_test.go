package keygen

import (
	"context"
	"testing"
	"time"
)

// With one slot busy, waiters are served cheapest first, equal costs in arrival order.
func TestSlotsServeTheCheapestWaiterFirst(t *testing.T) {
	s := newSlots(1)
	if !s.acquire(context.Background(), 4096) {
		t.Fatal("first acquire failed")
	}
	order := make(chan int, 4)
	start := func(cost int) {
		go func() {
			if s.acquire(context.Background(), cost) {
				order <- cost
				s.release()
			}
		}()
	}
	for i, cost := range []int{4096, 3072, 2048} {
		start(cost)
		waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiters) == i+1 })
	}
	s.release()
	for _, want := range []int{2048, 3072, 4096} {
		select {
		case got := <-order:
			if got != want {
				t.Fatalf("served %d, want %d", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no waiter served")
		}
	}
}

func TestACancelledWaiterLeavesTheQueue(t *testing.T) {
	s := newSlots(1)
	s.acquire(context.Background(), 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- s.acquire(ctx, 2048) }()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiters) == 1 })
	cancel()
	if <-done {
		t.Fatal("a cancelled waiter got a slot")
	}
	s.release()
	if !s.acquire(context.Background(), 1) {
		t.Fatal("the slot was lost")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(time.Millisecond)
	}
}
