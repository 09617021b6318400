package upstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/health"
)

// runReplacement runs u, the upstream that replaced another, on set until
// the test ends, and waits for its first snapshot built from set.
func runReplacement(t *testing.T, u *Upstream, set []discovery.Instance) {
	t.Helper()
	before := u.Snapshot().Version
	w := make(chanWatcher)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	w <- set
	deadline := time.Now().Add(5 * time.Second)
	for u.Snapshot().Version <= before {
		if time.Now().After(deadline) {
			t.Fatal("the registry's set was not applied")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReloadThatRemovesActiveChecksForgetsTheirVerdict: a node that failed
// its active checks is eligible again once a reload removes the checks
// (nothing would ever probe it back), and keeps its verdict when the
// reload keeps them (its new prober decides).
func TestReloadThatRemovesActiveChecksForgetsTheirVerdict(t *testing.T) {
	withChecks := &health.Config{Active: &health.Active{Type: "tcp"}}
	if err := withChecks.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		health   *health.Config
		eligible bool
	}{
		{"checks removed", nil, true},
		{"checks kept", withChecks, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := []discovery.Instance{instance("a", 1), instance("b", 2)}
			prev := New(Config{Name: "users"})
			newController(prev).apply(set)
			b := prev.Snapshot().Nodes[1]
			b.Stats.Health.ProbeResult(false, errors.New("refused"), 1, 1)
			if b.Eligible() {
				t.Fatal("a node that failed its probe is eligible")
			}

			// The replacement's prober probes 127.0.0.1:2, which is
			// closed: its probes can only fail.
			u := New(Config{Name: "users", Previous: prev, Health: tc.health})
			runReplacement(t, u, set)
			n := u.Snapshot().Nodes[1]
			if n != b {
				t.Fatal("node b was not carried over")
			}
			if got := n.Eligible(); got != tc.eligible {
				t.Errorf("eligible %v after the reload, want %v (active healthy %v, last probe error %q)",
					got, tc.eligible, n.Stats.Health.ActiveHealthy(), n.Stats.Health.LastProbeError())
			}
		})
	}
}

// TestReloadKeepsTheRequestsInFlight: the circuit breaker and the retry
// budget of an upstream that replaces another count the requests begun on
// it, which end there.
func TestReloadKeepsTheRequestsInFlight(t *testing.T) {
	pol := &Policy{}
	pol.CircuitBreaker.MaxRequests = 1
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	prev := New(Config{Name: "users", Policy: pol})
	if !prev.BeginRequest() {
		t.Fatal("the first request was refused")
	}
	if !prev.TryRetry() {
		t.Fatal("the first retry was refused")
	}
	u := New(Config{Name: "users", Policy: pol, Previous: prev})
	if u.Active() != 1 || u.RetriesInFlight() != 1 {
		t.Fatalf("%d requests and %d retries in flight after the reload, want 1 and 1", u.Active(), u.RetriesInFlight())
	}
	if u.BeginRequest() {
		t.Fatal("a second request was let through with max_requests: 1 and one in flight")
	}
	prev.EndRetry()
	prev.EndRequest()
	if !u.BeginRequest() {
		t.Fatal("a request was refused once the one in flight ended on the upstream it began on")
	}
	u.EndRequest()
}

// TestReloadKeepsAnUnchangedRateLimit: a reload that leaves rate_limit as
// it was keeps its bucket (no fresh burst); one that changes it starts a
// bucket of the new size.
func TestReloadKeepsAnUnchangedRateLimit(t *testing.T) {
	policy := func(rps float64) *Policy {
		p := &Policy{RateLimit: &RateLimit{RequestsPerSecond: rps, Burst: 2}}
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	allowed := func(u *Upstream) (n int) {
		for range 4 {
			if ok, _ := u.limiter.Allow(1e12); ok {
				n++
			}
		}
		return n
	}
	prev := New(Config{Name: "users", Policy: policy(0.001)})
	if n := allowed(prev); n != 2 {
		t.Fatalf("%d of 4 allowed at once with a burst of 2", n)
	}
	same := New(Config{Name: "users", Policy: policy(0.001), Previous: prev})
	if n := allowed(same); n != 0 {
		t.Errorf("%d of 4 allowed after a reload that kept the rate limit; its burst was spent", n)
	}
	changed := New(Config{Name: "users", Policy: policy(0.002), Previous: same})
	if n := allowed(changed); n != 2 {
		t.Errorf("%d of 4 allowed after a reload that changed the rate limit, want a new burst of 2", n)
	}
}
