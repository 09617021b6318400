package upstream_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// scriptWatcher delivers the sets and errors its test sends, one per Next.
type scriptWatcher struct {
	next chan func() ([]discovery.Instance, error)
}

func (w *scriptWatcher) Next(ctx context.Context) ([]discovery.Instance, error) {
	select {
	case f := <-w.next:
		return f()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (w *scriptWatcher) Stop() error { return nil }

// A registry down for a minute — an error a second — logs its first error
// and one more line with the count, says what it keeps, and one line when
// it answers again: not a line per error.
func TestRegistryOutageLogsLittle(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	u := upstream.New(upstream.Config{Name: "svc", Log: logrus.NewEntry(logger), Now: now})
	w := &scriptWatcher{next: make(chan func() ([]discovery.Instance, error))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	defer func() { cancel(); <-done }()
	send := func(f func() ([]discovery.Instance, error)) { w.next <- f }
	send(func() ([]discovery.Instance, error) { return []discovery.Instance{inst("a", 1), inst("b", 2)}, nil })
	waitVersion(t, u, 1)
	down := errors.New("connection refused")
	for range 70 { // a little over a minute
		clock.Add(int64(time.Second))
		send(func() ([]discovery.Instance, error) { return nil, down })
	}
	send(func() ([]discovery.Instance, error) { return []discovery.Instance{inst("a", 1), inst("b", 2)}, nil })
	waitVersion(t, u, 2)
	var warnings, recovered []string
	for _, e := range hook.AllEntries() {
		switch {
		case e.Level == logrus.WarnLevel && strings.Contains(e.Message, "registry error"):
			warnings = append(warnings, e.Message)
		case strings.Contains(e.Message, "answered again"):
			recovered = append(recovered, e.Message)
		}
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "keeping the 2 nodes") || len(recovered) != 1 {
		t.Fatalf("warnings %q, recoveries %q; want 2 warnings keeping 2 nodes and 1 recovery", warnings, recovered)
	}
	if s := u.Snapshot(); s.Stale() || s.Available != 2 {
		t.Fatalf("after the outage: stale %v, %d available", s.Stale(), s.Available)
	}
}

// Before the registry ever answered, an error says there are no nodes yet.
func TestRegistryErrorBeforeFirstSetSaysNoNodes(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	u := upstream.New(upstream.Config{Name: "svc", Log: logrus.NewEntry(logger)})
	w := &scriptWatcher{next: make(chan func() ([]discovery.Instance, error))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	defer func() { cancel(); <-done }()
	w.next <- func() ([]discovery.Instance, error) { return nil, errors.New("unreachable") }
	waitSnapshot(t, u, "stale", func(s *upstream.Snapshot) bool { return s.Stale() })
	// The stale snapshot is published before the error is logged.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		e := hook.LastEntry()
		if e != nil && strings.Contains(e.Message, "no nodes yet") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logged %v", e)
		}
	}
}
