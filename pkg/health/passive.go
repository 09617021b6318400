package health

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/pkg/node"
)

// Failure classifies how an attempt failed before or instead of a response.
type Failure uint8

// Failure kinds.
const (
	// NoFailure: the node answered (see Outcome.Status).
	NoFailure Failure = iota
	// ConnectFailure: the node could not be reached (refused, connect
	// timeout): a local-origin and a gateway failure.
	ConnectFailure
	// GatewayFailure: the connection broke or timed out after it was made.
	GatewayFailure
	// ClientCancelled: the client went away; never charged to the node.
	ClientCancelled
)

// Outcome is what the proxy learned from one attempt on a node.
type Outcome struct {
	Status  int // the response status, 0 if none
	Failure Failure
}

// Detector is the request-path half of outlier detection: it counts
// outcomes in the node's Health atomics and asks the controller for an
// ejection when a threshold is crossed. It is immutable and safe for
// concurrent use; Observe does not lock or allocate.
type Detector struct {
	enabled            bool
	consecutive5xx     uint32
	consecutiveGateway uint32
	consecutiveLocal   uint32
	errorStatuses      StatusSet
}

// NewDetector returns the detector for a validated config.
func NewDetector(c *Config) *Detector {
	p := &c.Passive
	return &Detector{
		enabled:            !p.Disabled,
		consecutive5xx:     uint32(p.Consecutive5xx),
		consecutiveGateway: uint32(intOr(p.ConsecutiveGatewayFailure, DefaultGatewayFailures)),
		consecutiveLocal:   uint32(intOr(p.ConsecutiveLocalOriginFailure, DefaultLocalFailures)),
		errorStatuses:      p.errorStatuses,
	}
}

// Observe records o on h and reports whether it asked for an ejection (the
// caller then wakes the controller).
func (d *Detector) Observe(h *node.Health, o Outcome) bool {
	if d == nil || !d.enabled || o.Failure == ClientCancelled {
		return false
	}
	local := o.Failure == ConnectFailure
	gateway := local || o.Failure == GatewayFailure || o.Status == 502 || o.Status == 503 || o.Status == 504
	isErr := gateway || d.errorStatuses.Has(o.Status)
	h.Attempts.Add(1)
	if isErr {
		h.Errors.Add(1)
	}
	var reason node.EjectReason
	if local {
		if n := h.ConsecutiveLocalOrigin.Add(1); d.consecutiveLocal > 0 && n == d.consecutiveLocal {
			reason = node.ConsecutiveLocalOriginFailure
		}
	} else {
		reset(&h.ConsecutiveLocalOrigin)
	}
	if gateway {
		if n := h.ConsecutiveGateway.Add(1); d.consecutiveGateway > 0 && n == d.consecutiveGateway && reason == 0 {
			reason = node.ConsecutiveGatewayFailure
		}
	} else {
		reset(&h.ConsecutiveGateway)
	}
	if isErr {
		if n := h.Consecutive5xx.Add(1); d.consecutive5xx > 0 && n == d.consecutive5xx && reason == 0 {
			reason = node.Consecutive5xx
		}
	} else {
		reset(&h.Consecutive5xx)
	}
	return reason != 0 && h.RequestEjection(reason)
}

// reset zeroes a counter without a write when it is already zero, so the
// common success path does not bounce the cache line between cores.
func reset(c *atomic.Uint32) {
	if c.Load() != 0 {
		c.Store(0)
	}
}

// Ejector is the controller half of outlier detection: it turns ejection
// requests into ejections within max_ejection_percent, returns nodes whose
// ejection ran out, and runs the failure-percentage detector. It is owned by
// the upstream's controller goroutine.
type Ejector struct {
	cfg     Passive
	counter *[5]atomic.Uint64 // ejections by reason; may be nil
	log     *logrus.Entry
	jitter  func() float64 // in [0, 1)
	last    map[*node.Health]intervalCounts
	round   uint64 // counts the intervals that kept counts
}

// intervalCounts are a node's counters as the last interval read them, and
// that interval's round.
type intervalCounts struct{ attempts, errors, round uint64 }

// NewEjector returns an ejector; jitter returns a number in [0,1), nil
// meaning math/rand; counter, if not nil, counts ejections by reason.
func NewEjector(c *Config, log *logrus.Entry, jitter func() float64, counter *[5]atomic.Uint64) *Ejector {
	if jitter == nil {
		jitter = rand.Float64
	}
	return &Ejector{cfg: c.Passive, log: log, jitter: jitter, counter: counter, last: map[*node.Health]intervalCounts{}}
}

// Apply handles pending ejection requests and ejections that ran out at
// now. It reports whether any node's eligibility changed and when Apply
// must run next (the earliest end of an ejection; zero if none).
func (e *Ejector) Apply(nodes []*node.Node, now time.Time) (changed bool, next time.Time) {
	if e == nil {
		return false, time.Time{}
	}
	for _, n := range nodes {
		h := &n.Stats.Health
		if h.Ejected() && !now.Before(h.EjectedUntil()) {
			h.Unject()
			changed = true
			e.log.WithField("node", n.ID).Info("ejection ended; node back in service")
		}
	}
	for _, n := range nodes {
		if r := n.Stats.Health.TakeRequest(); r != 0 && e.eject(nodes, n, r, now) {
			changed = true
		}
	}
	for _, n := range nodes {
		if u := n.Stats.Health.EjectedUntil(); !u.IsZero() && (next.IsZero() || u.Before(next)) {
			next = u
		}
	}
	return changed, next
}

// eject ejects n for reason unless that would exceed max_ejection_percent.
func (e *Ejector) eject(nodes []*node.Node, n *node.Node, reason node.EjectReason, now time.Time) bool {
	h := &n.Stats.Health
	if e.cfg.Disabled || h.Ejected() || !n.Available() {
		return false
	}
	total, ejected := 0, 0
	for _, m := range nodes {
		if m.Available() {
			total++
			if m.Stats.Health.Ejected() {
				ejected++
			}
		}
	}
	allowed := total * intOr(e.cfg.MaxEjectionPercent, DefaultMaxEjectionPct) / 100
	fields := logrus.Fields{"node": n.ID, "reason": reason.String()}
	if ejected+1 > allowed {
		e.log.WithFields(fields).WithField("max_ejection_percent", intOr(e.cfg.MaxEjectionPercent, DefaultMaxEjectionPct)).
			Warn("node failing but not ejected: max_ejection_percent reached")
		return false
	}
	d := e.cfg.BaseEjectionTime * time.Duration(h.Ejections()+1)
	if d > e.cfg.MaxEjectionTime || d <= 0 {
		d = e.cfg.MaxEjectionTime
	}
	if e.cfg.EjectionJitter != nil {
		d += time.Duration(e.jitter() * float64(*e.cfg.EjectionJitter))
	}
	h.Eject(reason, now.Add(d))
	if e.counter != nil && int(reason) < len(e.counter) {
		e.counter[reason].Add(1)
	}
	e.log.WithFields(fields).WithField("ejected_for", d.String()).Warn("node ejected")
	return true
}

// Interval runs once per passive interval: the decay of the ejection
// multiplier of nodes in service, and the failure-percentage detector over
// the attempts since the last run. It reports whether eligibility changed.
func (e *Ejector) Interval(nodes []*node.Node, now time.Time) bool {
	if e == nil || e.cfg.Disabled {
		return false
	}
	for _, n := range nodes {
		if h := &n.Stats.Health; !h.Ejected() {
			h.DecayEjections()
		}
	}
	fp := e.cfg.FailurePercentage
	if fp == nil { // no counts to keep between intervals
		return false
	}
	e.round++
	changed := false
	for _, n := range nodes {
		h := &n.Stats.Health
		attempts, errs := h.Attempts.Load(), h.Errors.Load()
		prev, had := e.last[h]
		e.last[h] = intervalCounts{attempts: attempts, errors: errs, round: e.round}
		if !had || h.Ejected() {
			continue
		}
		da, de := attempts-prev.attempts, errs-prev.errors
		if da >= uint64(fp.RequestVolume) && de*100 >= uint64(fp.Threshold)*da {
			if e.eject(nodes, n, node.FailurePercentage, now) {
				changed = true
			}
		}
	}
	for h, c := range e.last {
		if c.round != e.round { // the node left
			delete(e.last, h)
		}
	}
	return changed
}
