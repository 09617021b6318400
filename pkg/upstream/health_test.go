package upstream_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

func intp(v int) *int { return &v }

func healthCfg(t *testing.T, maxPct, panic int) *health.Config {
	t.Helper()
	c := &health.Config{PanicThreshold: intp(panic)}
	c.Passive.MaxEjectionPercent = intp(maxPct)
	c.Passive.BaseEjectionTime = 30 * time.Second
	zero := time.Duration(0)
	c.Passive.EjectionJitter = &zero
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func fail(u *upstream.Upstream, n *node.Node, times int) {
	for i := 0; i < times; i++ {
		u.Observe(n, health.Outcome{Status: 503})
	}
}

func picks(s *upstream.Snapshot, k int) map[string]int {
	out := map[string]int{}
	for i := 0; i < k; i++ {
		out[s.Picker.Pick(balancer.Info{}).ID]++
	}
	return out
}

func TestEjectionSurvivesRegistryUpdateAndEnds(t *testing.T) {
	clk := balancertest.NewClock(time.Unix(1000, 0))
	u, _, set := run(t, upstream.Config{Name: "users", Health: healthCfg(t, 50, 0), Now: clk.Now})
	s := set(inst("a", 1), inst("b", 2), inst("c", 3))
	fail(u, byID(s, "a"), 5)
	s = waitSnapshot(t, u, "a ejected", func(s *upstream.Snapshot) bool { return s.Available == 2 })
	if p := picks(s, 100); p["a"] != 0 {
		t.Fatalf("an ejected node was picked: %v", p)
	}
	// An unrelated registry update keeps the ejection.
	b := inst("b", 2)
	b.Metadata = map[string]string{"v": "2"}
	s = set(inst("a", 1), b, inst("c", 3))
	if !byID(s, "a").Stats.Health.Ejected() || s.Available != 2 {
		t.Fatal("the ejection was lost in a registry update")
	}
	// Time passes (injected); the controller returns a at its end.
	clk.Advance(30*time.Second - time.Millisecond)
	u.Rebuild()
	time.Sleep(20 * time.Millisecond)
	if u.Snapshot().Available != 2 {
		t.Fatal("ejection ended early")
	}
	clk.Advance(time.Millisecond)
	u.Rebuild()
	s = waitSnapshot(t, u, "a back", func(s *upstream.Snapshot) bool { return s.Available == 3 })
	if p := picks(s, 30); p["a"] != 10 {
		t.Fatalf("a returned but gets %v", p)
	}
	if byID(s, "a").Stats.Health.Ejections() != 1 {
		t.Fatal("the ejection multiplier was not kept")
	}
}

func TestSingleNodeNeverEjected(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "users", Health: healthCfg(t, 50, 50)})
	s := set(inst("a", 1))
	fail(u, byID(s, "a"), 20)
	u.Rebuild()
	time.Sleep(20 * time.Millisecond)
	if s := u.Snapshot(); s.Available != 1 || byID(s, "a").Stats.Health.Ejected() {
		t.Fatal("a single-node upstream was emptied by ejection")
	}
}

func TestPanicThreshold(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "users", Health: healthCfg(t, 100, 50)})
	s := set(inst("a", 1), inst("b", 2), inst("c", 3), inst("d", 4))
	fail(u, byID(s, "a"), 5)
	s = waitSnapshot(t, u, "a ejected", func(s *upstream.Snapshot) bool { return s.Available == 3 })
	if s.Panic {
		t.Fatal("panic with 3 of 4 healthy")
	}
	fail(u, byID(s, "b"), 5)
	s = waitSnapshot(t, u, "b ejected", func(s *upstream.Snapshot) bool { return s.Available == 2 })
	if s.Panic {
		t.Fatal("panic with 2 of 4 healthy (threshold 50%: not below)")
	}
	fail(u, byID(s, "c"), 5)
	s = waitSnapshot(t, u, "panic", func(s *upstream.Snapshot) bool { return s.Panic })
	if s.Available != 4 {
		t.Fatalf("in panic the picker has %d nodes; want all 4", s.Available)
	}
	if p := picks(s, 40); p["a"] != 10 || p["d"] != 10 {
		t.Fatalf("panic picks %v; want all four evenly", p)
	}
}

// 16 goroutines pick, record outcomes and eject while the registry churns;
// run with -race.
func TestConcurrentEjectionPicksAndUpdates(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "users", Health: healthCfg(t, 50, 0)})
	set(inst("a", 1), inst("b", 2), inst("c", 3), inst("d", 4))
	stop := make(chan struct{})
	done := make(chan struct{})
	for g := 0; g < 16; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n := u.Snapshot().Picker.Pick(balancer.Info{})
				if n == nil {
					continue
				}
				n.Stats.Begin(time.Now())
				status := 200
				if n.ID == "a" || i%7 == 0 {
					status = 503
				}
				u.Observe(n, health.Outcome{Status: status})
				n.Stats.End(time.Microsecond, status != 200)
				runtime.Gosched() // leave the controller a core
			}
		}()
	}
	for i := 0; i < 40; i++ {
		extra := inst("x", 100+i%3)
		set(inst("a", 1), inst("b", 2), inst("c", 3), inst("d", 4), extra)
	}
	close(stop)
	for g := 0; g < 16; g++ {
		<-done
	}
	if !byID(u.Snapshot(), "a").Stats.Health.Ejected() {
		t.Fatal("the always-failing node was not ejected")
	}
}
