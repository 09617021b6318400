package upstream

// Admission: the circuit breaker (requests in flight) and the retry
// budget. Both are atomics read and changed on the request path.

import "sync/atomic"

// admission is what the circuit breaker and the retry budget count. An
// upstream that replaces another on a reload shares its predecessor's, as
// the calls begun on the predecessor end there.
type admission struct {
	active  atomic.Int64 // requests in flight
	retries atomic.Int64 // retries in flight
}

// BeginRequest counts a request in flight, or reports false (counting
// nothing) when circuit_breaker.max_requests are already in flight.
func (u *Upstream) BeginRequest() bool {
	n := u.admission.active.Add(1)
	if limit := u.cfg.Policy.CircuitBreaker.MaxRequests; limit > 0 && n > int64(limit) {
		u.admission.active.Add(-1)
		return false
	}
	return true
}

// EndRequest ends a request counted by BeginRequest.
func (u *Upstream) EndRequest() { u.admission.active.Add(-1) }

// Active returns the requests in flight.
func (u *Upstream) Active() int64 { return u.admission.active.Load() }

// TryRetry takes a place in the retry budget, or reports false when the
// retries in flight already reach budget_percent of the requests in flight
// (and min_retries). A true result is returned with EndRetry.
func (u *Upstream) TryRetry() bool {
	r := &u.cfg.Policy.Retry
	limit := max(int64(*r.MinRetries), u.admission.active.Load()*int64(*r.BudgetPercent)/100)
	if u.admission.retries.Add(1) > limit {
		u.admission.retries.Add(-1)
		return false
	}
	return true
}

// EndRetry returns a place taken by TryRetry.
func (u *Upstream) EndRetry() { u.admission.retries.Add(-1) }

// RetriesInFlight returns the retries in flight.
func (u *Upstream) RetriesInFlight() int64 { return u.admission.retries.Load() }
