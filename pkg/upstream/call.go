package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/ratelog"
	"github.com/remora-mesh/remora/internal/shortage"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
)

// Why a call found no node to try. Callers answer them with their own
// protocol's refusal (HTTP: 503).
var (
	// ErrNotSynced: the registry has not delivered the upstream's first set.
	ErrNotSynced = errors.New("the registry has not delivered the upstream's nodes yet")
	// ErrNoNode: no node may receive traffic.
	ErrNoNode = errors.New("no available node")
	// ErrBreakerOpen: circuit_breaker.max_requests calls are in flight.
	ErrBreakerOpen = errors.New("circuit breaker open (circuit_breaker.max_requests in flight)")
	// ErrOverloaded: every node tried is at max_requests_per_node.
	ErrOverloaded = errors.New("every node is at circuit_breaker.max_requests_per_node")
	// ErrCanaryEmpty: the call chose the canary pool, which is empty, and
	// the canary rule is strict.
	ErrCanaryEmpty = errors.New("the canary pool has no available node (canary.strict)")
	// ErrRateLimited: rate_limit refused the call (see Call.RetryAfter).
	ErrRateLimited = errors.New("rate limit exceeded (rate_limit)")
	// ErrLocalResources: Remora itself is out of file descriptors,
	// ephemeral ports or kernel memory, so it could not connect to a
	// node (see shortage.Is). The node is not at fault, and
	// another would fail the same way: answer 503.
	ErrLocalResources = errors.New("out of local resources (file descriptors, ephemeral ports or kernel memory)")
)

// maxConnectRetries bounds the retries after connect errors in one call.
const maxConnectRetries = 3

// Call is one request, connection or tunnel on its way through an
// upstream. It is the one attempt path of every protocol (proxy's HTTP
// paths, proxy/tcp's connections, CONNECT tunnels): Begin admits it under
// the circuit breaker and chooses the pool (stable or canary); Attempts
// picks a node per attempt (never one tried already in the call, never
// one at its in-flight limit), retries within max_attempts and the retry
// budget, and feeds every attempt's outcome to outlier detection; End
// counts it and gives back what it held.
//
// A Call is used by one goroutine from Begin to End, and may be reused
// after End. Its zero value is ready for Begin.
type Call struct {
	up     *Upstream
	snap   *Snapshot
	info   balancer.Info
	client context.Context // its end means the client went away
	start  time.Time

	admitted bool // holds a place under circuit_breaker.max_requests
	chosen   bool // a pool was chosen: the call counts in its pool's metrics
	isCopy   bool // a mirrored copy (BeginCopy)
	pool     canary.Pool
	picker   balancer.Picker
	avail    int
	first    balancer.Picker // the first pick's, with a locality split: the local zone's or the others'

	tried   []*node.Node
	triedA  [4]*node.Node // backing store for tried
	retries int           // places held in the retry budget

	node   *node.Node // the node of the kept attempt
	began  time.Time  // when that attempt began
	status int        // its status
	grpc   int        // its gRPC code + 1; 0 when it is no gRPC answer
	failed bool       // it broke off on the node's side after its head (SetBrokenOff, SetGRPCBroken)
	broken bool       // SetBrokenOff: counted as a gateway failure, whatever its status
	// established is when the kept attempt became a relay (Established);
	// zero for a request.
	established time.Time

	localCode  int           // the status a refused call stands for (503, 429)
	retryAfter time.Duration // when a rate-limited call may come again
	err        error         // what ended the call without an answer
}

// Attempt is what one attempt at a node came to: a status, or an error
// before any.
type Attempt struct {
	Status int
	Err    error
	// Deferred: the outcome is judged when the call ends (a gRPC answer's
	// verdict is in its trailers); the attempt is kept as it is.
	Deferred bool
	// Spent: the request cannot be sent again (a streamed body was read
	// from), whatever the error.
	Spent bool
	// GRPC is the gRPC code + 1 of an answer that ended with one before
	// anything of it went to the client (a trailers-only answer); 0 for
	// any other. Its outcome and retry then follow the code (see
	// GRPCOutcome and retry.grpc_statuses), not the HTTP status.
	GRPC int
}

// Begin starts c on u for a request or connection described by info,
// whose client is gone when client ends: it loads u's snapshot (waiting,
// within FirstSetWait, for an upstream without nodes to serve yet), admits
// the call under circuit_breaker.max_requests and chooses its pool. On an
// error c holds nothing, but End must still be called to count it.
func (c *Call) Begin(client context.Context, u *Upstream, info balancer.Info) error {
	*c = Call{up: u, snap: u.Snapshot(), info: info, client: client, start: time.Now(), localCode: 503}
	if !c.snap.Synced && !c.snap.Restored {
		c.snap = u.awaitFirstSet(client)
	}
	c.tried = c.triedA[:0]
	c.err = c.admit()
	return c.err
}

// BeginCopy is Begin for a mirrored copy of a request: it takes no token
// of u's rate_limit and no place under its circuit_breaker.max_requests
// (live traffic never waits or is refused for a copy; the mirror's
// max_in_flight bounds the copies), and a copy that is refused or gets no
// answer is not counted by End as a local answer: the mirror counts it as
// dropped. A copy that gets an answer is counted in its pool's metrics,
// and its outcome observed, as any request's. With toCanary, the copy goes
// to u's canary pool whatever the split says (ErrCanaryEmpty without
// canary nodes); locality applies in either pool.
func (c *Call) BeginCopy(client context.Context, u *Upstream, info balancer.Info, toCanary bool) error {
	*c = Call{up: u, snap: u.Snapshot(), info: info, client: client, start: time.Now(), localCode: 503, isCopy: true}
	c.tried = c.triedA[:0]
	split := c.snap.Canary
	switch {
	case toCanary && (split == nil || split.Available == 0):
		c.err = ErrCanaryEmpty
	case toCanary:
		c.pool, c.picker, c.avail, c.chosen = canary.Canary, split.Picker, split.Available, true
		c.chooseZone()
	case c.snap.Available == 0:
		c.err = ErrNoNode
	default:
		if c.err = c.choosePool(); c.err == nil {
			c.chooseZone()
		}
	}
	return c.err
}

// admit is Begin's admission and pool choice.
func (c *Call) admit() error {
	u := c.up
	if l := u.limiter; l != nil {
		if ok, wait := l.Allow(node.Mono(c.start)); !ok {
			c.localCode, c.retryAfter = 429, wait
			return ErrRateLimited
		}
	}
	if c.snap.Available == 0 {
		if !c.snap.Synced && !c.snap.Restored {
			return ErrNotSynced
		}
		return ErrNoNode
	}
	if !u.BeginRequest() {
		return ErrBreakerOpen
	}
	c.admitted = true
	if err := c.choosePool(); err != nil {
		return err
	}
	c.chooseZone()
	return nil
}

// choosePool decides between stable and canary (see package canary). A
// chosen pool without nodes falls back to the other, unless the canary
// rule is strict.
func (c *Call) choosePool() error {
	c.pool, c.picker, c.avail = canary.Stable, c.snap.Picker, c.snap.StableAvailable
	split := c.snap.Canary
	if split == nil {
		c.avail = c.snap.Available
		c.chosen = true
		return nil
	}
	if split.Choose(c.info) == canary.Canary {
		if split.Available > 0 {
			c.pool, c.picker, c.avail, c.chosen = canary.Canary, split.Picker, split.Available, true
			return nil
		}
		if split.Rule.Strict() {
			return ErrCanaryEmpty
		}
	}
	if c.avail == 0 && split.Available > 0 {
		c.pool, c.picker, c.avail = canary.Canary, split.Picker, split.Available
	}
	c.chosen = true
	return nil
}

// chooseZone decides whether the first pick stays in the local zone (see
// Locality); retries pick from the whole pool.
func (c *Call) chooseZone() {
	z := c.snap.StableZone
	if c.pool == canary.Canary {
		z = c.snap.CanaryZone
	}
	if z == nil {
		return
	}
	m := c.up.metrics
	if z.local() {
		c.first = z.Local
		m.Zone[ZoneLocal].Add(1)
		return
	}
	c.first = z.Other
	m.Zone[ZoneOther].Add(1)
}

// Attempts runs send on a picked node for each attempt, until one is kept.
// It retries on another node after a connect error (nothing reached the
// node) unless the attempt was Spent, at most maxConnectRetries times and
// outside max_attempts and the budget; after a retryable status or a
// broken exchange when replayable and not Spent, within max_attempts and
// the retry budget, while ctx lasts. drop releases an answer that is
// retried. A failure after the client went away is never charged to a
// node, nor one that says Remora itself is out of resources
// (shortage.Is): that one ends the call at once with
// ErrLocalResources, since another node would fail the same way.
func (c *Call) Attempts(ctx context.Context, replayable bool, send func(n *node.Node, attempt int) Attempt, drop func()) error {
	c.err = c.attempts(ctx, replayable, send, drop)
	return c.err
}

func (c *Call) attempts(ctx context.Context, replayable bool, send func(n *node.Node, attempt int) Attempt, drop func()) error {
	pol := c.up.cfg.Policy
	for attempt := 1; ; attempt++ {
		n, err := c.pick()
		if err != nil {
			return err
		}
		c.tried = append(c.tried, n)
		began := time.Now()
		n.Stats.Begin(began)
		res := send(n, attempt)
		err = res.Err
		if err != nil && c.client.Err() != nil {
			n.Stats.End(0, false) // the client went away: no sample, no blame
			return err
		}
		if err != nil && shortage.Is(err) {
			// Remora itself is out of descriptors, ports or memory: no
			// sample, no blame, and no other node (it would fail the same
			// way, and be blamed).
			n.Stats.End(0, false)
			err = fmt.Errorf("%w: %w", ErrLocalResources, err)
			logLocalResources(c.up, n, err, time.Now())
			return err
		}
		if res.Deferred {
			c.node, c.began, c.status = n, began, res.Status
			return nil
		}
		var out health.Outcome
		retry, cause := false, RetryStatus
		switch {
		case err == nil && res.GRPC > 0:
			out.Status = GRPCOutcome(res.GRPC - 1)
			retry, cause = pol.RetryableGRPC(res.GRPC-1) && replayable && !res.Spent, RetryGRPC
		case err == nil:
			out.Status = res.Status
			retry = pol.RetryableStatus(res.Status) && replayable && !res.Spent
		case IsConnectError(err):
			out.Failure = health.ConnectFailure
			retry, cause = !res.Spent, RetryConnect
		default:
			out.Failure = health.GatewayFailure
			retry, cause = replayable && !res.Spent && ctx.Err() == nil, RetryReset
		}
		c.up.Observe(n, out)
		if out.Failure == health.ConnectFailure {
			// Nothing reached the node: always worth another node, outside
			// max_attempts and the budget, at most maxConnectRetries times.
			retry = retry && attempt <= maxConnectRetries && c.avail > len(c.tried) && ctx.Err() == nil
		} else {
			retry = retry && attempt < pol.Retry.MaxAttempts && c.avail > len(c.tried) && c.up.TryRetry()
			if retry {
				c.retries++
			}
		}
		if !retry {
			if err != nil {
				n.Stats.End(time.Since(began), true)
				return err
			}
			c.node, c.began, c.status, c.grpc = n, began, res.Status, res.GRPC
			return nil
		}
		c.up.metrics.Retries.Add(1)
		c.up.metrics.RetriesBy[cause].Add(1)
		if err == nil {
			drop()
		}
		n.Stats.End(time.Since(began), true)
	}
}

// pick picks a node not tried yet in this call when the picker offers one
// within a few tries, skipping nodes at their in-flight limit.
func (c *Call) pick() (*node.Node, error) {
	perNode := int64(c.up.cfg.Policy.CircuitBreaker.MaxRequestsPerNode)
	if c.first != nil && len(c.tried) == 0 {
		// The first pick goes where the locality split said, unless those
		// nodes are all at their in-flight limit.
		for range 4 {
			if n := c.first.Pick(c.info); n != nil && (perNode == 0 || n.Stats.InFlight.Load() < perNode) {
				return n, nil
			}
		}
	}
	var n *node.Node
	for range 8 {
		n = c.picker.Pick(c.info)
		if n == nil {
			return nil, ErrNoNode
		}
		if (perNode == 0 || n.Stats.InFlight.Load() < perNode) && !slices.Contains(c.tried, n) {
			return n, nil
		}
	}
	if perNode > 0 && n.Stats.InFlight.Load() >= perNode {
		return nil, ErrOverloaded
	}
	return n, nil
}

// SetGRPC records the gRPC code a deferred answer ended with (in its
// trailers): it is observed for outlier detection, and counted by End.
func (c *Call) SetGRPC(code int) {
	c.grpc = code + 1
	if c.node != nil {
		c.up.Observe(c.node, health.Outcome{Status: GRPCOutcome(code)})
	}
}

// Established records that the kept attempt became a relay that lasts as
// long as its client wants: a tunnel or a tcp connection whose node
// accepted it, an Upgrade the node answered 101. From then on it is no
// request waiting for an answer, so its latency (the node's estimate, the
// latency histogram, the canary judge) is the time until now, not its
// life; End still returns its life.
func (c *Call) Established() { c.established = time.Now() }

// SetBrokenOff records that the node broke the kept attempt's answer off
// after its head (it closed, or reset the stream, with the body short):
// the client saw it fail. The node is blamed as for a reset (a gateway
// failure for outlier detection, a failure in its stats), and End counts
// the call as a 502, not as the status its head said.
func (c *Call) SetBrokenOff() {
	c.failed, c.broken = true, true
	if c.node != nil {
		c.up.Observe(c.node, health.Outcome{Failure: health.GatewayFailure})
	}
}

// SetGRPCBroken records that a deferred gRPC answer ended without a
// grpc-status: the node reset the stream after its headers (reset), or
// closed it without trailers. The client sees the call fail as INTERNAL,
// which End counts; the node is blamed as for a reset (a gateway failure
// for outlier detection, a failure in its stats) or, for a stream closed
// without trailers, as for INTERNAL.
func (c *Call) SetGRPCBroken(reset bool) {
	const internal = 13
	c.grpc, c.failed = internal+1, reset
	if c.node == nil {
		return
	}
	out := health.Outcome{Status: GRPCOutcome(internal)}
	if reset {
		out = health.Outcome{Failure: health.GatewayFailure}
	}
	c.up.Observe(c.node, out)
}

// GRPCOutcome is the HTTP status a gRPC code counts as for outlier
// detection, metrics and the canary's judge: UNAVAILABLE is a gateway
// failure (503), DEADLINE_EXCEEDED a timeout (504), INTERNAL, UNKNOWN and
// DATA_LOSS a server error (500); anything else says the node is up (200).
func GRPCOutcome(code int) int {
	switch code {
	case 14:
		return 503
	case 4:
		return 504
	case 2, 13, 15:
		return 500
	}
	return 200
}

// Reason is why the call got no answer from a node (ReasonNone when it
// did); a client that went away is the caller's to tell.
func (c *Call) Reason() Reason { return ReasonOf(c.err) }

// Began is when the kept attempt began (zero without one).
func (c *Call) Began() time.Time { return c.began }

// RetryAfter is how long until a call refused with ErrRateLimited would be
// allowed.
func (c *Call) RetryAfter() time.Duration { return c.retryAfter }

// GRPC is the kept attempt's gRPC code, or -1 when it is no gRPC answer
// (or its verdict is not known yet).
func (c *Call) GRPC() int { return c.grpc - 1 }

// End counts the call in its upstream's metrics (its pool's, by the kept
// attempt's status; a client that went away as such) and gives back what
// it held: the kept node's in-flight place, the retry budget, the circuit
// breaker. It returns how long the call took.
func (c *Call) End(clientGone bool) time.Duration {
	end := time.Now()
	took := end.Sub(c.start)
	latency, now := took, end
	if !c.established.IsZero() {
		now, latency = c.established, c.established.Sub(c.start)
	}
	u := c.up
	if c.node != nil {
		c.node.Stats.EndAt(end, now.Sub(c.began), c.failed)
	}
	status := c.status
	if c.broken {
		status = http.StatusBadGateway
	}
	if c.grpc > 0 {
		status = GRPCOutcome(c.grpc - 1)
		if c.grpc-1 < len(u.metrics.GRPC) {
			u.metrics.GRPC[c.grpc-1].Add(1)
		}
	}
	switch {
	case clientGone:
		u.metrics.ClientClosed.Add(1)
		u.metrics.Local[ReasonClientClosed].Add(1)
	case c.isCopy && (!c.chosen || c.err != nil):
		// A copy without an answer: the mirror counts it as dropped.
	case c.chosen:
		u.Record(c.pool, status, latency)
		if c.err != nil {
			u.metrics.Local[ReasonOf(c.err)].Add(1)
		}
	default:
		u.RecordLocal(c.localCode, ReasonOf(c.err))
	}
	for ; c.retries > 0; c.retries-- {
		u.EndRetry()
	}
	if c.admitted {
		c.admitted = false
		u.EndRequest()
	}
	return took
}

// Upstream is the call's upstream.
func (c *Call) Upstream() *Upstream { return c.up }

// Snapshot is the snapshot the call began with.
func (c *Call) Snapshot() *Snapshot { return c.snap }

// Pool is the pool the call chose.
func (c *Call) Pool() canary.Pool { return c.pool }

// Node is the node of the kept attempt, or nil.
func (c *Call) Node() *node.Node { return c.node }

// Status is the kept attempt's status, 0 without one.
func (c *Call) Status() int { return c.status }

// Tries is how many nodes the call tried.
func (c *Call) Tries() int { return len(c.tried) }

// Start is when the call began.
func (c *Call) Start() time.Time { return c.start }

// IsConnectError reports whether err happened before anything reached the
// node (so the call is safe to send elsewhere).
func IsConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// localResourcesLog holds the warning about ErrLocalResources to one a
// minute, for the process: the resources are the process's, and every
// request may meet the error while they last. The access log and
// remora_local_answers_total count each.
var localResourcesLog ratelog.Limiter

// logLocalResources logs err, met by an attempt of u on n at now, unless
// a warning went out less than a minute before.
func logLocalResources(u *Upstream, n *node.Node, err error, now time.Time) {
	ok, skipped := localResourcesLog.Allow(now)
	if !ok {
		return
	}
	u.cfg.Log.WithError(err).WithFields(logrus.Fields{"node": n.ID, "skipped": skipped}).
		Warn("out of local resources: requests that meet it get 503 (local_resources), and no node is blamed " +
			"(logged once a minute at most; skipped: errors since the last line)")
}
