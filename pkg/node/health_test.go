package node

import (
	"strings"
	"testing"
	"time"
)

// The instants a node's stats keep (the end of an ejection, when it
// joined, its last attempt) carry a monotonic clock reading, so that
// comparing them with time.Now's is immune to steps of the wall clock:
// kept as Unix nanoseconds, a step back of an hour kept an ejected node
// out an hour longer.
func TestStatsInstantsAreMonotonic(t *testing.T) {
	now := time.Now()
	s := NewStats(now)
	s.Health.Eject(Consecutive5xx, now.Add(30*time.Second))
	s.Begin(now)
	for name, got := range map[string]time.Time{"EjectedUntil": s.Health.EjectedUntil(), "Added": s.Added(), "LastUsed": s.LastUsed()} {
		if !strings.Contains(got.String(), " m=") {
			t.Errorf("%s() = %v: no monotonic clock reading", name, got)
		}
	}
	if d := s.Health.EjectedUntil().Sub(now); d != 30*time.Second {
		t.Errorf("EjectedUntil is %v after the ejection; want 30s", d)
	}
}
