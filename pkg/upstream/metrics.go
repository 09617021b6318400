package upstream

import (
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/pkg/canary"
)

// DurationBuckets are the upper bounds, in seconds, of the request duration
// histogram: from 100 µs, where a sidecar's requests to a nearby node
// fall, to 10 s (Prometheus' defaults start at 5 ms, where every such
// request would land in the first bucket).
var DurationBuckets = [...]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Status classes counted per pool: 1xx..5xx, and "error" for requests that
// got no response from any node.
const (
	ClassError   = 0
	classesCount = 6
)

// ClassNames names the status classes by index.
var ClassNames = [classesCount]string{"error", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Metrics are an upstream's request counters, read by the metrics endpoint
// at scrape time. Every field is an atomic: the request path only adds.
// They outlive snapshots and are handed over on a config reload.
type Metrics struct {
	// Requests by pool and status class.
	Requests [2][classesCount]atomic.Uint64
	// Durations by pool: counts per bucket of DurationBuckets (+Inf last)
	// and the sum in nanoseconds.
	Durations [2]Histogram
	// Retries counts retried attempts, by cause (RetryCause).
	Retries   atomic.Uint64
	RetriesBy [retryCauses]atomic.Uint64
	// Local counts the calls that got no answer from a node, by Reason
	// (Remora's own answers, and failures).
	Local [reasonCount]atomic.Uint64
	// Ejections counts ejections by node.EjectReason.
	Ejections [5]atomic.Uint64
	// RegistryErrors counts registry read failures.
	RegistryErrors atomic.Uint64
	// ClientClosed counts requests whose client went away (499).
	ClientClosed atomic.Uint64
	// GRPC counts gRPC answers by their grpc-status code (0..16).
	GRPC [17]atomic.Uint64
	// Zone counts the calls of an upstream with a locality split by
	// where their first pick went: ZoneLocal or ZoneOther.
	Zone [2]atomic.Uint64
	// Mirrored counts the copies of this upstream's requests sent by its
	// mirror; MirrorDropped those dropped over max_in_flight.
	Mirrored, MirrorDropped atomic.Uint64
}

// Where a call's first pick went (Metrics.Zone).
const (
	ZoneLocal = iota
	ZoneOther
)

// Histogram is a lock-free fixed-bucket histogram.
type Histogram struct {
	Counts [len(DurationBuckets) + 1]atomic.Uint64
	SumNs  atomic.Int64
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(DurationBuckets) && s > DurationBuckets[i] {
		i++
	}
	h.Counts[i].Add(1)
	h.SumNs.Add(int64(d))
}

// Record counts a finished request: status 0 means no node answered. The
// canary judge sees it too. It does not lock or allocate.
func (u *Upstream) Record(p canary.Pool, status int, d time.Duration) {
	class := ClassError
	if status >= 100 && status < 600 {
		class = status / 100
	}
	m := u.metrics
	m.Requests[p][class].Add(1)
	m.Durations[p].Observe(d)
	if u.cfg.Canary != nil {
		u.canaryStats.Record(p, status == 0 || status >= 500, d)
	}
}

// Metrics returns the upstream's counters.
func (u *Upstream) Metrics() *Metrics { return u.metrics }

// RecordLocal counts a request Remora answered itself with status, for
// reason (no node, a circuit breaker, a rate limit).
func (u *Upstream) RecordLocal(status int, reason Reason) {
	u.metrics.Requests[canary.Stable][status/100%classesCount].Add(1)
	u.metrics.Local[reason].Add(1)
}
