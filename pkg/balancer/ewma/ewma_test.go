package ewma_test

import (
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/ewma"
	"github.com/remora-mesh/remora/pkg/node"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, ewma.Name), []balancertest.ParseCase{
		{Name: "no options", Options: ""},
		{Name: "decay", Options: "decay: 5s"},
		{Name: "both", Options: "{decay: 30s, choice_count: 3}"},
		{Name: "decay too short", Options: "decay: 1ms", WantErr: "decay: 1ms is out of range"},
		{Name: "decay not a duration", Options: "decay: soon", WantErr: "soon"},
		{Name: "bad choice count", Options: "choice_count: 1", WantErr: "choice_count"},
		{Name: "unknown option", Options: "slow_start: {window: 1s}", WantErr: "slow_start"},
	})
}

func TestBuildSetsDecay(t *testing.T) {
	nodes := balancertest.Uniform(2)
	ewma.Builder{Decay: 3 * time.Second}.Build(nodes)
	if d := nodes[1].Stats.LatencyDecay(); d != 3*time.Second {
		t.Fatalf("decay %v", d)
	}
}

// simulate sends one request per step of the clock; each holds its node
// for the node's latency and then ends with Stats.EndAt. It returns the
// picks per node.
func simulate(t *testing.T, p balancer.Picker, nodes []*node.Node, clock *balancertest.Clock, latency func(i int) time.Duration, steps int, step time.Duration) []int {
	t.Helper()
	index := map[*node.Node]int{}
	for i, n := range nodes {
		index[n] = i
	}
	type pending struct {
		end time.Time
		lat time.Duration
		n   *node.Node
	}
	var inflight []pending
	counts := make([]int, len(nodes))
	for range steps {
		now := clock.Now()
		kept := inflight[:0]
		for _, q := range inflight {
			if !q.end.After(now) {
				q.n.Stats.EndAt(q.end, q.lat, false)
			} else {
				kept = append(kept, q)
			}
		}
		inflight = kept
		n := p.Pick(balancer.Info{})
		i := index[n]
		counts[i]++
		n.Stats.Begin(now)
		inflight = append(inflight, pending{now.Add(latency(i)), latency(i), n})
		clock.Advance(step)
	}
	return counts
}

// TestSlowNodeAvoided: a node 10x slower than the others gets < 10% of
// picks, whatever the request rate.
func TestSlowNodeAvoided(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
		step  time.Duration
		steps int
	}{
		{"3 nodes, light load", 3, 50 * time.Millisecond, 10000},
		{"3 nodes, heavy load", 3, time.Millisecond, 10000},
		{"10 nodes", 10, 2 * time.Millisecond, 10000},
		{"3 nodes, a minute of light load", 3, 20 * time.Millisecond, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := balancertest.NewClock(time.Unix(100000, 0))
			nodes := balancertest.Uniform(tc.nodes)
			p := ewma.Builder{Rand: balancertest.Rand(11)}.Build(nodes)
			lat := func(i int) time.Duration {
				if i == 0 {
					return 100 * time.Millisecond
				}
				return 10 * time.Millisecond
			}
			counts := simulate(t, p, nodes, clock, lat, tc.steps, tc.step)
			if share := float64(counts[0]) / float64(tc.steps); share >= 0.1 {
				t.Fatalf("slow node got %.1f%% of picks (%v)", share*100, counts)
			}
		})
	}
}

// TestSlowNodeViaEnd uses the real clock and Stats.End, as the proxy does.
func TestSlowNodeViaEnd(t *testing.T) {
	nodes := balancertest.Uniform(3)
	p := ewma.Builder{Rand: balancertest.Rand(12)}.Build(nodes)
	counts := make([]int, 3)
	for range 10000 {
		n := p.Pick(balancer.Info{})
		lat := 10 * time.Millisecond
		if n == nodes[0] {
			lat = 100 * time.Millisecond
			counts[0]++
		}
		n.Stats.Begin(time.Now())
		n.Stats.End(lat, false)
	}
	if counts[0] >= 1000 {
		t.Fatalf("slow node got %d of 10000 picks", counts[0])
	}
}

// TestRecovers: a node that was slow and then stops being picked is tried
// again once its estimate has decayed, and wins back its share when fast.
func TestRecovers(t *testing.T) {
	clock := balancertest.NewClock(time.Unix(100000, 0))
	nodes := balancertest.Uniform(3)
	p := ewma.Builder{Decay: time.Second, Rand: balancertest.Rand(13)}.Build(nodes)
	slow := true
	lat := func(i int) time.Duration {
		if i == 0 && slow {
			return time.Second
		}
		return 10 * time.Millisecond
	}
	simulate(t, p, nodes, clock, lat, 2000, 5*time.Millisecond)
	slow = false
	counts := simulate(t, p, nodes, clock, lat, 6000, 5*time.Millisecond)
	if counts[0] < 6000/5 {
		t.Fatalf("recovered node got %d of 6000 picks (%v)", counts[0], counts)
	}
}

func TestNewNodeNotFlooded(t *testing.T) {
	nodes := balancertest.Uniform(4)
	for _, n := range nodes[1:] {
		n.Stats.EndAt(time.Now(), 10*time.Millisecond, false)
		n.Stats.InFlight.Store(2)
	}
	p := ewma.Builder{Rand: balancertest.Rand(14)}.Build(nodes)
	// No sample and nothing in flight: it costs 0 and is tried.
	counts := balancertest.Count(t, p, nodes, balancer.Info{}, 1000)
	if counts[0] == 0 {
		t.Fatal("a new node was never tried")
	}
	// One in flight and still no sample: penalised.
	nodes[0].Stats.InFlight.Store(1)
	counts = balancertest.Count(t, p, nodes, balancer.Info{}, 1000)
	if counts[0] != 0 {
		t.Fatalf("a new node with a request in flight got %d more", counts[0])
	}
}

func TestIdleFollowsWeights(t *testing.T) {
	nodes := balancertest.Nodes(1, 2, 3, 4)
	p := ewma.Builder{Rand: balancertest.Rand(1)}.Build(nodes)
	balancertest.AssertShares(t, balancertest.Count(t, p, nodes, balancer.Info{}, 10000), balancertest.Weights(nodes))
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []int{1, 3, 1000} {
		nodes := balancertest.Uniform(n)
		for _, nd := range nodes {
			nd.Stats.End(time.Millisecond, false)
		}
		balancertest.AssertNoAllocs(t, ewma.Builder{}.Build(nodes))
	}
}

func TestRace(t *testing.T) { balancertest.Race(t, ewma.Builder{}, nil) }

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, ewma.Name), "decay: 10s", "choice_count: 4")
}

func BenchmarkPick(b *testing.B) { balancertest.Bench(b, ewma.Builder{}, nil) }
