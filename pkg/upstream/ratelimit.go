package upstream

import (
	"math"
	"sync/atomic"
	"time"
)

// RateLimit is a local token bucket: requests (or connections, for a tcp
// upstream) per second, with a burst. Zero RequestsPerSecond means none.
type RateLimit struct {
	// RequestsPerSecond is the sustained rate; fractions are allowed.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// Burst is how many may come at once above the rate; default: one
	// second's worth (at least 1).
	Burst int `yaml:"burst"`
}

// Limiter is a lock-free token bucket in the form of the generic cell rate
// algorithm: one atomic, the theoretical arrival time of the next request
// (tat). A request is allowed when, with it counted, tat is at most burst
// emission intervals ahead of now. Allow is called on the request path by
// any goroutine: one load and one compare-and-swap, no lock, no
// allocation. An upstream's rate_limit is checked by Call.Begin; a
// route's by package proxy.
type Limiter struct {
	interval int64 // ns between requests at the sustained rate
	window   int64 // burst × interval: how far ahead tat may run
	tat      atomic.Int64
}

// NewLimiter returns a limiter for a validated r, or nil without a rate.
func NewLimiter(r RateLimit) *Limiter {
	if r.RequestsPerSecond <= 0 {
		return nil
	}
	interval := int64(math.Max(1, float64(time.Second)/r.RequestsPerSecond))
	return &Limiter{interval: interval, window: int64(r.Burst) * interval}
}

// Allow takes a token at now (node.Mono: on the monotonic clock, so that
// a step of the wall clock neither refuses every request for as long as
// the step back nor lets a burst through), or reports how long until one
// is free.
func (l *Limiter) Allow(now int64) (bool, time.Duration) {
	for {
		tat := l.tat.Load()
		next := max(tat, now) + l.interval
		if over := next - now - l.window; over > 0 {
			return false, time.Duration(over)
		}
		if l.tat.CompareAndSwap(tat, next) {
			return true, 0
		}
	}
}
