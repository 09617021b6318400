package ringhash_test

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/ringhash"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, ringhash.Name), []balancertest.ParseCase{
		{Name: "header", Options: "hash_on: {header: x-user-id}"},
		{Name: "sizes", Options: "{hash_on: {cookie: s}, points_per_weight: 100, min_ring_size: 64, max_ring_size: 4096}"},
		{Name: "min ring size", Options: "{hash_on: {path: true}, min_ring_size: 4096}"},
		{Name: "points per weight too large", Options: "{hash_on: {path: true}, points_per_weight: 100000}", WantErr: "points_per_weight"},
		{Name: "no options", Options: "", WantErr: "hash_on: required"},
		{Name: "empty hash_on", Options: "hash_on: {}", WantErr: "hash_on: required"},
		{Name: "two keys", Options: "hash_on: {header: a, cookie: b}", WantErr: "exactly one"},
		{Name: "unknown key kind", Options: "hash_on: {ip: true}", WantErr: "line 1, column 11: hash_on.ip: unknown field; known fields: header, cookie, source_ip, path, query_parameter"},
		{Name: "every error at once", Options: "{points_per_weight: 100000, min_ring_size: -1}", WantErr: "hash_on: required; say what to hash, e.g. {policy: ring_hash, hash_on: {header: x-user-id}} (or cookie, source_ip, path, query_parameter)\n" +
			"points_per_weight: 100000 is out of range; want 1 to 10000 (default 160)\nmin_ring_size: -1 is out of range"},
		{Name: "min above max", Options: "{hash_on: {path: true}, min_ring_size: 10, max_ring_size: 5}", WantErr: "min_ring_size: 10 is above"},
		{Name: "max too large", Options: "{hash_on: {path: true}, max_ring_size: 100000000}", WantErr: "max_ring_size"},
		{Name: "negative", Options: "{hash_on: {path: true}, min_ring_size: -1}", WantErr: "min_ring_size"},
		{Name: "unknown option", Options: "{hash_on: {path: true}, table_size: 7}", WantErr: "table_size"},
	})
}

func TestConsistent(t *testing.T) {
	balancertest.Consistent(t, func() balancer.Builder { return ringhash.Builder{Key: balancertest.Key(t)} }, true)
}

// TestWeights: with a large ring, keys spread over nodes by weight.
func TestWeights(t *testing.T) {
	nodes := balancertest.Nodes(1, 2, 3, 4)
	p := ringhash.Builder{Key: balancertest.Key(t), PointsPerWeight: 10000}.Build(nodes)
	balancertest.AssertShares(t, balancertest.CountEach(t, p, nodes, balancertest.Requests(10000)), balancertest.Weights(nodes))
}

// TestBounds: the ring is scaled by powers of two into its bounds.
func TestBounds(t *testing.T) {
	k := balancertest.Key(t)
	infos := balancertest.Requests(2000)
	nodes := balancertest.Uniform(10)
	base := balancertest.Mapping(ringhash.Builder{Key: k}.Build(nodes), infos)
	// 1600 points: a min of 1600 changes nothing, 1601 doubles every node.
	if m := balancertest.Moved(base, balancertest.Mapping(ringhash.Builder{Key: k, MinRingSize: 1600}.Build(nodes), infos)); m != 0 {
		t.Fatalf("a bound that fits moved %d keys", m)
	}
	if m := balancertest.Moved(base, balancertest.Mapping(ringhash.Builder{Key: k, MinRingSize: 1601}.Build(nodes), infos)); m == 0 {
		t.Fatal("doubling the ring moved no key")
	}
	// A tiny max still gives every node a point.
	counts := make(map[string]int)
	for _, id := range balancertest.Mapping(ringhash.Builder{Key: k, MaxRingSize: 1}.Build(nodes), infos) {
		counts[id]++
	}
	if len(counts) < 5 {
		t.Fatalf("with one point per node, keys reached only %d nodes", len(counts))
	}
}

// TestWeightChange: changing one node's weight moves keys only to or from
// that node.
func TestWeightChange(t *testing.T) {
	k := balancertest.Key(t)
	infos := balancertest.Requests(10000)
	before := balancertest.Mapping(ringhash.Builder{Key: k}.Build(balancertest.Nodes(1, 1, 1, 1, 1)), infos)
	after := balancertest.Mapping(ringhash.Builder{Key: k}.Build(balancertest.Nodes(1, 1, 3, 1, 1)), infos)
	moved := 0
	for i := range before {
		if before[i] != after[i] {
			moved++
			if after[i] != "node-00002" {
				t.Fatalf("key %d moved from %s to %s", i, before[i], after[i])
			}
		}
	}
	if moved < 2000 || moved > 3400 { // ideal: 3/7 - 1/5 = 22.9%
		t.Fatalf("tripling one of 5 weights moved %d of 10000 keys", moved)
	}
}

// TestHashing: requests without the key spread randomly by weight, a key
// sticks to its node, and picks do not allocate.
func TestHashing(t *testing.T) {
	balancertest.Hashing(t, func(k hashkey.Key, r func() uint64) balancer.Builder { return ringhash.Builder{Key: k, Rand: r} })
}

func TestRace(t *testing.T) {
	balancertest.Race(t, ringhash.Builder{Key: balancertest.Key(t), PointsPerWeight: 16}, balancertest.Requests(50))
}

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, ringhash.Name), "hash_on: {header: x}", "{hash_on: {query_parameter: q}, min_ring_size: 3, max_ring_size: 9}")
}

func BenchmarkPick(b *testing.B) {
	balancertest.Bench(b, ringhash.Builder{Key: balancertest.Key(b)}, balancertest.Requests(1024))
}
