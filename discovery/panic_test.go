package discovery

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

func TestCatch(t *testing.T) {
	if p := Catch(func() {}); p != nil {
		t.Fatalf("Catch of a function that returns: %v", p)
	}
	p := Catch(func() { panic("boom") })
	if p == nil || p.Value != "boom" || p.Error() != "panic: boom" || !strings.Contains(string(p.Stack), "panic_test.go") {
		t.Fatalf("Catch of a panic: %#v", p)
	}
	var nilMap map[string]int
	p = Catch(func() { nilMap["x"]++ })
	if _, ok := p.Value.(error); !ok {
		t.Fatalf("Catch of a runtime error: %#v", p)
	}
}

// PanicLog logs the first panic at once, then at most one a minute, with
// the count of those it did not log.
func TestPanicLogOnceAMinute(t *testing.T) {
	now := time.Unix(1e9, 0)
	var l PanicLog
	l.now = func() time.Time { return now }
	logger, hook := logtest.NewNullLogger()
	steps := []struct {
		after   time.Duration
		logged  bool
		skipped any // the line's field; nil for none
	}{
		{0, true, nil},
		{time.Second, false, nil},
		{30 * time.Second, false, nil},
		{29 * time.Second, true, 2},
		{time.Minute - time.Nanosecond, false, nil},
		{time.Hour, true, 1},
		{time.Minute, true, nil},
	}
	for i, s := range steps {
		now = now.Add(s.after)
		hook.Reset()
		if got := l.Log(logrus.NewEntry(logger), &PanicError{Value: i, Stack: []byte("stack")}, "msg"); got != s.logged {
			t.Fatalf("step %d: logged %v, want %v", i, got, s.logged)
		}
		if !s.logged {
			if len(hook.AllEntries()) != 0 {
				t.Fatalf("step %d: a line was written", i)
			}
			continue
		}
		e := hook.LastEntry()
		if e == nil || e.Level != logrus.ErrorLevel || e.Message != "msg" || e.Data["panic"] != strconv.Itoa(i) ||
			e.Data["stack"] != "stack" || e.Data["skipped"] != s.skipped {
			t.Fatalf("step %d: logged %+v; want the panic, its stack and skipped=%v", i, e, s.skipped)
		}
	}
}

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
				var p *PanicError
				if !errors.As(err, &p) || p.Value != "boom" {
					t.Errorf("fail got %v; want the *PanicError", err)
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
			var pe *PanicError
			if !errors.As(err, &pe) || set != nil {
				t.Fatalf("first Next = %v, %v; want the *PanicError, no set", set, err)
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
