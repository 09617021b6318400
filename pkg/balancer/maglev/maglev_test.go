package maglev_test

import (
	"slices"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/balancer/maglev"
	"github.com/remora-mesh/remora/pkg/node"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, maglev.Name), []balancertest.ParseCase{
		{Name: "header", Options: "hash_on: {header: x-user-id}"},
		{Name: "table size", Options: "{hash_on: {source_ip: true}, table_size: 131071}"},
		{Name: "small table", Options: "{hash_on: {source_ip: true}, table_size: 3}"},
		{Name: "no options", Options: "", WantErr: "hash_on: required"},
		{Name: "bad header", Options: "hash_on: {header: 'a b'}", WantErr: "not a valid header name"},
		{Name: "not prime", Options: "{hash_on: {path: true}, table_size: 65536}", WantErr: "table_size: 65536 must be a prime"},
		{Name: "too large", Options: "{hash_on: {path: true}, table_size: 10000019}", WantErr: "table_size"},
		{Name: "unknown option", Options: "{hash_on: {path: true}, min_ring_size: 7}", WantErr: "min_ring_size"},
	})
}

func TestConsistent(t *testing.T) {
	balancertest.Consistent(t, func() balancer.Builder { return maglev.Builder{Key: balancertest.Key(t)} }, false)
}

// TestWeights: keys spread over nodes by weight.
func TestWeights(t *testing.T) {
	nodes := balancertest.Nodes(1, 2, 3, 4)
	p := maglev.Builder{Key: balancertest.Key(t)}.Build(nodes)
	balancertest.AssertShares(t, balancertest.CountEach(t, p, nodes, balancertest.Requests(10000)), balancertest.Weights(nodes))
}

// TestHashing: requests without the key spread randomly by weight, a key
// sticks to its node, and picks do not allocate.
func TestHashing(t *testing.T) {
	balancertest.Hashing(t, func(k hashkey.Key, r func() uint64) balancer.Builder { return maglev.Builder{Key: k, Rand: r} })
}

func TestTableShares(t *testing.T) {
	nodes := balancertest.Nodes(1, 2, 3, 4, 10)
	ws := []uint32{1, 2, 3, 4, 10}
	for _, m := range []int{65537, 251} {
		table := maglev.Table(nodes, ws, m)
		counts := make([]int, len(nodes))
		for _, i := range table {
			counts[i]++
		}
		for i, c := range counts {
			want := float64(m) * float64(ws[i]) / 20
			if d := float64(c) - want; d > 1+want*0.01 || d < -1-want*0.01 {
				t.Errorf("table %d: node %d has %d entries, want %.0f", m, i, c, want)
			}
		}
	}
}

// referenceTable is Table as the paper writes it: a node's k-th choice is
// (offset + k·skip) mod M.
func referenceTable(nodes []*node.Node, ws []uint32, m int) []int32 {
	M := uint64(m)
	type fill struct{ offset, skip, next, weight, target uint64 }
	fills := make([]fill, len(nodes))
	var maxW uint64
	for i, n := range nodes {
		h := hashkey.String(n.ID)
		fills[i] = fill{offset: h % M, skip: hashkey.Mix(h^0x9e3779b97f4a7c15)%(M-1) + 1, weight: uint64(ws[i])}
		maxW = max(maxW, uint64(ws[i]))
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	filled := 0
	for round := uint64(1); filled < m; round++ {
		for i := range fills {
			f := &fills[i]
			if round*f.weight < f.target {
				continue
			}
			f.target += maxW
			c := (f.offset + f.skip*f.next) % M
			for table[c] >= 0 {
				f.next++
				c = (f.offset + f.skip*f.next) % M
			}
			table[c] = int32(i)
			f.next++
			if filled++; filled == m {
				break
			}
		}
	}
	return table
}

func TestTableIsTheReference(t *testing.T) {
	for _, c := range []struct {
		nodes []*node.Node
		m     int
	}{
		{balancertest.Nodes(1, 2, 3, 4, 10), 65537},
		{balancertest.Nodes(5, 1, 1, 7), 251},
		{balancertest.Uniform(1000), 65537},
		{balancertest.Uniform(10), 7},
	} {
		ws := policy.Weights(c.nodes, 1)
		if got, want := maglev.Table(c.nodes, ws, c.m), referenceTable(c.nodes, ws, c.m); !slices.Equal(got, want) {
			t.Errorf("%d nodes, %d entries: the table differs from the reference", len(c.nodes), c.m)
		}
	}
}

// BenchmarkTable fills the default table for 10,000 nodes, as Table does
// and as the reference does.
func BenchmarkTable(b *testing.B) {
	nodes := balancertest.Uniform(10000)
	ws := policy.Weights(nodes, 1)
	for _, f := range []struct {
		name string
		fill func([]*node.Node, []uint32, int) []int32
	}{{"Table", maglev.Table}, {"reference", referenceTable}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				f.fill(nodes, ws, maglev.DefaultTableSize)
			}
		})
	}
}

func TestMoreNodesThanEntries(t *testing.T) {
	nodes := balancertest.Uniform(10)
	table := maglev.Table(nodes, []uint32{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 7)
	for _, i := range table {
		if i < 0 || int(i) >= 10 {
			t.Fatalf("table %v", table)
		}
	}
}

func TestValidateTableSize(t *testing.T) {
	for m, ok := range map[int]bool{2: false, 3: true, 65537: true, 65535: false, 5000011: true, 5000012: false, -7: false} {
		if err := maglev.ValidateTableSize(m); (err == nil) != ok {
			t.Errorf("ValidateTableSize(%d) = %v", m, err)
		}
	}
}

func TestRace(t *testing.T) {
	balancertest.Race(t, maglev.Builder{Key: balancertest.Key(t), TableSize: 1009}, balancertest.Requests(50))
}

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, maglev.Name), "hash_on: {header: x}", "{hash_on: {query_parameter: q}, table_size: 7}")
}

func BenchmarkPick(b *testing.B) {
	balancertest.Bench(b, maglev.Builder{Key: balancertest.Key(b)}, balancertest.Requests(1024))
}
