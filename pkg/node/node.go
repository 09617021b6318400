// Package node defines Node, one backend endpoint as the proxy sees it: an
// immutable registry instance plus per-node statistics that live in atomics
// and survive registry updates.
package node

import (
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/discovery"
)

// Node is one endpoint of an upstream in one snapshot.
//
// Concurrency: Instance and HostPort are immutable once the node is
// published. Stats is shared by every Node built for the same instance ID of
// the same upstream (the upstream controller hands the same *Stats to each
// rebuild), so counters and health survive metadata or weight changes; all of
// its fields are atomics, safe for concurrent use without locks.
type Node struct {
	discovery.Instance
	// HostPort is "address:port", computed once so the request path does
	// not format it.
	HostPort string
	// Stats is the node's mutable state; never nil.
	Stats *Stats
}

// New returns a node for inst with the given stats, or fresh stats (added
// now) when stats is nil.
func New(inst discovery.Instance, stats *Stats) *Node {
	if stats == nil {
		stats = NewStats(time.Now())
	}
	return &Node{Instance: inst, HostPort: inst.HostPort(), Stats: stats}
}

// Available reports whether the node may receive new requests: the registry
// calls it healthy and its weight is not 0 (drained).
func (n *Node) Available() bool {
	return n.Healthy && n.Weight > 0
}

// Stats are a node's counters. The zero value is ready to use; every field is
// an atomic, so Stats must not be copied after first use.
type Stats struct {
	// InFlight is the number of requests being proxied to the node now.
	InFlight atomic.Int64
	// Requests counts requests sent to the node (each attempt counts).
	Requests atomic.Uint64
	// Failures counts attempts that failed on the node's side (connect
	// errors, resets); client cancellations are not counted.
	Failures atomic.Uint64
	// ConsecutiveFailures counts failures since the last success.
	ConsecutiveFailures atomic.Uint32
	// lastUsed is the Unix nanosecond time of the last attempt.
	lastUsed atomic.Int64
	// added is when the node joined its upstream; immutable.
	added time.Time
}

// NewStats returns the stats of a node that joined its upstream at added.
func NewStats(added time.Time) *Stats { return &Stats{added: added} }

// Added returns when the node joined its upstream (the zero time for stats
// made without NewStats).
func (s *Stats) Added() time.Time { return s.added }

// Begin records the start of an attempt on the node at now.
func (s *Stats) Begin(now time.Time) {
	s.InFlight.Add(1)
	s.Requests.Add(1)
	s.lastUsed.Store(now.UnixNano())
}

// End records the end of an attempt that took latency; failed says whether
// the node was at fault. An attempt the client cancelled is ended with
// failed false: it is never charged to the node.
func (s *Stats) End(latency time.Duration, failed bool) {
	_ = latency // feeds latency-aware policies
	s.InFlight.Add(-1)
	if failed {
		s.Failures.Add(1)
		s.ConsecutiveFailures.Add(1)
		return
	}
	if s.ConsecutiveFailures.Load() != 0 {
		s.ConsecutiveFailures.Store(0)
	}
}

// LastUsed returns when the last attempt began, or the zero time.
func (s *Stats) LastUsed() time.Time {
	ns := s.lastUsed.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
