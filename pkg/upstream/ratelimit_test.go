package upstream

import (
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
)

// The token bucket lets a burst through at once, then the sustained rate,
// whatever the pattern of arrivals.
func TestLimiter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rl       RateLimit
		arrivals int           // evenly spread from 0 to span
		span     time.Duration // 0: all at once
		want     int
	}{
		{"a burst at once", RateLimit{RequestsPerSecond: 100, Burst: 10}, 1000, 0, 10},
		{"1,000 over a second", RateLimit{RequestsPerSecond: 100, Burst: 10}, 1000, time.Second, 110},
		{"under the rate", RateLimit{RequestsPerSecond: 100, Burst: 1}, 50, time.Second, 50},
		{"fractional rate", RateLimit{RequestsPerSecond: 0.5, Burst: 1}, 100, 10 * time.Second, 5}, // at 0, then the first arrival 2 s after each: 2.02, 4.04, 6.06, 8.08 s
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLimiter(tc.rl)
			start := int64(1e15)
			got := 0
			for i := range tc.arrivals {
				at := start + int64(tc.span)*int64(i)/int64(max(tc.arrivals-1, 1)) // the first at 0, the last at span
				if ok, wait := l.Allow(at); ok {
					got++
				} else if wait <= 0 {
					t.Fatalf("refused with a wait of %v", wait)
				}
			}
			if got != tc.want {
				t.Fatalf("%d allowed; want %d", got, tc.want)
			}
		})
	}
}

// A refused request learns how long until one would pass.
func TestLimiterRetryAfter(t *testing.T) {
	l := NewLimiter(RateLimit{RequestsPerSecond: 10, Burst: 1})
	now := int64(1e15)
	if ok, _ := l.Allow(now); !ok {
		t.Fatal("the first request was refused")
	}
	ok, wait := l.Allow(now)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("second request: allowed %v, wait %v; want refused, 100ms", ok, wait)
	}
	if ok, _ := l.Allow(now + int64(wait)); !ok {
		t.Fatal("refused after waiting as told")
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	l := NewLimiter(RateLimit{RequestsPerSecond: 1e9, Burst: 1 << 20})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		now := time.Now().UnixNano()
		for pb.Next() {
			l.Allow(now)
		}
	})
}

// An upstream's rate limit counts on the monotonic clock (node.Mono):
// kept in Unix nanoseconds, a step of the wall clock back (an NTP step, a
// VM resumed) refused every request for as long as the step, a step
// forward let a burst through. The bucket's next arrival is then near
// node.MonoNow, not near the Unix time.
func TestRateLimitCountsOnTheMonotonicClock(t *testing.T) {
	u := New(Config{Name: "svc", Policy: &Policy{RateLimit: &RateLimit{RequestsPerSecond: 10, Burst: 1}}})
	if u.limiter == nil {
		t.Fatal("no limiter")
	}
	var c Call
	_ = c.Begin(t.Context(), u, balancer.Info{})
	c.End(false)
	tat, mono := u.limiter.tat.Load(), node.MonoNow()
	if d := time.Duration(tat - mono); d < -time.Second || d > time.Second {
		t.Fatalf("the bucket's next arrival is %v from node.MonoNow(); want it counted on the monotonic clock", d)
	}
}
