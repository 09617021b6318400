package upstream_test

import (
	"context"
	"math"
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

func zoned(id string, port int, zone string) discovery.Instance {
	in := inst(id, port)
	in.Metadata = map[string]string{"zone": zone}
	return in
}

// firstPicks counts, over n calls, the zones of the nodes first picked.
func firstPicks(t *testing.T, u *upstream.Upstream, n int) map[string]int {
	t.Helper()
	zones := map[string]int{}
	for range n {
		var c upstream.Call
		if err := c.Begin(context.Background(), u, balancer.Info{}); err != nil {
			t.Fatal(err)
		}
		_ = c.Attempts(context.Background(), true, func(n *node.Node, _ int) upstream.Attempt {
			zones[n.Metadata["zone"]]++
			return upstream.Attempt{Status: 200}
		}, func() {})
		c.End(false)
	}
	return zones
}

// Two zones of two nodes, Remora in zone a: everything stays in a while
// its nodes are healthy; with half of them ejected (below the 70%
// threshold) a takes half; with none, b takes all; smaller upstreams than
// min_cluster_size ignore zones.
func TestLocality(t *testing.T) {
	one := 1
	loc := &upstream.Locality{Zone: "a", MinClusterSize: &one}
	if err := loc.Validate(); err != nil {
		t.Fatal(err)
	}
	u, _, set := run(t, upstream.Config{Name: "svc", Locality: loc})
	s := set(zoned("a1", 1, "a"), zoned("a2", 2, "a"), zoned("b1", 3, "b"), zoned("b2", 4, "b"))
	if z := firstPicks(t, u, 1000); z["a"] != 1000 {
		t.Fatalf("all healthy: %v; want every first pick in zone a", z)
	}
	if s.StableZone == nil || s.StableZone.Share != 1 || s.StableZone.LocalAvailable != 2 {
		t.Fatalf("zone split %+v", s.StableZone)
	}

	eject := func(id string) {
		byID(s, id).Stats.Health.Eject(node.ConsecutiveGatewayFailure, s.UpdatedAt.Add(1<<40))
	}
	eject("a1")
	u.Rebuild()
	s = waitSnapshot(t, u, "a1 out", func(s *upstream.Snapshot) bool { return s.StableZone != nil && s.StableZone.LocalAvailable == 1 })
	z := firstPicks(t, u, 4000)
	if got := float64(z["a"]) / 4000; math.Abs(got-0.5) > 4*math.Sqrt(0.25/4000) {
		t.Fatalf("half of zone a healthy: %v; want about half in a", z)
	}
	eject("a2")
	u.Rebuild()
	waitSnapshot(t, u, "zone a out", func(s *upstream.Snapshot) bool { return s.StableZone == nil && s.Available == 2 })
	if z := firstPicks(t, u, 100); z["b"] != 100 {
		t.Fatalf("zone a ejected: %v; want every pick in b", z)
	}
	m := u.Metrics()
	if m.Zone[upstream.ZoneLocal].Load() == 0 || m.Zone[upstream.ZoneOther].Load() == 0 {
		t.Fatalf("zone counters %d local, %d other", m.Zone[upstream.ZoneLocal].Load(), m.Zone[upstream.ZoneOther].Load())
	}

	four := 5
	big := &upstream.Locality{Zone: "a", MinClusterSize: &four}
	if err := big.Validate(); err != nil {
		t.Fatal(err)
	}
	u2, _, set2 := run(t, upstream.Config{Name: "small", Locality: big})
	if s := set2(zoned("a1", 1, "a"), zoned("a2", 2, "a"), zoned("b1", 3, "b"), zoned("b2", 4, "b")); s.StableZone != nil {
		t.Fatalf("4 nodes under min_cluster_size 5 still split by zone")
	}
	if z := firstPicks(t, u2, 400); z["a"] == 400 {
		t.Fatalf("zones ignored, yet %v", z)
	}
}

// A mirrored copy sent to the canary pool (mirror canary: true) keeps to
// the local zone as any call does: its first pick is a local canary node,
// and it counts once in the zone counters.
func TestCanaryCopyKeepsLocality(t *testing.T) {
	one := 1
	loc := &upstream.Locality{Zone: "a", MinClusterSize: &one}
	if err := loc.Validate(); err != nil {
		t.Fatal(err)
	}
	var cc canary.Config
	rule, err := cc.Validate()
	if err != nil {
		t.Fatal(err)
	}
	u, _, set := run(t, upstream.Config{Name: "svc", Locality: loc, Canary: rule})
	canaryIn := func(id string, port int, zone string) discovery.Instance {
		in := zoned(id, port, zone)
		in.Metadata["canary"] = "true"
		return in
	}
	set(zoned("a1", 1, "a"), zoned("b1", 2, "b"), canaryIn("ca", 3, "a"), canaryIn("cb", 4, "b"))
	m := u.Metrics()
	before := m.Zone[upstream.ZoneLocal].Load() + m.Zone[upstream.ZoneOther].Load()
	picks := map[string]int{}
	const copies = 200
	for range copies {
		var c upstream.Call
		if err := c.BeginCopy(context.Background(), u, balancer.Info{}, true); err != nil {
			t.Fatal(err)
		}
		_ = c.Attempts(context.Background(), false, func(n *node.Node, _ int) upstream.Attempt {
			picks[n.ID]++
			return upstream.Attempt{Status: 200}
		}, func() {})
		c.End(false)
	}
	if picks["ca"] != copies {
		t.Fatalf("first picks of canary copies %v; want every one on ca, the canary node in zone a", picks)
	}
	if got := m.Zone[upstream.ZoneLocal].Load() + m.Zone[upstream.ZoneOther].Load() - before; got != copies {
		t.Fatalf("zone counters rose by %d for %d copies", got, copies)
	}
}

// TestLocalityIgnoredInPanic: a pool in panic mode balances over all its
// available nodes, so zones do not apply (as in Envoy): when the whole
// local zone is ejected and that puts the pool in panic, the first picks
// spread over every node instead of all going to the dead zone while the
// other zone's healthy nodes idle.
func TestLocalityIgnoredInPanic(t *testing.T) {
	one := 1
	loc := &upstream.Locality{Zone: "a", MinClusterSize: &one}
	if err := loc.Validate(); err != nil {
		t.Fatal(err)
	}
	// Zone a has 3 of 5 nodes: with a down, 2 of 5 healthy is below the
	// default panic threshold of 50%.
	u, _, set := run(t, upstream.Config{Name: "svc", Locality: loc, Health: healthCfg(t, 100, 50)})
	s := set(zoned("a1", 1, "a"), zoned("a2", 2, "a"), zoned("a3", 3, "a"), zoned("b1", 4, "b"), zoned("b2", 5, "b"))
	for _, id := range []string{"a1", "a2", "a3"} {
		byID(s, id).Stats.Health.Eject(node.ConsecutiveGatewayFailure, s.UpdatedAt.Add(1<<40))
	}
	u.Rebuild()
	s = waitSnapshot(t, u, "panic", func(s *upstream.Snapshot) bool { return s.Panic })
	if s.StableZone != nil {
		t.Errorf("zone split %+v in panic mode; want none", s.StableZone)
	}
	const n = 5000
	z := firstPicks(t, u, n)
	if got := float64(z["b"]) / n; math.Abs(got-0.4) > 0.05 {
		t.Fatalf("zone a ejected, the pool in panic: first picks %v; want them over all 5 nodes (2/5 in zone b)", z)
	}
}
