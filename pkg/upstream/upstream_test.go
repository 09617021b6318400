package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

func inst(id string, port int) discovery.Instance {
	return discovery.Instance{ID: id, Address: "127.0.0.1", Port: port, Weight: 1, Healthy: true}
}

// run starts an upstream on a manual registry and returns a function that
// publishes a set and waits for the snapshot built from it.
func run(t *testing.T, cfg upstream.Config) (*upstream.Upstream, *discoverytest.Registry, func(...discovery.Instance) *upstream.Snapshot) {
	t.Helper()
	reg := discoverytest.NewRegistry()
	u := upstream.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	w, _ := reg.Watch(ctx, u.Service())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitVersion(t, u, 1)
	set := func(in ...discovery.Instance) *upstream.Snapshot {
		t.Helper()
		v := u.Snapshot().Version
		reg.Set(u.Service(), in...)
		return waitVersion(t, u, v+1)
	}
	return u, reg, set
}

// waitSnapshot waits for a snapshot that satisfies cond and returns it.
func waitSnapshot(t *testing.T, u *upstream.Upstream, what string, cond func(*upstream.Snapshot) bool) *upstream.Snapshot {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := u.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitVersion(t *testing.T, u *upstream.Upstream, v uint64) *upstream.Snapshot {
	t.Helper()
	return waitSnapshot(t, u, fmt.Sprintf("snapshot version %d", v), func(s *upstream.Snapshot) bool { return s.Version >= v })
}

func byID(s *upstream.Snapshot, id string) *node.Node {
	for _, n := range s.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

func TestNodeStatsSurviveUnrelatedUpdate(t *testing.T) {
	_, _, set := run(t, upstream.Config{Name: "users"})
	s1 := set(inst("a", 1), inst("b", 2))
	a1 := byID(s1, "a")
	a1.Stats.Begin(time.Now())
	a1.Stats.End(time.Millisecond, true)
	a1.Stats.Begin(time.Now()) // one request still in flight

	// b changes its metadata, c joins: a is untouched and keeps its state.
	b := inst("b", 2)
	b.Metadata = map[string]string{"version": "v2"}
	s2 := set(inst("a", 1), b, inst("c", 3))
	a2 := byID(s2, "a")
	if a2 != a1 {
		t.Fatal("a node whose instance did not change must be carried over as it is")
	}
	if b2 := byID(s2, "b"); b2 == byID(s1, "b") || b2.Metadata["version"] != "v2" || b2.Stats != byID(s1, "b").Stats {
		t.Fatal("b's metadata change must give a new node with b's stats")
	}
	if a2.Stats != a1.Stats || a2.Stats.Requests.Load() != 2 || a2.Stats.Failures.Load() != 1 || a2.Stats.InFlight.Load() != 1 {
		t.Fatalf("a's stats were reset by an unrelated update: requests=%d failures=%d inflight=%d",
			a2.Stats.Requests.Load(), a2.Stats.Failures.Load(), a2.Stats.InFlight.Load())
	}
	// A change to a's own metadata or weight keeps its stats too.
	a := inst("a", 1)
	a.Weight = 7
	s3 := set(a, b, inst("c", 3))
	if a3 := byID(s3, "a"); a3 == a1 || a3.Stats != a1.Stats || a3.Weight != 7 || a3.HostPort != a1.HostPort {
		t.Fatal("a weight change reset a's stats")
	}
	// A move keeps the stats and has the new address.
	a.Port = 8
	if a4 := byID(set(a, b, inst("c", 3)), "a"); a4.Stats != a1.Stats || a4.HostPort != "127.0.0.1:8" {
		t.Fatalf("a moved to %s", a4.HostPort)
	}
	// A node that leaves and comes back starts fresh.
	set(b, inst("c", 3))
	s5 := set(inst("a", 1), b, inst("c", 3))
	if byID(s5, "a").Stats == a1.Stats {
		t.Fatal("a removed node's stats were resurrected")
	}
}

func TestPickerSkipsDrainedAndUnhealthyNodes(t *testing.T) {
	_, _, set := run(t, upstream.Config{Name: "users"})
	drained, sick := inst("drained", 2), inst("sick", 3)
	drained.Weight, sick.Healthy = 0, false
	s := set(inst("ok", 1), drained, sick)
	if s.Available != 1 || len(s.Nodes) != 3 {
		t.Fatalf("available=%d nodes=%d; want 1 of 3", s.Available, len(s.Nodes))
	}
	for i := 0; i < 100; i++ {
		if n := s.Picker.Pick(balancer.Info{}); n == nil || n.ID != "ok" {
			t.Fatalf("picked %v; only node ok may be picked", n)
		}
	}
	s = set(drained, sick)
	if n := s.Picker.Pick(balancer.Info{}); n != nil || s.Available != 0 {
		t.Fatalf("picked %v from an upstream with no available node", n)
	}
}

func TestRegistryErrorKeepsNodes(t *testing.T) {
	u, reg, set := run(t, upstream.Config{Name: "users"})
	set(inst("a", 1), inst("b", 2))
	reg.Fail("users", errors.New("registry unreachable"))
	s := waitSnapshot(t, u, "the snapshot marked stale", (*upstream.Snapshot).Stale)
	if len(s.Nodes) != 2 || s.Available != 2 || s.Err.Error() != "registry unreachable" {
		t.Fatalf("after a registry error: nodes=%d available=%d err=%v", len(s.Nodes), s.Available, s.Err)
	}
	if s = set(inst("a", 1)); s.Stale() {
		t.Fatal("a new set must clear staleness")
	}
}

func TestInvalidAndDuplicateInstancesAreDropped(t *testing.T) {
	_, _, set := run(t, upstream.Config{Name: "users"})
	s := set(inst("a", 1), inst("a", 2), inst("b", 0), discovery.Instance{ID: "c", Port: 3, Weight: 1, Healthy: true})
	if len(s.Nodes) != 1 || s.Nodes[0].ID != "a" {
		t.Fatalf("nodes: %v", s.Nodes)
	}
}

func TestReadiness(t *testing.T) {
	u := upstream.New(upstream.Config{Name: "users", InitialSyncTimeout: time.Millisecond})
	if u.Ready() {
		t.Fatal("ready before the first set")
	}
	u2, _, _ := run(t, upstream.Config{Name: "orders"})
	if !u2.Ready() {
		t.Fatal("not ready after the first set")
	}
}

func TestStopsWhenWatcherStops(t *testing.T) {
	reg := discoverytest.NewRegistry()
	u := upstream.New(upstream.Config{Name: "users"})
	w, _ := reg.Watch(context.Background(), "users")
	done := make(chan struct{})
	go func() { u.Run(context.Background(), w); close(done) }()
	waitVersion(t, u, 1)
	reg.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its watcher stopped")
	}
}

func TestTableLookup(t *testing.T) {
	a, b := upstream.New(upstream.Config{Name: "users"}), upstream.New(upstream.Config{Name: "orders"})
	tab := upstream.NewTable(a, b)
	if tab.Lookup("users") != a || tab.Lookup("USERS") != a || tab.Lookup("nope") != nil {
		t.Fatal("lookup")
	}
	if got := tab.Names(); len(got) != 2 || got[0] != "orders" {
		t.Fatalf("names %v", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { tab.Lookup("users") }); allocs != 0 {
		t.Fatalf("Lookup allocates %v times", allocs)
	}
}

// Picks race with snapshot swaps; run with -race.
func TestConcurrentPicksDuringUpdates(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "users"})
	set(inst("a", 1))
	stop := make(chan struct{})
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n := u.Snapshot().Picker.Pick(balancer.Info{}); n != nil {
					n.Stats.Begin(time.Now())
					n.Stats.End(time.Microsecond, false)
				}
				runtime.Gosched()
			}
		}()
	}
	for i := 0; i < 50; i++ {
		set(inst("a", 1), inst("x", 1000+i))
	}
	close(stop)
	for g := 0; g < 4; g++ {
		<-done
	}
}
