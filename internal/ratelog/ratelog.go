// Package ratelog holds a log line that may repeat for as long as its
// cause lasts (a panic on every retry, an accept error, Remora's own
// shortage of descriptors met by every request) to one a minute, and
// counts the lines it held back, for the next line to say.
package ratelog

import (
	"sync/atomic"
	"time"
)

// Interval is the least time between two lines a Limiter lets through.
const Interval = time.Minute

// Limiter lets the first line through, then one per Interval. Its zero
// value is ready to use; it is safe for concurrent use and takes no lock,
// so that a path every request may take can ask it.
type Limiter struct {
	next    atomic.Int64 // mono ns before which lines are held back; 0: none yet
	skipped atomic.Int64 // lines held back since the last one let through
}

// Allow reports whether a line may be written at now. When it may,
// skipped is how many were held back since the last one let through.
func (l *Limiter) Allow(now time.Time) (ok bool, skipped int) {
	t := mono(now)
	next := l.next.Load()
	if next != 0 && t < next || !l.next.CompareAndSwap(next, t+int64(Interval)) {
		l.skipped.Add(1)
		return false, 0
	}
	return true, int(l.skipped.Swap(0))
}

// epoch anchors mono; it carries a monotonic clock reading.
var epoch = time.Now()

// mono is t as nanoseconds since epoch, on the monotonic clock when t
// carries a reading (as time.Now's results do): a step of the wall clock
// back must not hold every line back for as long as the step.
func mono(t time.Time) int64 { return int64(t.Sub(epoch)) + 1 }
