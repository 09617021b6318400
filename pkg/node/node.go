// Package node defines Node, one backend endpoint as the proxy sees it: an
// immutable registry instance plus per-node statistics that live in atomics
// and survive registry updates.
package node

import (
	"math"
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

// Available reports whether the registry lets the node receive new
// requests: it calls it healthy and its weight is not 0 (drained).
func (n *Node) Available() bool {
	return n.Healthy && n.Weight > 0
}

// Eligible reports whether the node may be picked: Available, not ejected
// by outlier detection, and passing its active health checks.
func (n *Node) Eligible() bool {
	return n.Available() && !n.Stats.Health.Ejected() && n.Stats.Health.ActiveHealthy()
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
	// lastUsed is when the last attempt began (monoMark).
	lastUsed atomic.Int64
	// added is when the node joined its upstream, in Unix ns (0: unknown);
	// immutable. (A time.Time would take 24 bytes: a million nodes' Stats
	// fit a 128-byte size class with 8.)
	added int64

	// The peak-EWMA latency estimate (see End and PeakEWMA): ewmaBits holds
	// the estimate in nanoseconds as float64 bits (0: no sample yet),
	// ewmaStamp the Mono instant of its last update. They are two atomics,
	// not one: an update is a CAS on ewmaBits followed by a store of
	// ewmaStamp, so a reader or a concurrent writer may pair an estimate
	// with the stamp of the update before it. That skews one decay weight
	// slightly and is harmless for load balancing; it keeps Stats free of
	// locks.
	ewmaBits  atomic.Uint64
	ewmaStamp atomic.Int64
	// invDecay is 1/decay in 1/ns as float64 bits; 0 means
	// DefaultLatencyDecay.
	invDecay atomic.Uint64

	// Health is the node's passive and active health state.
	Health Health
}

// NewStats returns the stats of a node that joined its upstream at added.
func NewStats(added time.Time) *Stats {
	s := &Stats{}
	if !added.IsZero() {
		s.added = monoMark(added)
	}
	return s
}

// Added returns when the node joined its upstream (the zero time for stats
// made without NewStats).
func (s *Stats) Added() time.Time {
	if s.added == 0 {
		return time.Time{}
	}
	return FromMono(s.added)
}

// Begin records the start of an attempt on the node at now.
func (s *Stats) Begin(now time.Time) {
	s.InFlight.Add(1)
	s.Requests.Add(1)
	s.lastUsed.Store(monoMark(now))
}

// End records the end of an attempt that took latency; failed says whether
// the node was at fault. An attempt the client cancelled is ended with
// failed false: it is never charged to the node. End is EndAt at the
// current instant.
//
// A positive latency is a sample for the peak-EWMA estimate (see PeakEWMA);
// latency 0 records no sample, which is what a caller should pass for an
// attempt whose duration says nothing about the node (a client that went
// away early).
func (s *Stats) End(latency time.Duration, failed bool) {
	s.end(MonoNow(), latency, failed)
}

// EndAt is End for an attempt that ended at now: for a caller that has
// read the clock already (now must carry its monotonic reading, as
// time.Now's does), and for tests that simulate time.
func (s *Stats) EndAt(now time.Time, latency time.Duration, failed bool) {
	s.end(Mono(now), latency, failed)
}

func (s *Stats) end(mono int64, latency time.Duration, failed bool) {
	if latency > 0 {
		s.observe(mono, float64(latency), failed)
	}
	s.InFlight.Add(-1)
	if failed {
		s.Failures.Add(1)
	}
}

// LastUsed returns when the last attempt began, or the zero time.
func (s *Stats) LastUsed() time.Time {
	ns := s.lastUsed.Load()
	if ns == 0 {
		return time.Time{}
	}
	return FromMono(ns)
}

// DefaultLatencyDecay is the time constant of the peak-EWMA latency estimate
// until SetLatencyDecay changes it: the weight of a sample falls to 1/e
// after this long (Finagle's and Linkerd's default).
const DefaultLatencyDecay = 10 * time.Second

// epoch anchors Mono; it carries a monotonic clock reading.
var epoch = time.Now()

// Mono returns t as nanoseconds since an arbitrary process-wide epoch, on
// the monotonic clock when t carries a monotonic reading (as time.Now's
// results do) and on the wall clock otherwise. Only differences between
// Mono values of one clock are meaningful.
func Mono(t time.Time) int64 { return int64(t.Sub(epoch)) }

// FromMono is the instant m (Mono) stands for, with a monotonic clock
// reading when epoch has one: compared with time.Now's results, it is
// immune to steps of the wall clock (an NTP step, a VM resumed), which a
// time kept as Unix nanoseconds is not.
func FromMono(m int64) time.Time { return epoch.Add(time.Duration(m)) }

// monoMark is Mono(t) for a field in which 0 means "not set": an instant
// that falls exactly on the epoch is kept a nanosecond later.
func monoMark(t time.Time) int64 {
	if m := Mono(t); m != 0 {
		return m
	}
	return 1
}

// MonoNow is Mono(time.Now()), read from the monotonic clock alone.
func MonoNow() int64 { return int64(time.Since(epoch)) }

// SetLatencyDecay sets the time constant of the latency estimate; d <= 0
// restores DefaultLatencyDecay. The ewma policy calls it when it builds a
// picker, so that one upstream's nodes all decay alike.
func (s *Stats) SetLatencyDecay(d time.Duration) {
	if d <= 0 {
		s.invDecay.Store(0)
		return
	}
	s.invDecay.Store(math.Float64bits(1 / float64(d)))
}

// LatencyDecay returns the time constant of the latency estimate.
func (s *Stats) LatencyDecay() time.Duration {
	inv := math.Float64frombits(s.invDecay.Load())
	if inv == 0 {
		return DefaultLatencyDecay
	}
	return time.Duration(math.Round(1 / inv))
}

func (s *Stats) inverseDecay() float64 {
	if inv := math.Float64frombits(s.invDecay.Load()); inv != 0 {
		return inv
	}
	return 1 / float64(DefaultLatencyDecay)
}

// decayWeight returns exp(-elapsed*inv), the share of an estimate that
// remains after elapsed nanoseconds, to a relative error below 2e-6.
func decayWeight(elapsed int64, inv float64) float64 {
	if elapsed <= 0 {
		return 1
	}
	return ExpNeg(float64(elapsed) * inv)
}

// ExpNeg is exp(-x) for x >= 0 (1 for x <= 0), to a relative error below
// 2e-6, and a third cheaper than math.Exp: the decay of latency estimates,
// which pickers compute per candidate. exp(-x) = 2^-n · e^-y with n = ⌊x/ln2⌋ and
// y = x - n·ln2 in [0, ln2), e^-y by its Taylor polynomial of degree 8.
func ExpNeg(x float64) float64 {
	switch {
	case x <= 0:
		return 1
	case x < 1e-3:
		return 1 - x + x*x/2 // error below x³/6 < 2e-10
	case x > 700:
		return 0
	}
	n := int64(x * math.Log2E)
	y := x - float64(n)*math.Ln2
	p := 1 - y*(1-y*(1.0/2-y*(1.0/6-y*(1.0/24-y*(1.0/120-y*(1.0/720-y*(1.0/5040-y*(1.0/40320))))))))
	return p * math.Float64frombits(uint64(1023-n)<<52)
}

// observe folds a latency sample (ns) taken at mono into the peak-EWMA
// estimate: a sample above the estimate replaces it (the peak), a lower one
// is averaged in with weight 1-exp(-elapsed/decay), elapsed being the time
// since the last update. A failed attempt may raise the estimate but never
// lowers it, nor is it a first sample, so a node that fails fast does not
// look fast.
func (s *Stats) observe(mono int64, sample float64, failed bool) {
	inv := s.inverseDecay()
	for {
		old := s.ewmaBits.Load()
		if old == 0 && failed {
			return
		}
		est := math.Float64frombits(old)
		next := sample
		if old != 0 && sample <= est {
			if failed {
				next = est
			} else {
				w := decayWeight(mono-s.ewmaStamp.Load(), inv)
				next = est*w + sample*(1-w)
			}
		}
		if s.ewmaBits.CompareAndSwap(old, math.Float64bits(next)) {
			s.ewmaStamp.Store(mono)
			return
		}
	}
}

// PeakEWMA returns the peak-EWMA latency estimate in nanoseconds as seen at
// mono (a Mono instant): the last estimate decayed towards 0 by the time
// since its last update, so that a node that stopped receiving traffic
// because it looked slow is eventually tried again (Finagle's and
// Linkerd's behaviour). It returns 0 when the node has no sample. It reads
// two atomics and does not allocate.
func (s *Stats) PeakEWMA(mono int64) float64 {
	est := math.Float64frombits(s.ewmaBits.Load())
	if est == 0 {
		return 0
	}
	return est * decayWeight(mono-s.ewmaStamp.Load(), s.inverseDecay())
}

// EWMA returns the peak-EWMA estimate in nanoseconds as of its last update
// (0 when the node has no sample) and the Mono instant of that update. The
// estimate at a later instant t is est·exp(-(t-at)/LatencyDecay()), so a
// picker comparing two nodes can decay one towards the other's instant
// without reading the clock.
func (s *Stats) EWMA() (est float64, at int64) {
	return math.Float64frombits(s.ewmaBits.Load()), s.ewmaStamp.Load()
}

// Latency returns PeakEWMA at now as a Duration, for display.
func (s *Stats) Latency(now time.Time) time.Duration {
	return time.Duration(s.PeakEWMA(Mono(now)))
}
