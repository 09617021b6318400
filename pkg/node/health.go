package node

import (
	"sync/atomic"
	"time"
)

// EjectReason names the detector that ejected a node.
type EjectReason uint32

// Ejection reasons.
const (
	NotEjected EjectReason = iota
	Consecutive5xx
	ConsecutiveGatewayFailure
	ConsecutiveLocalOriginFailure
	FailurePercentage
)

var reasonNames = [...]string{"", "consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure", "failure_percentage"}

// String returns the reason's config name ("consecutive_5xx", ...).
func (r EjectReason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Health is a node's health state, beside Stats and shared the same way: one
// per instance ID, surviving snapshot rebuilds and registry updates.
//
// Concurrency: the request path increments the failure counters and sets
// pending; the upstream controller (the single writer of verdicts) reads
// pending and sets or clears the ejection; the active prober of the node is
// the only writer of the probe fields. Every field is an atomic.
//
// The fields are ordered by size, 8-byte ones first, so that Health packs
// into 64 bytes (and Stats into a 128-byte size class): a million nodes
// carry one each.
type Health struct {
	// Errors counts attempts that count as failures for the
	// failure-percentage detector; Attempts counts every judged attempt.
	Errors       atomic.Uint64
	Attempts     atomic.Uint64
	ejectedUntil atomic.Int64 // monoMark; 0 when not ejected
	lastProbeErr atomic.Pointer[string]

	// Consecutive failure counters, reset by a success of their kind.
	Consecutive5xx         atomic.Uint32
	ConsecutiveGateway     atomic.Uint32
	ConsecutiveLocalOrigin atomic.Uint32

	pending     atomic.Uint32 // EjectReason a detector asks for, 0 none
	ejectReason atomic.Uint32
	ejections   atomic.Uint32 // ejection multiplier
	probeStreak atomic.Int32  // >0 successes in a row, <0 failures in a row
	activeDown  atomic.Bool   // failed active health checks
}

// RequestEjection records that a detector wants the node ejected; the
// controller decides. It reports whether this call set the request.
func (h *Health) RequestEjection(r EjectReason) bool {
	return h.pending.CompareAndSwap(0, uint32(r))
}

// TakeRequest returns and clears a pending ejection request. Without one
// it only reads: the controller asks every node of a snapshot it
// publishes.
func (h *Health) TakeRequest() EjectReason {
	if h.pending.Load() == 0 {
		return NotEjected
	}
	return EjectReason(h.pending.Swap(0))
}

// Eject marks the node ejected until until for reason and counts the
// ejection. Only the controller calls it.
func (h *Health) Eject(reason EjectReason, until time.Time) {
	h.ejections.Add(1)
	h.ejectReason.Store(uint32(reason))
	h.ejectedUntil.Store(monoMark(until))
	h.Consecutive5xx.Store(0)
	h.ConsecutiveGateway.Store(0)
	h.ConsecutiveLocalOrigin.Store(0)
}

// Unject returns an ejected node to service, keeping its ejection count
// (the back-off multiplier). Only the controller calls it.
func (h *Health) Unject() {
	h.ejectedUntil.Store(0)
	h.ejectReason.Store(0)
}

// Ejected reports whether the node is ejected (its ejection may have run
// out at now; the controller then returns it).
func (h *Health) Ejected() bool { return h.ejectedUntil.Load() != 0 }

// EjectedUntil returns when the ejection ends, or the zero time.
func (h *Health) EjectedUntil() time.Time {
	ns := h.ejectedUntil.Load()
	if ns == 0 {
		return time.Time{}
	}
	return FromMono(ns)
}

// EjectReason returns why the node is ejected.
func (h *Health) EjectReason() EjectReason { return EjectReason(h.ejectReason.Load()) }

// Ejections returns the ejection multiplier: how many times the node was
// ejected, less the decay the controller applies while it stays healthy.
func (h *Health) Ejections() uint32 { return h.ejections.Load() }

// DecayEjections lowers the ejection multiplier by one, not below zero.
func (h *Health) DecayEjections() {
	for {
		n := h.ejections.Load()
		if n == 0 || h.ejections.CompareAndSwap(n, n-1) {
			return
		}
	}
}

// ActiveHealthy reports whether the node passes its active health checks
// (true while none are configured or none has failed enough yet).
func (h *Health) ActiveHealthy() bool { return !h.activeDown.Load() }

// ProbeResult records one active probe and reports whether the node's
// active verdict changed. healthy and unhealthy are the thresholds of
// successes and failures in a row that flip the verdict. Only the node's
// prober calls it.
func (h *Health) ProbeResult(ok bool, err error, healthy, unhealthy int) bool {
	streak := h.probeStreak.Load()
	switch {
	case ok && streak < 0, !ok && streak > 0:
		streak = 0
	}
	if ok {
		streak++
		h.lastProbeErr.Store(nil)
	} else {
		streak--
		if err != nil {
			msg := err.Error()
			h.lastProbeErr.Store(&msg)
		}
	}
	h.probeStreak.Store(streak)
	down := h.activeDown.Load()
	switch {
	case down && ok && int(streak) >= healthy:
		h.activeDown.Store(false)
		return true
	case !down && !ok && int(-streak) >= unhealthy:
		h.activeDown.Store(true)
		return true
	}
	return false
}

// ForgetProbes clears the active verdict, the streak and the last probe
// error. The node's upstream has no active checks any more (a reload
// removed them): nothing would ever probe it back to health. Only the
// controller calls it, while no prober runs.
func (h *Health) ForgetProbes() {
	h.activeDown.Store(false)
	h.probeStreak.Store(0)
	h.lastProbeErr.Store(nil)
}

// LastProbeError returns the error of the last failed probe, if the last
// probe failed.
func (h *Health) LastProbeError() string {
	if p := h.lastProbeErr.Load(); p != nil {
		return *p
	}
	return ""
}
