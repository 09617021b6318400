package discovery

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/internal/panics"
)

// Rerun reports each panic to fail, pauses and runs the loop again; a
// pause that reports the end stops it.
func TestRerun(t *testing.T) {
	tests := []struct {
		name       string
		panics     int // the loop panics this many times, then returns
		stopAfter  int // pause returns false on this call (0: never)
		wantRuns   int // calls of the loop
		wantFails  int // calls of fail
		wantPauses int // calls of pause
		wantLogged int // error lines: once a minute
	}{
		{name: "returns", panics: 0, wantRuns: 1},
		{name: "panics once", panics: 1, wantRuns: 2, wantFails: 1, wantPauses: 1, wantLogged: 1},
		{name: "panics three times", panics: 3, wantRuns: 4, wantFails: 3, wantPauses: 3, wantLogged: 1},
		{name: "stopped in the pause", panics: 5, stopAfter: 2, wantRuns: 2, wantFails: 2, wantPauses: 2, wantLogged: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, hook := logtest.NewNullLogger()
			var runs, fails, pauses int
			Rerun(logrus.NewEntry(logger), func(err error) {
				fails++
				var p *panics.Error
				if !errors.As(err, &p) || p.Value != "boom" {
					t.Errorf("fail got %v; want the *panics.Error", err)
				}
			}, func() bool {
				pauses++
				return pauses != tc.stopAfter
			}, func() {
				runs++
				if runs <= tc.panics {
					panic("boom")
				}
			})
			if runs != tc.wantRuns || fails != tc.wantFails || pauses != tc.wantPauses || len(hook.AllEntries()) != tc.wantLogged {
				t.Fatalf("runs %d, fails %d, pauses %d, lines %d; want %d, %d, %d, %d",
					runs, fails, pauses, len(hook.AllEntries()), tc.wantRuns, tc.wantFails, tc.wantPauses, tc.wantLogged)
			}
		})
	}
}

// A panic in following a part of a union (here, in its Relabel) ended
// the process. It is the part's error: the union is stale, its set kept;
// the part is followed again after a pause, with the set it was handling,
// and should that panic again, with the next one.
func TestUnionPanicIsThePartsError(t *testing.T) {
	tests := []struct {
		name   string
		panics int32  // Relabel panics on its first calls
		then   string // the ID of b's instance in the union's set after the panics
	}{
		{"once: the set is handled again", 1, "b/y"},
		{"twice: the next set is awaited", 2, "b/z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, hook := logtest.NewNullLogger()
			unionLog = logrus.NewEntry(logger)
			t.Cleanup(func() { unionLog = logrus.NewEntry(logrus.StandardLogger()) })
			a, b := NewLatest(), NewLatest()
			var calls atomic.Int32
			relabel := func(in Instance) Instance {
				if calls.Add(1) <= tc.panics {
					panic("injected: Relabel panicked")
				}
				in.ID = "b/" + in.ID
				return in
			}
			u := Union(Part{Watcher: a}, Part{Watcher: b, Relabel: relabel})
			defer u.Stop()
			a.Publish([]Instance{{ID: "x", Address: "10.0.0.1", Port: 80}})
			b.Publish([]Instance{{ID: "y", Address: "10.0.0.2", Port: 80}})
			next := func() ([]Instance, error) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				set, err := u.Next(ctx)
				if errors.Is(err, context.DeadlineExceeded) {
					t.Fatal("Next did not return within 5s")
				}
				return set, err
			}
			set, err := next()
			var pe *panics.Error
			if !errors.As(err, &pe) || set != nil {
				t.Fatalf("first Next = %v, %v; want the *panics.Error, no set", set, err)
			}
			if tc.panics > 1 {
				for calls.Load() < tc.panics {
					time.Sleep(10 * time.Millisecond)
				}
				b.Publish([]Instance{{ID: "z", Address: "10.0.0.3", Port: 80}})
			}
			for {
				set, err = next()
				if err == nil {
					break
				}
				if !errors.As(err, &pe) {
					t.Fatalf("Next = %v; want a set, or the panic again", err)
				}
			}
			if len(set) != 2 || set[0].ID != tc.then || set[1].ID != "x" {
				t.Fatalf("Next = %v; want %s and x", set, tc.then)
			}
			if e := hook.AllEntries(); len(e) != 1 || e[0].Data["panic"] != "injected: Relabel panicked" || e[0].Data["part"] != 1 {
				t.Fatalf("logged %v; want one line, with the panic and the part", e)
			}
		})
	}
}
