package upstream_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

var errDial = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
var errReset = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}

func policy(t *testing.T, p upstream.Policy) *upstream.Policy {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestCallRetries runs one call per case against three nodes whose
// attempts come to the case's outcomes in turn, and checks how many nodes
// it tried (never one twice) and how it ended.
func TestCallRetries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		policy     upstream.Policy
		replayable bool
		outcomes   []upstream.Attempt
		tries      int
		status     int  // the kept attempt's; 0 with an error
		err        bool // ended with an error
	}{
		{name: "answered", replayable: true, outcomes: []upstream.Attempt{{Status: 200}}, tries: 1, status: 200},
		{name: "connect error, another node", outcomes: []upstream.Attempt{{Err: errDial}, {Status: 200}}, tries: 2, status: 200},
		{name: "connect errors are outside max_attempts", policy: upstream.Policy{Retry: upstream.Retry{MaxAttempts: 1}},
			outcomes: []upstream.Attempt{{Err: errDial}, {Err: errDial}, {Status: 200}}, tries: 3, status: 200},
		{name: "connect errors stop with the nodes", outcomes: []upstream.Attempt{{Err: errDial}, {Err: errDial}, {Err: errDial}}, tries: 3, err: true},
		{name: "a spent request is not sent again", outcomes: []upstream.Attempt{{Err: errDial, Spent: true}, {Status: 200}}, tries: 1, err: true},
		{name: "retryable status, replayable", replayable: true, outcomes: []upstream.Attempt{{Status: 503}, {Status: 200}}, tries: 2, status: 200},
		{name: "retryable status, not replayable", outcomes: []upstream.Attempt{{Status: 503}, {Status: 200}}, tries: 1, status: 503},
		{name: "retryable status within max_attempts", replayable: true, outcomes: []upstream.Attempt{{Status: 503}, {Status: 503}, {Status: 200}}, tries: 2, status: 503},
		{name: "status not in retry.statuses", replayable: true, outcomes: []upstream.Attempt{{Status: 500}, {Status: 200}}, tries: 1, status: 500},
		{name: "broken exchange, replayable", replayable: true, outcomes: []upstream.Attempt{{Err: errReset}, {Status: 200}}, tries: 2, status: 200},
		{name: "broken exchange, not replayable", outcomes: []upstream.Attempt{{Err: errReset}, {Status: 200}}, tries: 1, err: true},
		{name: "deferred verdict is kept", replayable: true, outcomes: []upstream.Attempt{{Status: 200, Deferred: true}}, tries: 1, status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _, set := run(t, upstream.Config{Name: "svc", Policy: policy(t, tc.policy)})
			set(inst("a", 1), inst("b", 2), inst("c", 3))
			var c upstream.Call
			if err := c.Begin(context.Background(), u, balancer.Info{}); err != nil {
				t.Fatal(err)
			}
			seen := map[*node.Node]bool{}
			i := 0
			err := c.Attempts(context.Background(), tc.replayable, func(n *node.Node, attempt int) upstream.Attempt {
				if seen[n] {
					t.Fatalf("attempt %d went to %s again", attempt, n.ID)
				}
				seen[n] = true
				i++
				return tc.outcomes[i-1]
			}, func() {})
			if (err != nil) != tc.err || c.Tries() != tc.tries || c.Status() != tc.status {
				t.Fatalf("err %v, %d tries, status %d; want err %v, %d tries, status %d", err, c.Tries(), c.Status(), tc.err, tc.tries, tc.status)
			}
			c.End(false)
			if u.Active() != 0 || u.RetriesInFlight() != 0 {
				t.Fatalf("after End: %d in flight, %d retries held", u.Active(), u.RetriesInFlight())
			}
		})
	}
}

// TestCallAdmission: the circuit breaker, an unsynced or empty upstream and
// the per-node limit refuse a call with their own error, and End gives
// back the place a call held.
func TestCallAdmission(t *testing.T) {
	never := upstream.New(upstream.Config{Name: "never"})
	var c upstream.Call
	if err := c.Begin(context.Background(), never, balancer.Info{}); !errors.Is(err, upstream.ErrNotSynced) {
		t.Fatalf("unsynced upstream: %v", err)
	}
	c.End(false)

	u, _, set := run(t, upstream.Config{Name: "svc", Policy: policy(t, upstream.Policy{
		CircuitBreaker: upstream.CircuitBreaker{MaxRequests: 1, MaxRequestsPerNode: 1},
	})})
	set(discovery.Instance{ID: "drained", Address: "127.0.0.1", Port: 1, Weight: 0, Healthy: true})
	if err := c.Begin(context.Background(), u, balancer.Info{}); !errors.Is(err, upstream.ErrNoNode) {
		t.Fatalf("no available node: %v", err)
	}
	c.End(false)

	set(inst("a", 1))
	var first, second upstream.Call
	if err := first.Begin(context.Background(), u, balancer.Info{}); err != nil {
		t.Fatal(err)
	}
	if err := second.Begin(context.Background(), u, balancer.Info{}); !errors.Is(err, upstream.ErrBreakerOpen) {
		t.Fatalf("a second call under max_requests 1: %v", err)
	}
	second.End(false)
	// The first call's attempt holds the node's only place.
	hold := make(chan struct{})
	go func() {
		_ = first.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt {
			<-hold
			return upstream.Attempt{Status: 200}
		}, func() {})
		close(hold)
	}()
	waitSnapshot(t, u, "the attempt in flight", func(s *upstream.Snapshot) bool { return s.Nodes[0].Stats.InFlight.Load() == 1 })
	u2, _, set2 := run(t, upstream.Config{Name: "svc2", Policy: policy(t, upstream.Policy{CircuitBreaker: upstream.CircuitBreaker{MaxRequestsPerNode: 1}})})
	set2(inst("b", 2))
	var third upstream.Call
	if err := third.Begin(context.Background(), u2, balancer.Info{}); err != nil {
		t.Fatal(err)
	}
	third.Snapshot().Nodes[0].Stats.Begin(third.Start()) // another call holds b's place
	if err := third.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt { return upstream.Attempt{Status: 200} }, func() {}); !errors.Is(err, upstream.ErrOverloaded) {
		t.Fatalf("node at max_requests_per_node: %v", err)
	}
	third.End(false)
	hold <- struct{}{}
	<-hold
	first.End(false)
	if err := second.Begin(context.Background(), u, balancer.Info{}); err != nil {
		t.Fatalf("after the first call ended: %v", err)
	}
	second.End(false)
}

// TestCallCanaryPool: the canary split applies to every call, with or
// without a request (a TCP connection has none).
func TestCallCanaryPool(t *testing.T) {
	rule := func(c canary.Config) *canary.Rule {
		r, err := c.Validate()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	canaryInst := inst("c", 3)
	canaryInst.Metadata = map[string]string{"canary": "true"}
	for _, tc := range []struct {
		name      string
		rule      canary.Config
		instances []discovery.Instance
		pool      canary.Pool
		err       error
	}{
		{"weight 100", canary.Config{Weight: 100}, []discovery.Instance{inst("a", 1), canaryInst}, canary.Canary, nil},
		{"weight 0", canary.Config{}, []discovery.Instance{inst("a", 1), canaryInst}, canary.Stable, nil},
		{"only the canary is up", canary.Config{}, []discovery.Instance{canaryInst}, canary.Canary, nil},
		{"strict canary without nodes", canary.Config{Weight: 100, Strict: true}, []discovery.Instance{inst("a", 1)}, canary.Stable, upstream.ErrCanaryEmpty},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _, set := run(t, upstream.Config{Name: "svc", Canary: rule(tc.rule)})
			set(tc.instances...)
			for range 20 {
				var c upstream.Call
				err := c.Begin(context.Background(), u, balancer.Info{RemoteAddr: "127.0.0.1:5000"})
				if !errors.Is(err, tc.err) {
					t.Fatalf("Begin: %v; want %v", err, tc.err)
				}
				if err == nil && c.Pool() != tc.pool {
					t.Fatalf("pool %v; want %v", c.Pool(), tc.pool)
				}
				c.End(false)
			}
		})
	}
}

// TestCallCounts: End counts a call in its pool's metrics by status, a
// client that went away as such, and a refused call as a local 503.
func TestCallCounts(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "svc"})
	set(inst("a", 1))
	call := func(status int, gone bool) {
		var c upstream.Call
		if err := c.Begin(context.Background(), u, balancer.Info{}); err != nil {
			t.Fatal(err)
		}
		_ = c.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt { return upstream.Attempt{Status: status} }, func() {})
		c.End(gone)
	}
	call(200, false)
	call(404, false)
	call(200, true)
	m := u.Metrics()
	if m.Requests[canary.Stable][2].Load() != 1 || m.Requests[canary.Stable][4].Load() != 1 || m.ClientClosed.Load() != 1 {
		t.Fatalf("2xx %d, 4xx %d, client closed %d; want 1 each", m.Requests[canary.Stable][2].Load(), m.Requests[canary.Stable][4].Load(), m.ClientClosed.Load())
	}
}

// Every retry is counted with its cause, connect failures included.
func TestCallCountsRetriesByCause(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "svc"})
	set(inst("a", 1), inst("b", 2), inst("c", 3))
	for _, outcomes := range [][]upstream.Attempt{
		{{Err: errDial}, {Status: 200}},
		{{Status: 503}, {Status: 200}},
		{{Err: errReset}, {Status: 200}},
		{{Status: 200, GRPC: 14 + 1}, {Status: 200}},
	} {
		var c upstream.Call
		if err := c.Begin(context.Background(), u, balancer.Info{}); err != nil {
			t.Fatal(err)
		}
		i := 0
		_ = c.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt { i++; return outcomes[i-1] }, func() {})
		c.End(false)
	}
	m := u.Metrics()
	for _, cause := range upstream.RetryCauses() {
		if m.RetriesBy[cause].Load() != 1 {
			t.Errorf("%s retries: %d; want 1", cause, m.RetriesBy[cause].Load())
		}
	}
	if m.Retries.Load() != 4 {
		t.Errorf("retries: %d; want 4", m.Retries.Load())
	}
}

// A sidecar's requests take from a fraction of a millisecond: the
// histogram tells 300 µs from 3 ms.
func TestHistogramResolvesSubMillisecond(t *testing.T) {
	var h upstream.Histogram
	h.Observe(300 * time.Microsecond)
	h.Observe(3 * time.Millisecond)
	var filled []int
	for i := range h.Counts {
		if h.Counts[i].Load() > 0 {
			filled = append(filled, i)
		}
	}
	if len(filled) != 2 {
		t.Fatalf("300 µs and 3 ms fill buckets %v; want two different ones", filled)
	}
}

// beginAsync starts a call on u in another goroutine and returns its
// outcome's channel.
func beginAsync(ctx context.Context, u *upstream.Upstream) <-chan error {
	out := make(chan error, 1)
	go func() {
		var c upstream.Call
		err := c.Begin(ctx, u, balancer.Info{})
		c.End(false)
		out <- err
	}()
	return out
}

// A call that arrives before the registry's first set (the application's
// first request as the pod starts) waits for it, within the initial-sync
// timeout, rather than being refused.
func TestCallWaitsForTheFirstSet(t *testing.T) {
	u := upstream.New(upstream.Config{Name: "svc", InitialSyncTimeout: time.Minute})
	w := silent().(*discovery.Latest)
	runOn(t, u, w)
	done := beginAsync(context.Background(), u)
	time.Sleep(50 * time.Millisecond) // the call is waiting (or about to)
	w.Publish([]discovery.Instance{inst("a", 1)})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a call made before the first set: %v; want it served once the set came", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call still waits after the first set came")
	}
}

// The wait ends with ErrNotSynced when the client goes away, when
// FirstSetWait passes without a set, and not at all once the initial-sync
// timeout has run out; a restored on-disk snapshot ends it with nodes.
func TestFirstSetWaitIsBounded(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		cfg  upstream.Config
	}{
		{"client gone", gone, upstream.Config{Name: "svc", InitialSyncTimeout: time.Hour}},
		{"nothing comes", context.Background(), upstream.Config{Name: "svc", InitialSyncTimeout: time.Hour}},
		{"initial sync over", context.Background(), upstream.Config{Name: "svc", InitialSyncTimeout: time.Nanosecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := upstream.New(tc.cfg)
			runOn(t, u, silent())
			select {
			case err := <-beginAsync(tc.ctx, u):
				if !errors.Is(err, upstream.ErrNotSynced) {
					t.Fatalf("got %v; want ErrNotSynced", err)
				}
			case <-time.After(upstream.FirstSetWait + 10*time.Second):
				t.Fatal("the call still waits")
			}
		})
	}
	t.Run("snapshot restored", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "svc.json")
		_, _, set := run(t, upstream.Config{Name: "svc", SnapshotFile: file})
		set(inst("a", 1))
		eventuallyFile(t, file)
		u := upstream.New(upstream.Config{Name: "svc", SnapshotFile: file, InitialSyncTimeout: 300 * time.Millisecond})
		runOn(t, u, silent())
		if err := <-beginAsync(context.Background(), u); err != nil {
			t.Fatalf("a call waiting as the on-disk snapshot is restored: %v", err)
		}
	})
}

func eventuallyFile(t *testing.T, file string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(file); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written", file)
		}
	}
}

// dialError is the error net.Dialer returns when syscall fails with errno.
func dialError(call string, errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError(call, errno)}
}

// A dial that fails for want of Remora's own resources — file descriptors
// (EMFILE, ENFILE), kernel memory (ENOBUFS, ENOMEM), ephemeral ports
// (EADDRNOTAVAIL) — is not the node's failure: it is not observed against
// the node (a burst of them used to eject healthy nodes for
// consecutive_local_origin_failure) and not retried on another node (it
// would fail the same way, and be charged too); the call ends with
// ErrLocalResources, reason local_resources. A refused or timed-out
// connect stays the node's failure, retried on another node.
func TestCallLocalResourceErrorsBlameNoNode(t *testing.T) {
	refused := dialError("connect", syscall.ECONNREFUSED)
	timedOut := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name     string
		outcomes []error // nil: a 200
		tries    int
		judged   int // attempts outlier detection saw, per call
		failures int // attempts charged to their node, per call
		reason   upstream.Reason
	}{
		{"EMFILE", []error{dialError("socket", syscall.EMFILE), nil}, 1, 0, 0, upstream.ReasonLocalResources},
		{"ENFILE", []error{dialError("socket", syscall.ENFILE), nil}, 1, 0, 0, upstream.ReasonLocalResources},
		{"ENOBUFS", []error{dialError("socket", syscall.ENOBUFS), nil}, 1, 0, 0, upstream.ReasonLocalResources},
		{"ENOMEM", []error{dialError("socket", syscall.ENOMEM), nil}, 1, 0, 0, upstream.ReasonLocalResources},
		{"EADDRNOTAVAIL", []error{dialError("connect", syscall.EADDRNOTAVAIL), nil}, 1, 0, 0, upstream.ReasonLocalResources},
		{"refused, then EMFILE", []error{refused, dialError("socket", syscall.EMFILE), nil}, 2, 1, 1, upstream.ReasonLocalResources},
		{"ECONNREFUSED", []error{refused, nil}, 2, 2, 1, upstream.ReasonNone},
		{"connect timeout", []error{timedOut, nil}, 2, 2, 1, upstream.ReasonNone},
		{"ECONNREFUSED everywhere", []error{refused, refused, refused}, 3, 3, 3, upstream.ReasonConnectFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 6 // more than consecutive_local_origin_failure's default 5
			if tc.reason == upstream.ReasonConnectFailure {
				calls = 1 // the nodes' own failures eject them after 5
			}
			u, _, set := run(t, upstream.Config{Name: "svc"})
			s := set(inst("a", 1), inst("b", 2), inst("c", 3))
			for range calls {
				var c upstream.Call
				if err := c.Begin(context.Background(), u, balancer.Info{}); err != nil {
					t.Fatal(err)
				}
				i := 0
				err := c.Attempts(context.Background(), false, func(*node.Node, int) upstream.Attempt {
					i++
					if err := tc.outcomes[i-1]; err != nil {
						return upstream.Attempt{Err: err}
					}
					return upstream.Attempt{Status: 200}
				}, func() {})
				if c.Tries() != tc.tries || c.Reason() != tc.reason {
					t.Fatalf("%d tries, reason %q (%v); want %d, %q", c.Tries(), c.Reason(), err, tc.tries, tc.reason)
				}
				if local := errors.Is(err, upstream.ErrLocalResources); local != (tc.reason == upstream.ReasonLocalResources) {
					t.Fatalf("error %v: ErrLocalResources %v", err, local)
				}
				c.End(false)
			}
			var judged, failures uint64
			for _, n := range s.Nodes {
				judged += n.Stats.Health.Attempts.Load()
				failures += n.Stats.Failures.Load()
				if n.Stats.InFlight.Load() != 0 {
					t.Errorf("node %s: %d in flight after the calls ended", n.ID, n.Stats.InFlight.Load())
				}
				if tc.failures == 0 && (n.Stats.Health.ConsecutiveLocalOrigin.Load() != 0 || n.Stats.Health.Ejected()) {
					t.Errorf("node %s: %d local-origin failures, ejected %v; want none", n.ID, n.Stats.Health.ConsecutiveLocalOrigin.Load(), n.Stats.Health.Ejected())
				}
			}
			if judged != uint64(tc.judged*calls) || failures != uint64(tc.failures*calls) {
				t.Errorf("%d attempts judged, %d charged to their node; want %d and %d", judged, failures, tc.judged*calls, tc.failures*calls)
			}
			m := u.Metrics()
			if tc.reason != upstream.ReasonNone && m.Local[tc.reason].Load() != uint64(calls) {
				t.Errorf("local answers %q: %d; want %d", tc.reason, m.Local[tc.reason].Load(), calls)
			}
			if want := uint64((tc.tries - 1) * calls); m.Retries.Load() != want {
				t.Errorf("retries: %d; want %d", m.Retries.Load(), want)
			}
		})
	}
	if r := upstream.ReasonLocalResources; r.String() != "local_resources" || r.Flag() != "LR" {
		t.Errorf("reason %q, flag %q; want local_resources, LR", r.String(), r.Flag())
	}
}
