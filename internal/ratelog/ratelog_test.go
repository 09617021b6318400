package ratelog

import (
	"sync"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var l Limiter
	steps := []struct {
		at      time.Duration
		ok      bool
		skipped int
	}{
		{0, true, 0},            // the first goes through
		{time.Second, false, 0}, // held back
		{59 * time.Second, false, 0},
		{Interval, true, 2},        // a minute after the last: says the two held back
		{Interval + 1, false, 0},   //
		{3 * Interval, true, 1},    // long after: goes through at once
		{3*Interval - 1, false, 0}, // a clock that went back is held back
	}
	for i, s := range steps {
		ok, skipped := l.Allow(t0.Add(s.at))
		if ok != s.ok || skipped != s.skipped {
			t.Errorf("step %d (at %v): Allow = %v, %d; want %v, %d", i, s.at, ok, skipped, s.ok, s.skipped)
		}
	}
}

// Many goroutines at once: one line goes through, and the next one counts
// every other.
func TestLimiterConcurrent(t *testing.T) {
	var l Limiter
	now := time.Unix(1_000_000, 0)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		through int
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := l.Allow(now); ok {
				mu.Lock()
				through++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if through != 1 {
		t.Fatalf("%d lines let through at once; want 1", through)
	}
	if ok, skipped := l.Allow(now.Add(Interval)); !ok || skipped != 63 {
		t.Fatalf("a minute later: Allow = %v, %d; want true, 63", ok, skipped)
	}
}
