package roundrobin_test

import (
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/roundrobin"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, roundrobin.Name), []balancertest.ParseCase{
		{Name: "no options", Options: ""},
		{Name: "unknown option", Options: "choice_count: 2", WantErr: "choice_count"},
	})
}

// TestExactCycle: every window of len(nodes) consecutive picks, wherever
// the cycle starts, holds each node exactly once, whatever the weights.
func TestExactCycle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
	}{
		{"one", []uint32{1}},
		{"three", []uint32{1, 1, 1}},
		{"weights ignored", []uint32{5, 1, 100, 2}},
		{"many", make97()},
	} {
		for seed := range uint64(3) {
			nodes := balancertest.Nodes(tc.weights...)
			p := roundrobin.Builder{Rand: balancertest.Rand(seed)}.Build(nodes)
			for cycle := range 3 {
				counts := balancertest.Count(t, p, nodes, balancer.Info{}, len(nodes))
				for i, c := range counts {
					if c != 1 {
						t.Fatalf("%s seed %d cycle %d: node %d picked %d times, want 1 (%v)", tc.name, seed, cycle, i, c, counts)
					}
				}
			}
		}
	}
}

func make97() []uint32 {
	ws := make([]uint32, 97)
	for i := range ws {
		ws[i] = uint32(i%3 + 1)
	}
	return ws
}

func TestOrder(t *testing.T) {
	nodes := balancertest.Uniform(4)
	p := roundrobin.Builder{Rand: func() uint64 { return 2 }}.Build(nodes)
	for i, want := range []int{2, 3, 0, 1, 2} {
		if got := p.Pick(balancer.Info{}); got != nodes[want] {
			t.Fatalf("pick %d = %s, want %s", i, got.ID, nodes[want].ID)
		}
	}
}

func TestEmpty(t *testing.T) {
	if (roundrobin.Builder{}).Build(nil).Pick(balancer.Info{}) != nil {
		t.Fatal("empty picker returned a node")
	}
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []int{3, 1000} {
		balancertest.AssertNoAllocs(t, roundrobin.Builder{}.Build(balancertest.Uniform(n)))
	}
}

func TestRace(t *testing.T) { balancertest.Race(t, roundrobin.Builder{}, nil) }

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, roundrobin.Name), "{}")
}

func BenchmarkPick(b *testing.B) { balancertest.Bench(b, roundrobin.Builder{}, nil) }
