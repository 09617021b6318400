package discovery

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// PanicPause is how long a producer whose panic was contained waits
// before it starts again (Rerun's callers), unless its adapter has a
// backoff of its own: a panic that repeats must not make it spin.
const PanicPause = time.Second

// PanicError is a panic contained on an adapter's goroutine, as the error
// its watchers report: a bug (in Remora, in a registry client) or data no
// test foresaw, not an unreachable registry, but handled as one — the
// upstream keeps its last set, marked stale.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

// NewPanicError returns v, a value recover returned, with the stack of the
// goroutine: call it in the deferred function that recovered, so that the
// stack is the panic's.
func NewPanicError(v any) *PanicError {
	return &PanicError{Value: v, Stack: debug.Stack()}
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Catch calls f and returns the panic it raised, or nil when it returned.
func Catch(f func()) (p *PanicError) {
	defer func() {
		if v := recover(); v != nil {
			p = NewPanicError(v)
		}
	}()
	f()
	return nil
}

// PanicLog logs the panics that one unit (a watcher, a subscription; out
// of discovery, a node's probe loop, a listener's relays) contained: the
// first at once, then at most one a minute while they go on, each with
// its value (panic) and stack, and how many were not logged since the
// last line (skipped). A panic that repeats, on every retry, event or
// connection, thus costs one line a minute. The zero value is ready to
// use; it is safe for concurrent use.
type PanicLog struct {
	now func() time.Time // time.Now when nil; tests set it

	mu      sync.Mutex
	logged  time.Time // when a line was last written
	skipped int       // panics since then, not logged
}

// Log logs p under msg at level error, unless a line was logged less than
// a minute ago; it reports whether it logged.
func (l *PanicLog) Log(entry *logrus.Entry, p *PanicError, msg string) bool {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	t := now()
	l.mu.Lock()
	if !l.logged.IsZero() && t.Sub(l.logged) < time.Minute {
		l.skipped++
		l.mu.Unlock()
		return false
	}
	skipped := l.skipped
	l.logged, l.skipped = t, 0
	l.mu.Unlock()
	entry = entry.WithField("panic", fmt.Sprint(p.Value)).WithField("stack", string(p.Stack))
	if skipped > 0 {
		entry = entry.WithField("skipped", skipped)
	}
	entry.Error(msg)
	return true
}

// Rerun runs loop, an adapter's producer loop (one watcher's, one
// subscription's), on the calling goroutine until it returns. A panic in
// it is contained to it: it is logged with its stack (through a PanicLog:
// once a minute at most), passed to fail as a *PanicError, which the
// adapter reports to the loop's watchers as it reports a registry error
// (they keep their last set, marked stale), and loop is called again, with
// its state afresh, once pause returns true. Rerun returns when loop
// returns or pause returns false (the watcher stopped meanwhile).
func Rerun(log *logrus.Entry, fail func(error), pause func() bool, loop func()) {
	var panics PanicLog
	for {
		p := Catch(loop)
		if p == nil {
			return
		}
		panics.Log(log, p, "the registry watcher panicked; its watchers keep their last instances, marked stale, and it starts again after a pause")
		fail(p)
		if !pause() {
			return
		}
	}
}
