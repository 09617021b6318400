package discovery

import (
	"context"
	"sync"
)

// Latest is the level-triggered, coalescing core of a Watcher: a producer
// goroutine (the adapter's) publishes complete sets or errors, and Next hands
// the newest one to the consumer, skipping sets equal to the one it returned
// last. Publishing never blocks: a slow consumer sees only the latest state.
//
// Publish, Fail and Stop are safe for concurrent use; Next is called by one
// goroutine at a time.
type Latest struct {
	mu      sync.Mutex
	set     []Instance // newest published set, sorted, owned by Latest
	pending error      // error to report once, if no set came after it
	fresh   bool       // set was published and not yet returned

	returned    []Instance // what Next returned last (consumer-owned)
	hasReturned bool
	failed      bool // Next returned an error since it last returned a set

	wake     chan struct{} // capacity 1: "something changed"
	done     chan struct{}
	stopOnce sync.Once
}

// NewLatest returns an empty Latest; Next blocks until the first Publish.
func NewLatest() *Latest {
	return &Latest{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Publish records set as the current instance set. Latest takes ownership of
// set, sorts it by ID and makes its equal metadata maps share one
// (ShareMetadata); the caller must not modify it afterwards. A set already
// sorted, with its equal maps shared, is not written to: one such set may
// be published to many Latests (the static registry does).
func (l *Latest) Publish(set []Instance) {
	if set == nil {
		set = []Instance{}
	}
	ShareMetadata(set)
	SortByID(set)
	l.mu.Lock()
	l.set, l.fresh, l.pending = set, true, nil
	l.mu.Unlock()
	l.signal()
}

// Fail reports that the registry could not be read. Next returns err once,
// after any set published before it and unless a set is published after it.
func (l *Latest) Fail(err error) {
	l.mu.Lock()
	l.pending = err
	l.mu.Unlock()
	l.signal()
}

func (l *Latest) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Done is closed by Stop; producers select on it to end.
func (l *Latest) Done() <-chan struct{} { return l.done }

// Stop unblocks Next for good. It is idempotent and returns nil.
func (l *Latest) Stop() error {
	l.stopOnce.Do(func() { close(l.done) })
	return nil
}

// Next implements Watcher.Next. After it returned an error, the next set
// published is returned even when equal to the last one, so that the
// consumer learns the registry is readable again.
func (l *Latest) Next(ctx context.Context) ([]Instance, error) {
	for {
		select {
		case <-l.done:
			return nil, ErrStopped
		default:
		}
		if set, ok, err := l.Poll(); ok {
			return set, err
		}
		select {
		case <-l.wake:
		case <-l.done:
			return nil, ErrStopped
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Poll implements Poller: Next's answer when there is one (ok), without
// waiting. Poll and Next are called by one goroutine at a time.
func (l *Latest) Poll() (set []Instance, ok bool, err error) {
	l.mu.Lock()
	set, fresh, err := l.set, l.fresh, l.pending
	l.fresh = false
	if fresh && (!l.hasReturned || l.failed || !EqualSets(set, l.returned)) {
		// A set is returned before an error that came after it; the
		// error is reported by the following call. After an error, a
		// set is returned even if unchanged: it says "fresh again".
		l.mu.Unlock()
		l.returned, l.hasReturned, l.failed = set, true, false
		return set, true, nil
	}
	l.pending = nil
	l.mu.Unlock()
	if err != nil {
		l.failed = true
		return nil, true, err
	}
	return nil, false, nil
}

// Ready implements Poller: it receives (coalesced) after a Publish or a
// Fail.
func (l *Latest) Ready() <-chan struct{} { return l.wake }

// Poller is a Watcher that can be followed without a goroutine blocked in
// Next: Ready receives when Poll may have something; Poll never blocks;
// Done is closed when the watcher stops. Every watcher built on Latest is
// one; the upstream controller uses it to follow its registry with no
// goroutine but its own (ten thousand upstreams, ten thousand stacks
// fewer).
type Poller interface {
	Watcher
	Ready() <-chan struct{}
	Poll() (set []Instance, ok bool, err error)
	Done() <-chan struct{}
}

var _ Poller = (*Latest)(nil)
