// Package retry holds the waiting the registry adapters share between
// attempts: exponential backoff with jitter, and a sleep that ends with a
// context.
package retry

import (
	"context"
	"time"
)

// Backoff is the wait after the attempt-th consecutive failure (attempt >=
// 1): base doubling per attempt, capped at ceiling, with "equal jitter": a
// uniform value in [d/2, d), so the retries of many watchers spread out but
// none retries at once. rnd returns a value in [0,1).
func Backoff(attempt int, base, ceiling time.Duration, rnd func() float64) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	half := d / 2
	return half + time.Duration(rnd()*float64(d-half))
}

// Sleep waits for d or until ctx ends, and reports whether ctx is still
// live. A d of zero or less does not wait.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
