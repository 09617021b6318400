package canary

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// Rollback configures automatic rollback: when the canary does worse than
// stable over a window, its weight drops to 0 until an operator resumes it
// or the canary instances' labels change (those the rule reads: see
// Rule.Fingerprint).
type Rollback struct {
	// ErrorRateMargin trips when the canary's error rate exceeds stable's
	// by more than this many percentage points; default 5.
	ErrorRateMargin float64 `yaml:"error_rate_margin"`
	// LatencyP99Margin trips when the canary's p99 exceeds stable's by
	// more than this fraction (0.5 = 50% slower); 0 turns it off.
	LatencyP99Margin float64 `yaml:"latency_p99_margin"`
	// Window is how often the pools are compared, over the requests since
	// the last comparison; default 30s.
	Window time.Duration `yaml:"window"`
	// MinRequests each pool needs in a window to be compared; default 100.
	MinRequests int `yaml:"min_requests"`
}

func (r *Rollback) validate() error {
	if r.ErrorRateMargin == 0 {
		r.ErrorRateMargin = 5
	}
	if r.Window == 0 {
		r.Window = 30 * time.Second
	}
	if r.MinRequests == 0 {
		r.MinRequests = 100
	}
	var errs []error
	if r.ErrorRateMargin < 0 || r.ErrorRateMargin > 100 {
		errs = append(errs, fmt.Errorf("error_rate_margin: %v; want 0..100 percentage points", r.ErrorRateMargin))
	}
	if r.LatencyP99Margin < 0 {
		errs = append(errs, fmt.Errorf("latency_p99_margin: %v is negative", r.LatencyP99Margin))
	}
	if r.Window < 0 {
		errs = append(errs, fmt.Errorf("window: %v is negative", r.Window))
	}
	if r.MinRequests < 1 {
		errs = append(errs, fmt.Errorf("min_requests: %d; want at least 1", r.MinRequests))
	}
	return errors.Join(errs...)
}

// Latency histogram: bucket i holds latencies below 2^i × 100µs; the last
// bucket holds the rest (≥ ~52 s).
const buckets = 20

func bucketOf(d time.Duration) int {
	b := 0
	for limit := 100 * time.Microsecond; d >= limit && b < buckets-1; limit *= 2 {
		b++
	}
	return b
}

func bucketUpper(b int) time.Duration { return 100 * time.Microsecond << b }

// PoolStats counts one pool's outcomes. Every field is an atomic: Record is
// called on the request path by many goroutines.
type PoolStats struct {
	Requests atomic.Uint64
	Errors   atomic.Uint64
	latency  [buckets]atomic.Uint64
}

// Stats are an upstream's per-pool outcomes; they outlive snapshots.
type Stats struct{ Pools [2]PoolStats }

// Record counts one request to pool p; failed marks an error (a 5xx or no
// response). It does not lock or allocate.
func (s *Stats) Record(p Pool, failed bool, latency time.Duration) {
	ps := &s.Pools[p]
	ps.Requests.Add(1)
	if failed {
		ps.Errors.Add(1)
	}
	ps.latency[bucketOf(latency)].Add(1)
}

type poolCounts struct {
	requests, errors uint64
	latency          [buckets]uint64
}

func (ps *PoolStats) counts() poolCounts {
	c := poolCounts{requests: ps.Requests.Load(), errors: ps.Errors.Load()}
	for i := range c.latency {
		c.latency[i] = ps.latency[i].Load()
	}
	return c
}

// Judge compares the pools once per window. It is owned by the upstream's
// controller goroutine.
type Judge struct {
	cfg  Rollback
	last [2]poolCounts
}

// NewJudge returns a judge for a validated rollback config, or nil. It
// judges the requests s counts from where prev, the judge of the upstream
// a config reload replaces (no longer in use; nil if none), left off, or
// else from now on: s outlives a reload, and a new judge must not judge
// again what the one before it judged (an operator may have resumed the
// canary since), nor, with a rollback a reload turns on, every request
// counted since start at once.
func NewJudge(r *Rule, s *Stats, prev *Judge) *Judge {
	if r == nil || r.cfg.Rollback == nil {
		return nil
	}
	j := &Judge{cfg: *r.cfg.Rollback}
	if prev != nil {
		j.last = prev.last
		return j
	}
	for p := range j.last {
		j.last[p] = s.Pools[p].counts()
	}
	return j
}

// Window returns the comparison interval.
func (j *Judge) Window() time.Duration { return j.cfg.Window }

// Evaluate compares the requests since the last call and returns why the
// canary should be rolled back, or "".
func (j *Judge) Evaluate(s *Stats) string {
	var d [2]poolCounts
	for p := range d {
		now := s.Pools[p].counts()
		d[p].requests = now.requests - j.last[p].requests
		d[p].errors = now.errors - j.last[p].errors
		for i := range now.latency {
			d[p].latency[i] = now.latency[i] - j.last[p].latency[i]
		}
		j.last[p] = now
	}
	st, ca := d[Stable], d[Canary]
	if st.requests < uint64(j.cfg.MinRequests) || ca.requests < uint64(j.cfg.MinRequests) {
		return ""
	}
	sRate := 100 * float64(st.errors) / float64(st.requests)
	cRate := 100 * float64(ca.errors) / float64(ca.requests)
	if cRate-sRate > j.cfg.ErrorRateMargin {
		return fmt.Sprintf("canary error rate %.1f%% vs stable %.1f%% over %d and %d requests (margin %.1f points)",
			cRate, sRate, ca.requests, st.requests, j.cfg.ErrorRateMargin)
	}
	if m := j.cfg.LatencyP99Margin; m > 0 {
		sp, cp := p99(st), p99(ca)
		if float64(cp) > float64(sp)*(1+m) && cp > sp {
			return fmt.Sprintf("canary p99 latency ≤%v vs stable ≤%v over %d and %d requests (margin %.0f%%)",
				cp, sp, ca.requests, st.requests, 100*m)
		}
	}
	return ""
}

// p99 returns the upper bound of the bucket holding the 99th percentile.
func p99(c poolCounts) time.Duration {
	target := uint64(math.Ceil(0.99 * float64(c.requests)))
	var seen uint64
	for i, n := range c.latency {
		seen += n
		if seen >= target {
			return bucketUpper(i)
		}
	}
	return bucketUpper(buckets - 1)
}
