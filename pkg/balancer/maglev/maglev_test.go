package maglev_test

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/maglev"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, maglev.Name), []balancertest.ParseCase{
		{Name: "header", Options: "hash_on: {header: x-user-id}"},
		{Name: "table size", Options: "{hash_on: {source_ip: true}, table_size: 131071}"},
		{Name: "small table", Options: "{hash_on: {source_ip: true}, table_size: 3}"},
		{Name: "no options", Options: "", WantErr: "hash_on is required"},
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
	counts := make([]int, len(nodes))
	for _, info := range balancertest.Requests(10000) {
		for i, n := range nodes {
			if p.Pick(info) == n {
				counts[i]++
			}
		}
	}
	balancertest.AssertShares(t, counts, balancertest.Weights(nodes))
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
	balancertest.FuzzParse(f, balancertest.Registered(f, maglev.Name), "hash_on: {header: x}", "{hash_on: {query_parameter: q}, min_ring_size: 3, max_ring_size: 9}")
}

func BenchmarkPick(b *testing.B) {
	balancertest.Bench(b, maglev.Builder{Key: balancertest.Key(b)}, balancertest.Requests(1024))
}
