package leastrequest_test

import (
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/leastrequest"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, leastrequest.Name), []balancertest.ParseCase{
		{Name: "no options", Options: ""},
		{Name: "choice count", Options: "choice_count: 3"},
		{Name: "slow start", Options: "{choice_count: 2, slow_start: {window: 10s}}"},
		{Name: "one choice", Options: "choice_count: 1", WantErr: "choice_count: 1 is out of range"},
		{Name: "too many choices", Options: "choice_count: 100", WantErr: "choice_count"},
		{Name: "not a number", Options: "choice_count: two", WantErr: `line 1, column 15: choice_count: "two" is not a number`},
		{Name: "unknown option", Options: "choices: 2", WantErr: "line 1, column 1: choices: unknown field; did you mean choice_count?"},
		{Name: "every error at once", Options: "{choice_count: 1, slow_start: {window: -1s, aggression: 0}}", WantErr: "choice_count: 1 is out of range; want 2 to 16 (default 2)\n" +
			"slow_start.window: -1s is out of range; want 0 (off) to 1h0m0s\nslow_start.aggression: 0 must be a positive number (1 is linear)"},
	})
}

// TestAvoidsBusyNode: a node with many requests in flight is (almost)
// never picked.
func TestAvoidsBusyNode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int
		choices int
	}{
		{"two nodes", 2, 2},
		{"ten nodes", 10, 2},
		{"ten nodes three choices", 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := balancertest.Uniform(tc.n)
			nodes[0].Stats.InFlight.Store(100)
			for _, n := range nodes[1:] {
				n.Stats.InFlight.Store(1)
			}
			p := leastrequest.Builder{ChoiceCount: tc.choices, Rand: balancertest.Rand(5)}.Build(nodes)
			counts := balancertest.Count(t, p, nodes, balancer.Info{}, 10000)
			if counts[0] > 100 {
				t.Fatalf("busy node picked %d of 10000 times (%v)", counts[0], counts)
			}
			shares := make([]float64, tc.n)
			for i := 1; i < tc.n; i++ {
				shares[i] = 1
			}
			if counts[0] == 0 {
				balancertest.AssertShares(t, counts, shares)
			}
		})
	}
}

// TestClosedLoop: requests occupy a node for its latency; the slow node
// accumulates in-flight requests and gets a small share.
func TestClosedLoop(t *testing.T) {
	nodes := balancertest.Uniform(5)
	p := leastrequest.Builder{Rand: balancertest.Rand(7)}.Build(nodes)
	type pending struct {
		end int
		n   *node.Node
	}
	var inflight []pending
	picks := map[*node.Node]int{}
	for tick := range 10000 { // one request per ms
		kept := inflight[:0]
		for _, q := range inflight {
			if q.end <= tick {
				q.n.Stats.InFlight.Add(-1)
			} else {
				kept = append(kept, q)
			}
		}
		inflight = kept
		n := p.Pick(balancer.Info{})
		picks[n]++
		lat := 10
		if n == nodes[0] {
			lat = 100
		}
		n.Stats.InFlight.Add(1)
		inflight = append(inflight, pending{tick + lat, n})
	}
	if share := float64(picks[nodes[0]]) / 10000; share > 0.1 {
		t.Fatalf("10x slower node got %.1f%% of picks", share*100)
	}
}

func TestIdleFollowsWeights(t *testing.T) {
	nodes := balancertest.Nodes(1, 2, 3, 4)
	p := leastrequest.Builder{Rand: balancertest.Rand(1)}.Build(nodes)
	balancertest.AssertShares(t, balancertest.Count(t, p, nodes, balancer.Info{}, 10000), balancertest.Weights(nodes))
}

func TestSlowStart(t *testing.T) {
	t0 := time.Unix(100000, 0)
	clock := balancertest.NewClock(t0)
	nodes := []*node.Node{
		balancertest.NewNode(0, 1, time.Time{}),
		balancertest.NewNode(1, 1, time.Time{}),
		balancertest.NewNode(2, 1, t0),
	}
	p := leastrequest.Builder{SlowStart: &slowstart.Config{Window: time.Minute}, Rand: balancertest.Rand(2), Now: clock.Now}.Build(nodes)
	last := -1
	for _, at := range []time.Duration{0, 20 * time.Second, 40 * time.Second, 70 * time.Second} {
		clock.Set(t0.Add(at))
		counts := balancertest.Count(t, p, nodes, balancer.Info{}, 10000)
		if counts[2] <= last {
			t.Fatalf("new node's picks at %v: %d, not above %d", at, counts[2], last)
		}
		last = counts[2]
	}
	if last < 3000 {
		t.Fatalf("after the window the new node has %d of 10000 picks", last)
	}
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []int{1, 3, 1000} {
		balancertest.AssertNoAllocs(t, leastrequest.Builder{}.Build(balancertest.Uniform(n)))
		balancertest.AssertNoAllocs(t, leastrequest.Builder{ChoiceCount: 16}.Build(balancertest.Nodes(1, 2, 3)))
	}
}

func TestRace(t *testing.T) {
	balancertest.Race(t, leastrequest.Builder{SlowStart: &slowstart.Config{Window: time.Minute}}, nil)
}

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, leastrequest.Name), "choice_count: 3", "slow_start: {window: 10s}")
}

func BenchmarkPick(b *testing.B) { balancertest.Bench(b, leastrequest.Builder{}, nil) }
