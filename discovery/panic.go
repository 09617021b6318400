package discovery

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/panics"
)

// PanicPause is how long a producer whose panic was contained waits
// before it starts again (Rerun's callers), unless its adapter has a
// backoff of its own: a panic that repeats must not make it spin.
const PanicPause = time.Second

// Rerun runs loop, an adapter's producer loop (one watcher's, one
// subscription's), on the calling goroutine until it returns. A panic in
// it is contained to it: it is logged with its stack (through a panics.Log:
// once a minute at most), passed to fail as a *panics.Error, which the
// adapter reports to the loop's watchers as it reports a registry error
// (they keep their last set, marked stale), and loop is called again, with
// its state afresh, once pause returns true. Rerun returns when loop
// returns or pause returns false (the watcher stopped meanwhile).
func Rerun(log *logrus.Entry, fail func(error), pause func() bool, loop func()) {
	var logged panics.Log
	for {
		p := panics.Catch(loop)
		if p == nil {
			return
		}
		logged.Log(log, p, "the registry watcher panicked; its watchers keep their last instances, marked stale, and it starts again after a pause")
		fail(p)
		if !pause() {
			return
		}
	}
}
