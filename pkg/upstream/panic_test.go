package upstream_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// panickyWatcher gives one set, then panics on its next call: a bug in a
// registry's client or in what it made of the registry's data.
type panickyWatcher struct{ calls atomic.Int32 }

func (w *panickyWatcher) Next(ctx context.Context) ([]discovery.Instance, error) {
	if w.calls.Add(1) == 1 {
		return []discovery.Instance{inst("a", 1)}, nil
	}
	time.Sleep(20 * time.Millisecond)
	panic("a bug in the watcher")
}

func (w *panickyWatcher) Stop() error { return nil }

// panickyPoller is a Poller whose second answer panics, inside the
// upstream's controller.
type panickyPoller struct {
	panickyWatcher
	ready   chan struct{}
	done    chan struct{}
	pending atomic.Bool // an answer is there for Poll
}

func (p *panickyPoller) Ready() <-chan struct{} { return p.ready }
func (p *panickyPoller) Done() <-chan struct{}  { return p.done }
func (p *panickyPoller) Poll() ([]discovery.Instance, bool, error) {
	if !p.pending.Swap(false) {
		return nil, false, nil
	}
	set, err := p.Next(context.Background())
	return set, true, err
}

// answer makes an answer ready.
func (p *panickyPoller) answer() {
	p.pending.Store(true)
	p.ready <- struct{}{}
}

// A panic in the registry's watcher, or in the upstream's controller,
// does not end the process: the upstream keeps its nodes, marked stale
// with the panic as its error.
func TestPanicKeepsTheNodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    func() discovery.Watcher
	}{
		{"in the watcher", func() discovery.Watcher { return &panickyWatcher{} }},
		{"in the controller", func() discovery.Watcher {
			p := &panickyPoller{ready: make(chan struct{}, 1), done: make(chan struct{})}
			p.answer()
			time.AfterFunc(100*time.Millisecond, p.answer)
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := upstream.New(upstream.Config{Name: "users"})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go u.Run(ctx, tc.w())
			waitVersion(t, u, 1)
			deadline := time.Now().Add(5 * time.Second)
			for u.Snapshot().Err == nil && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			s := u.Snapshot()
			if len(s.Nodes) != 1 || s.Err == nil || !strings.Contains(s.Err.Error(), "panicked") {
				t.Fatalf("%d nodes, error %v; want the node kept and the panic as the error", len(s.Nodes), s.Err)
			}
		})
	}
}
