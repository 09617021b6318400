// Package gctune keeps the garbage collector from running too often while
// the heap is small.
//
// GOGC=100 starts a collection when the heap has grown by as much as was
// live after the last one. A sidecar's live heap is a few MiB, so under
// load it collects dozens of times a second; with one CPU (GOMAXPROCS=1)
// each cycle takes a quarter of it from requests while it marks, which is
// where their latency tail comes from. The tuner sets GOGC after each
// collection so the next one starts once the heap has grown by at least
// Headroom bytes, or by GOGC's own share of a larger heap: a small heap
// costs at most Headroom more memory, a large one the same as without it.
//
// It stays off when the GOGC environment variable is set: the operator's
// choice wins. GOMEMLIMIT still applies as it would.
package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// defaultGOGC is GOGC when the environment does not set it: the runtime's
// default, which Start requires.
const defaultGOGC = 100

// DefaultHeadroom is the heap growth that Start allows before a
// collection when the live heap is small.
const DefaultHeadroom = 4 << 20

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales
// with GOGC.
const heapMinimum = 4 << 20

// Percent returns the GOGC that lets a heap of live bytes grow by
// headroom bytes, and never less than base (GOGC's value without tuning).
// The runtime's goal is the larger of live × (1 + GOGC/100) and its
// minimum heap × GOGC/100: the GOGC returned keeps both at or under live
// + headroom.
func Percent(live, headroom uint64, base int) int {
	p := (live + headroom) * 100 / heapMinimum
	if live > 0 {
		p = min(p, headroom*100/live)
	}
	const most = 10000
	switch {
	case p > most:
		return most
	case int(p) < base:
		return base
	}
	return int(p)
}

// Tuner sets GOGC after each collection; see the package comment. It
// tunes from the runtime's finalizer goroutine; Stop may be called from any
// goroutine.
type Tuner struct {
	headroom uint64
	stopped  atomic.Bool
	mu       sync.Mutex
	sample   []metrics.Sample // the live heap and GOGC
}

// Start starts a tuner with the given headroom (0 means DefaultHeadroom),
// or returns nil when the GOGC environment variable is set. Stop ends it.
func Start(headroom uint64) *Tuner {
	if _, set := os.LookupEnv("GOGC"); set {
		return nil
	}
	if headroom == 0 {
		headroom = DefaultHeadroom
	}
	t := &Tuner{headroom: headroom, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/gogc:percent"}}}
	t.tune()
	t.arm()
	return t
}

// Stop stops tuning and puts GOGC back to the runtime's default (its value
// before Start). It may be called on a nil Tuner.
func (t *Tuner) Stop() {
	if t == nil || t.stopped.Swap(true) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	debug.SetGCPercent(defaultGOGC)
}

// arm runs tune after the next collection: a finalizer runs once the
// collection that finds its object unreachable is over.
func (t *Tuner) arm() {
	sentinel := new([16]byte)
	runtime.SetFinalizer(sentinel, func(*[16]byte) {
		if t.stopped.Load() {
			return
		}
		t.tune()
		t.arm()
	})
}

func (t *Tuner) tune() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped.Load() {
		return
	}
	metrics.Read(t.sample)
	var live, now uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live, now = t.sample[0].Value.Uint64(), t.sample[1].Value.Uint64()
	}
	if p := Percent(live, t.headroom, defaultGOGC); uint64(p) != now {
		debug.SetGCPercent(p)
	}
}
