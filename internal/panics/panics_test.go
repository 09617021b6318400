package panics

import (
	"strconv"
	"strings"
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
	if p == nil || p.Value != "boom" || p.Error() != "panic: boom" || !strings.Contains(string(p.Stack), "panics_test.go") {
		t.Fatalf("Catch of a panic: %#v", p)
	}
	var nilMap map[string]int
	p = Catch(func() { nilMap["x"]++ })
	if _, ok := p.Value.(error); !ok {
		t.Fatalf("Catch of a runtime error: %#v", p)
	}
}

// panics.Log logs the first panic at once, then at most one a minute, with
// the count of those it did not log.
func TestLogOnceAMinute(t *testing.T) {
	now := time.Unix(1e9, 0)
	var l Log
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
		if got := l.Log(logrus.NewEntry(logger), &Error{Value: i, Stack: []byte("stack")}, "msg"); got != s.logged {
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
