package upstream

import (
	"context"
	"errors"
	"net"

	"github.com/remora-mesh/remora/internal/shortage"
)

// Reason is why a request (or connection) got no answer from a node: the
// answer Remora gave itself, or the failure that ended it. Access logs
// show it, in the spirit of Envoy's response flags, and the metrics count
// each.
type Reason uint8

// Reasons.
const (
	ReasonNone           Reason = iota
	ReasonNoRoute               // NR: no upstream for the request (404)
	ReasonNotSynced             // NS: the registry has not delivered the upstream's nodes (503)
	ReasonNoHealthyNode         // UH: no node may take traffic (503)
	ReasonOverflow              // UO: a circuit breaker is open (503)
	ReasonRateLimited           // RL: rate_limit (429)
	ReasonConnectFailure        // UF: no node could be connected to (502)
	ReasonTimeout               // UT: a timeout (504)
	ReasonUpstreamReset         // UC: the node broke off the exchange (502)
	ReasonClientClosed          // DC: the client went away (499)
	ReasonLocalResources        // LR: Remora is out of file descriptors, ephemeral ports or kernel memory (503)
	reasonCount
)

var reasonNames = [reasonCount]string{"", "no_route", "registry_not_answered", "no_healthy_node", "overflow", "rate_limited",
	"connect_failure", "timeout", "upstream_reset", "client_closed", "local_resources"}

var reasonFlags = [reasonCount]string{"-", "NR", "NS", "UH", "UO", "RL", "UF", "UT", "UC", "DC", "LR"}

// String is the reason's name ("no_healthy_node"), "" for none.
func (r Reason) String() string { return reasonNames[r] }

// Flag is the reason's short flag ("UH"), "-" for none.
func (r Reason) Flag() string { return reasonFlags[r] }

// Reasons lists every reason but ReasonNone, for metrics.
func Reasons() []Reason {
	out := make([]Reason, 0, reasonCount-1)
	for r := ReasonNone + 1; r < reasonCount; r++ {
		out = append(out, r)
	}
	return out
}

// ReasonOf classifies err, what ended a call without an answer.
func ReasonOf(err error) Reason {
	var ne net.Error
	switch {
	case err == nil:
		return ReasonNone
	case errors.Is(err, ErrNotSynced):
		return ReasonNotSynced
	case errors.Is(err, ErrNoNode), errors.Is(err, ErrCanaryEmpty):
		return ReasonNoHealthyNode
	case errors.Is(err, ErrBreakerOpen), errors.Is(err, ErrOverloaded):
		return ReasonOverflow
	case errors.Is(err, ErrRateLimited):
		return ReasonRateLimited
	case errors.Is(err, ErrLocalResources), shortage.Is(err):
		return ReasonLocalResources
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case IsConnectError(err):
		return ReasonConnectFailure
	}
	return ReasonUpstreamReset
}

// RetryCause is why an attempt was retried.
type RetryCause uint8

// Retry causes.
const (
	RetryConnect RetryCause = iota // a connect failure
	RetryStatus                    // a status in retry.statuses
	RetryReset                     // the exchange broke off
	RetryGRPC                      // a code in retry.grpc_statuses
	retryCauses
)

var retryCauseNames = [retryCauses]string{"connect_failure", "status", "reset", "grpc_status"}

// String names the cause.
func (c RetryCause) String() string { return retryCauseNames[c] }

// RetryCauses lists every cause, for metrics.
func RetryCauses() []RetryCause {
	return []RetryCause{RetryConnect, RetryStatus, RetryReset, RetryGRPC}
}
