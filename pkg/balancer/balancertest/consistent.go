package balancertest

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/node"
)

// Key returns the hash key of the X-Key header, which Requests sets.
func Key(t testing.TB) hashkey.Key {
	t.Helper()
	k, err := hashkey.Spec{Header: "x-key"}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Hashing checks what every consistent-hash builder does besides
// Consistent, given newBuilder(key, rand), its builder hashing on key and
// drawing from rand:
//
//   - requests without the key spread randomly by weight;
//   - the same key always reaches the same node;
//   - Pick does not allocate, with or without the key, over 1, 3 and 1000
//     nodes.
func Hashing(t *testing.T, newBuilder func(key hashkey.Key, rand func() uint64) balancer.Builder) {
	k := Key(t)
	t.Run("missing key", func(t *testing.T) {
		nodes := Nodes(1, 2, 3, 4)
		p := newBuilder(k, Rand(4)).Build(nodes)
		AssertShares(t, Count(t, p, nodes, balancer.Info{}, 10000), Weights(nodes))
	})
	t.Run("same key same node", func(t *testing.T) {
		p := newBuilder(k, nil).Build(Uniform(5))
		info := Requests(1)[0]
		first := p.Pick(info)
		for range 100 {
			if p.Pick(info) != first {
				t.Fatal("the same key reached another node")
			}
		}
	})
	t.Run("no allocs", func(t *testing.T) {
		for _, n := range []int{1, 3, 1000} {
			AssertNoAllocs(t, newBuilder(k, nil).Build(Uniform(n)), Requests(3)...)
			AssertNoAllocs(t, newBuilder(k, nil).Build(Uniform(n)), balancer.Info{})
		}
	})
}

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
