package upstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/roundrobin"
	"github.com/remora-mesh/remora/pkg/node"
)

func instance(id string, port int) discovery.Instance {
	return discovery.Instance{ID: id, Address: "127.0.0.1", Port: port, Weight: 1, Healthy: true}
}

func ids(nodes []*node.Node) string {
	s := ""
	for _, n := range nodes {
		s += n.ID + ":" + n.HostPort[len("127.0.0.1:"):] + " "
	}
	return s
}

func TestApplySortsAnUnsortedSet(t *testing.T) {
	u := New(Config{Name: "users"})
	c := newController(u)
	set := []discovery.Instance{instance("c", 3), instance("a", 1), instance("b", 2), instance("a", 9)}
	c.apply(set)
	if got := ids(u.Snapshot().Nodes); got != "a:1 b:2 c:3 " {
		t.Fatalf("nodes %q; want a:1 b:2 c:3, the first of the duplicate ids kept", got)
	}
	if set[0].ID != "c" {
		t.Fatal("apply sorted the watcher's set in place")
	}
	a := u.Snapshot().Nodes[0]
	c.apply([]discovery.Instance{instance("b", 2), instance("a", 1)})
	if s := u.Snapshot(); ids(s.Nodes) != "a:1 b:2 " || s.Nodes[0] != a {
		t.Fatalf("nodes %q after an unsorted update", ids(s.Nodes))
	}
}

func TestPickerRebuiltOnlyWhenItsPoolChanges(t *testing.T) {
	u := New(Config{Name: "users"})
	c := newController(u)
	set := []discovery.Instance{instance("a", 1), instance("b", 2), instance("c", 3)}
	c.apply(set)
	s1 := u.Snapshot()

	// The same set again (as after a registry error) and a rebuild with
	// nothing changed keep the picker.
	c.apply(append([]discovery.Instance(nil), set...))
	s2 := u.Snapshot()
	if s2.Version != s1.Version+1 || s2.Picker != s1.Picker || s2.Nodes[1] != s1.Nodes[1] {
		t.Fatal("an unchanged set rebuilt the picker or the nodes")
	}
	c.rebuild()
	if u.Snapshot().Picker != s1.Picker {
		t.Fatal("a rebuild over the same pool rebuilt the picker")
	}

	// A drained node leaves the pool: a new picker, and the nodes that did
	// not change are the same values.
	set[1].Weight = 0
	c.apply(set)
	s3 := u.Snapshot()
	if s3.Picker == s1.Picker || s3.Available != 2 || s3.Nodes[0] != s1.Nodes[0] || s3.Nodes[1] == s1.Nodes[1] {
		t.Fatalf("after draining b: available %d, same picker %v", s3.Available, s3.Picker == s1.Picker)
	}
	for range 10 {
		if n := s3.Picker.Pick(balancer.Info{}); n.ID == "b" {
			t.Fatal("picked the drained node")
		}
	}

	// An ejection changes the pool; so does a new policy.
	s3.Nodes[0].Stats.Health.Eject(node.Consecutive5xx, time.Now().Add(time.Hour))
	c.rebuild()
	s4 := u.Snapshot()
	if s4.Picker == s3.Picker || s4.Available != 1 {
		t.Fatalf("after an ejection: available %d", s4.Available)
	}
	u.SetBalancer(roundrobin.Builder{})
	c.rebuild()
	if u.Snapshot().Picker == s4.Picker {
		t.Fatal("a new policy kept the old picker")
	}
}

func TestApplyAllocatesForTheChangeOnly(t *testing.T) {
	u := New(Config{Name: "users"})
	c := newController(u)
	base, changed := oneNodeChanges(1000)
	sets := [2][]discovery.Instance{changed["modify"], base}
	c.apply(base)
	i := 0
	allocs := testing.AllocsPerRun(20, func() {
		c.apply(sets[i%2])
		i++
	})
	// A new Node, the new snapshot and its slice of nodes, a picker, the
	// log line's fields: a few dozen at most, whatever the set's size.
	if allocs > 40 {
		t.Fatalf("a one-node change to 1,000 nodes allocates %v times", allocs)
	}
}

// updater counts its Builds and Updates.
type updater struct{ builds, updates *int }

func (updater) Name() string { return "counting" }

func (u updater) Build(nodes []*node.Node) balancer.Picker {
	*u.builds++
	return roundrobin.Builder{}.Build(nodes)
}

func (u updater) Update(_ balancer.Picker, nodes []*node.Node) balancer.Picker {
	*u.updates++
	return roundrobin.Builder{}.Build(nodes)
}

func TestPickerUpdatedByAnUpdater(t *testing.T) {
	var builds, updates int
	u := New(Config{Name: "users", Balancer: updater{&builds, &updates}})
	c := newController(u)
	set := []discovery.Instance{instance("a", 1), instance("b", 2)}
	c.apply(set)
	c.apply(append(set, instance("c", 3)))
	c.apply(set)
	if builds != 1 || updates != 2 {
		t.Fatalf("%d builds and %d updates; want the first built, then updated", builds, updates)
	}
	u.SetBalancer(updater{&builds, &updates})
	c.rebuild()
	if builds != 2 || updates != 2 {
		t.Fatalf("%d builds and %d updates; a new policy must build", builds, updates)
	}
}

// TestReloadCarriesNodesOver: an upstream that replaces another takes its
// nodes as they are, and the registry's next set reconciles with them.
func TestReloadCarriesNodesOver(t *testing.T) {
	prev := New(Config{Name: "users"})
	c := newController(prev)
	set := []discovery.Instance{instance("a", 1), instance("b", 2)}
	c.apply(set)
	old := prev.Snapshot()

	u := New(Config{Name: "users", Previous: prev})
	w := make(chanWatcher)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	defer func() { cancel(); <-done }()
	w <- append(set[:1:1], instance("c", 3))
	deadline := time.Now().Add(5 * time.Second)
	for u.Snapshot().Version <= old.Version {
		if time.Now().After(deadline) {
			t.Fatal("the registry's set was not applied")
		}
		time.Sleep(time.Millisecond)
	}
	if s := u.Snapshot(); ids(s.Nodes) != "a:1 c:3 " || s.Nodes[0] != old.Nodes[0] {
		t.Fatalf("nodes %q; a must be the node carried over", ids(s.Nodes))
	}
}

// scriptedPoller answers Poll from a script of answers, and records the
// snapshot the upstream has published at each call.
type scriptedPoller struct {
	u       *Upstream
	answers []update
	seen    []*Snapshot
}

func (p *scriptedPoller) Next(context.Context) ([]discovery.Instance, error) { panic("polled only") }
func (p *scriptedPoller) Stop() error                                        { return nil }
func (p *scriptedPoller) Ready() <-chan struct{}                             { return nil }
func (p *scriptedPoller) Done() <-chan struct{}                              { return nil }

func (p *scriptedPoller) Poll() ([]discovery.Instance, bool, error) {
	p.seen = append(p.seen, p.u.Snapshot())
	if len(p.answers) == 0 {
		return nil, false, nil
	}
	a := p.answers[0]
	p.answers = p.answers[1:]
	return a.set, true, a.err
}

// TestSetFollowedByAnErrorIsPublishedStale: a set that an error follows at
// once (a watcher that joins a shared subscription while the registry is
// down gets the last set, then the outage) is published stale in one
// snapshot; it is never fresh for an instant.
func TestSetFollowedByAnErrorIsPublishedStale(t *testing.T) {
	u := New(Config{Name: "users"})
	c := newController(u)
	down := errors.New("registry down")
	p := &scriptedPoller{u: u, answers: []update{{set: []discovery.Instance{instance("a", 1)}}, {err: down}}}
	c.poll(p)
	for i, s := range p.seen {
		if len(s.Nodes) > 0 && !s.Stale() {
			t.Fatalf("at the poll %d the set was published fresh before its error", i+1)
		}
	}
	if s := u.Snapshot(); len(s.Nodes) != 1 || !errors.Is(s.Err, down) || !s.Synced {
		t.Fatalf("final snapshot: %d nodes, err %v, synced %v", len(s.Nodes), s.Err, s.Synced)
	}

	// A set followed by another set is applied as it is, each in turn.
	p = &scriptedPoller{u: u, answers: []update{{set: []discovery.Instance{instance("a", 1), instance("b", 2)}}, {set: []discovery.Instance{instance("b", 2)}}}}
	c.poll(p)
	if s := u.Snapshot(); ids(s.Nodes) != "b:2 " || s.Stale() {
		t.Fatalf("after two sets: %q, stale %v", ids(s.Nodes), s.Stale())
	}
}
