package balancertest

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
)

// Consistent checks a consistent-hash builder whose key is the X-Key header
// (as set by Requests) over 10,000 keys:
//
//   - adding an 11th node to 10 remaps at most 1/11 + 3% of keys, and
//     removing one of 10 at most 1/10 + 3%; with strict, every remapped key
//     moves to the new node (or away from the removed one) only;
//   - the same key maps to the same node across rebuilds from fresh node
//     values (as after a registry update), and across equal builders.
func Consistent(t *testing.T, newBuilder func() balancer.Builder, strict bool) {
	t.Helper()
	infos := Requests(10000)
	ten := Uniform(10)
	eleven := Uniform(11)
	before := Mapping(newBuilder().Build(ten), infos)
	after := Mapping(newBuilder().Build(eleven), infos)
	moved := Moved(before, after)
	if limit := 10000/11 + 300; moved > limit {
		t.Errorf("adding 1 node to 10 remapped %d of 10000 keys, want <= %d", moved, limit)
	}
	t.Logf("adding 1 node to 10 remapped %d of 10000 keys (ideal %d)", moved, 10000/11)
	for i := range before {
		if strict && before[i] != after[i] && after[i] != eleven[10].ID {
			t.Fatalf("key %d moved from %s to %s, not to the new node", i, before[i], after[i])
		}
	}

	nine := append(append([]*node.Node{}, ten[:4]...), ten[5:]...)
	removed := Mapping(newBuilder().Build(nine), infos)
	moved = Moved(before, removed)
	if limit := 10000/10 + 300; moved > limit {
		t.Errorf("removing 1 node of 10 remapped %d of 10000 keys, want <= %d", moved, limit)
	}
	t.Logf("removing 1 node of 10 remapped %d of 10000 keys (ideal %d)", moved, 10000/10)
	for i := range before {
		if strict && before[i] != removed[i] && before[i] != ten[4].ID {
			t.Fatalf("key %d moved from %s to %s, though %s stayed", i, before[i], removed[i], before[i])
		}
	}

	again := Mapping(newBuilder().Build(Uniform(10)), infos)
	if m := Moved(before, again); m != 0 {
		t.Errorf("rebuilding the same node set remapped %d keys", m)
	}
}
