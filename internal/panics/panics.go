// Package panics contains a panic to the unit it belongs to (a registry
// watcher, a probe loop, a relay): it turns it into an error with its
// stack, and logs it at most once a minute. In Go a panic on any
// goroutine ends the process, and nothing but a config error may stop
// Remora from serving.
package panics

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/ratelog"
)

// Error is a panic contained on a goroutine, as an error: a bug (in
// Remora, in a registry client) or data no test foresaw. A registry
// adapter reports it to its watchers as it reports an unreachable
// registry (the upstream keeps its last set, marked stale).
type Error struct {
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

// New returns v, a value recover returned, with the stack of the
// goroutine: call it in the deferred function that recovered, so that the
// stack is the panic's.
func New(v any) *Error {
	return &Error{Value: v, Stack: debug.Stack()}
}

func (e *Error) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Catch calls f and returns the panic it raised, or nil when it returned.
func Catch(f func()) (p *Error) {
	defer func() {
		if v := recover(); v != nil {
			p = New(v)
		}
	}()
	f()
	return nil
}

// Log logs the panics that one unit (a watcher, a subscription, a node's
// probe loop, a listener's relays, an upstream's controller) contained: the
// first at once, then at most one a minute while they go on, each with
// its value (panic) and stack, and how many were not logged since the
// last line (skipped). A panic that repeats, on every retry, event or
// connection, thus costs one line a minute. The zero value is ready to
// use; it is safe for concurrent use.
type Log struct {
	now func() time.Time // time.Now when nil; tests set it

	limit ratelog.Limiter
}

// Log logs p under msg at level error, unless a line was logged less than
// a minute ago; it reports whether it logged.
func (l *Log) Log(entry *logrus.Entry, p *Error, msg string) bool {
	now := time.Now
	if l.now != nil {
		now = l.now
	}
	ok, skipped := l.limit.Allow(now())
	if !ok {
		return false
	}
	entry = entry.WithField("panic", fmt.Sprint(p.Value)).WithField("stack", string(p.Stack))
	if skipped > 0 {
		entry = entry.WithField("skipped", skipped)
	}
	entry.Error(msg)
	return true
}
