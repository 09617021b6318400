package random_test

import (
	"math"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/random"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, random.Name), []balancertest.ParseCase{
		{Name: "no options", Options: ""},
		{Name: "slow start", Options: "slow_start: {window: 1m}"},
		{Name: "bad min weight", Options: "slow_start: {window: 1m, min_weight_percent: 200}", WantErr: "min_weight_percent"},
		{Name: "unknown option", Options: "decay: 1s", WantErr: "decay"},
	})
}

func TestDistribution(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
	}{
		{"equal", []uint32{1, 1, 1, 1}},
		{"weighted", []uint32{1, 2, 3, 4}},
		{"skewed", []uint32{100, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
		{"registry scale", []uint32{10000, 5000, 2500, 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(3) {
				nodes := balancertest.Nodes(tc.weights...)
				p := random.Builder{Rand: balancertest.Rand(seed)}.Build(nodes)
				balancertest.AssertShares(t, balancertest.Count(t, p, nodes, balancer.Info{}, 10000), balancertest.Weights(nodes))
			}
		})
	}
}

// TestWeightChange: a rebuild with new weights re-balances and keeps the
// nodes' stats.
func TestWeightChange(t *testing.T) {
	nodes := balancertest.Nodes(1, 1, 1)
	nodes[0].Stats.Requests.Store(42)
	p := random.Builder{Rand: balancertest.Rand(1)}.Build(nodes)
	balancertest.AssertShares(t, balancertest.Count(t, p, nodes, balancer.Info{}, 10000), []float64{1, 1, 1})
	changed := balancertest.Nodes(5, 1, 1)
	for i := range changed {
		changed[i].Stats = nodes[i].Stats
	}
	p = random.Builder{Rand: balancertest.Rand(1)}.Build(changed)
	balancertest.AssertShares(t, balancertest.Count(t, p, changed, balancer.Info{}, 10000), []float64{5, 1, 1})
	if changed[0].Stats.Requests.Load() != 42 {
		t.Fatal("stats reset by a rebuild")
	}
}

func TestSlowStart(t *testing.T) {
	t0 := time.Unix(100000, 0)
	clock := balancertest.NewClock(t0)
	nodes := []*node.Node{
		balancertest.NewNode(0, 2, time.Time{}),
		balancertest.NewNode(1, 2, t0.Add(-time.Hour)),
		balancertest.NewNode(2, 2, t0),
	}
	aggr := 2.0
	p := random.Builder{SlowStart: &slowstart.Config{Window: 100 * time.Second, Aggression: &aggr}, Rand: balancertest.Rand(9), Now: clock.Now}.Build(nodes)
	last := -1
	for _, at := range []time.Duration{0, 10 * time.Second, 40 * time.Second, 90 * time.Second, 100 * time.Second} {
		clock.Set(t0.Add(at))
		counts := balancertest.Count(t, p, nodes, balancer.Info{}, 10000)
		f := 1.0
		if at < 100*time.Second {
			f = max(0.1, math.Sqrt(at.Seconds()/100))
		}
		balancertest.AssertShares(t, counts, []float64{1, 1, f})
		if counts[2] <= last {
			t.Fatalf("new node's picks at %v: %d, not above %d", at, counts[2], last)
		}
		last = counts[2]
	}
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []int{3, 1000} {
		balancertest.AssertNoAllocs(t, random.Builder{}.Build(balancertest.Uniform(n)))
	}
}

func TestRace(t *testing.T) {
	balancertest.Race(t, random.Builder{SlowStart: &slowstart.Config{Window: time.Minute}}, nil)
}

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, random.Name), "slow_start: {window: 10s}")
}

func BenchmarkPick(b *testing.B) { balancertest.Bench(b, random.Builder{}, nil) }
