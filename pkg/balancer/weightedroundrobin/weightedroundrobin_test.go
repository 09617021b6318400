package weightedroundrobin_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	wrr "github.com/remora-mesh/remora/pkg/balancer/weightedroundrobin"
	"github.com/remora-mesh/remora/pkg/node"
)

func TestParse(t *testing.T) {
	balancertest.RunParse(t, balancertest.Registered(t, wrr.Name), []balancertest.ParseCase{
		{Name: "no options", Options: ""},
		{Name: "slow start", Options: "slow_start: {window: 30s, aggression: 2, min_weight_percent: 5}"},
		{Name: "bad window", Options: "slow_start: {window: -1s}", WantErr: "slow_start.window"},
		{Name: "bad aggression", Options: "slow_start: {window: 1s, aggression: 0}", WantErr: "slow_start.aggression"},
		{Name: "unknown slow start field", Options: "slow_start: {windw: 1s}", WantErr: "windw"},
		{Name: "unknown option", Options: "choice_count: 2", WantErr: "choice_count"},
	})
}

func TestSchedule(t *testing.T) {
	for _, tc := range []struct {
		weights []uint32
		want    string
	}{
		{[]uint32{1, 1, 1}, "ABC"},
		{[]uint32{5, 1, 1}, "AAABAAC"},
		{[]uint32{2, 4, 6}, "ABCCBC"}, // gcd 2: one cycle is 1+2+3
		{[]uint32{0, 1}, "AB"},        // weight 0 never reaches a builder; counted as 1
		{[]uint32{3, 1}, "AAAB"},
	} {
		var b strings.Builder
		for _, i := range wrr.Schedule(tc.weights) {
			b.WriteByte(byte('A' + i))
		}
		if b.String() != tc.want {
			t.Errorf("Schedule(%v) = %s, want %s", tc.weights, b.String(), tc.want)
		}
	}
}

func TestScheduleScaled(t *testing.T) {
	ws := []uint32{math.MaxUint32, math.MaxUint32 / 2, 1}
	seq := wrr.Schedule(ws)
	if len(seq) > wrr.MaxSchedule(3)+3 {
		t.Fatalf("schedule of %d slots, limit %d", len(seq), wrr.MaxSchedule(3))
	}
	counts := make([]int, 3)
	for _, i := range seq {
		counts[i]++
	}
	if counts[2] != 1 || math.Abs(float64(counts[0])/float64(counts[1])-2) > 1e-3 {
		t.Fatalf("scaled counts %v", counts)
	}
}

// TestExactCycle: any window of one cycle gives each node exactly its
// weight.
func TestExactCycle(t *testing.T) {
	for _, ws := range [][]uint32{{1}, {1, 1, 1}, {5, 1, 1}, {3, 7, 2, 9, 1}, {100, 1, 50}} {
		nodes := balancertest.Nodes(ws...)
		var cycle int
		for _, w := range ws {
			cycle += int(w)
		}
		for seed := range uint64(3) {
			p := wrr.Builder{Rand: balancertest.Rand(seed)}.Build(nodes)
			for range 3 {
				counts := balancertest.Count(t, p, nodes, balancer.Info{}, cycle)
				for i, c := range counts {
					if c != int(ws[i]) {
						t.Fatalf("weights %v: counts %v over one cycle", ws, counts)
					}
				}
			}
		}
	}
}

func TestDistribution(t *testing.T) {
	for _, ws := range [][]uint32{{1, 2, 3, 4}, {10, 1, 1, 1, 1, 1}, {7, 13, 29, 2, 31, 5, 1}} {
		nodes := balancertest.Nodes(ws...)
		p := wrr.Builder{Rand: balancertest.Rand(1)}.Build(nodes)
		balancertest.AssertShares(t, balancertest.Count(t, p, nodes, balancer.Info{}, 10000), balancertest.Weights(nodes))
	}
}

// TestSlowStart: a node that joins ramps its share up over the window.
func TestSlowStart(t *testing.T) {
	t0 := time.Unix(100000, 0)
	clock := balancertest.NewClock(t0)
	nodes := []*node.Node{
		balancertest.NewNode(0, 1, time.Time{}),
		balancertest.NewNode(1, 1, time.Time{}),
		balancertest.NewNode(2, 1, t0), // joins at t0
	}
	b := wrr.Builder{SlowStart: &slowstart.Config{Window: 60 * time.Second}, Rand: balancertest.Rand(3), Now: clock.Now}
	p := b.Build(nodes)
	last := 0.0
	for _, at := range []time.Duration{0, 15 * time.Second, 30 * time.Second, 45 * time.Second, 59 * time.Second, 61 * time.Second} {
		clock.Set(t0.Add(at))
		counts := balancertest.Count(t, p, nodes, balancer.Info{}, 10000)
		f := max(0.1, at.Seconds()/60)
		if at > 60*time.Second {
			f = 1
		}
		balancertest.AssertShares(t, counts, []float64{1, 1, f})
		share := float64(counts[2]) / 10000
		if share <= last {
			t.Fatalf("share at %v is %.3f, not above %.3f", at, share, last)
		}
		last = share
	}
}

func TestNoAllocs(t *testing.T) {
	for _, n := range []int{3, 1000} {
		balancertest.AssertNoAllocs(t, wrr.Builder{}.Build(balancertest.Uniform(n)))
	}
	t0 := time.Now()
	nodes := []*node.Node{balancertest.NewNode(0, 1, time.Time{}), balancertest.NewNode(1, 1, t0)}
	balancertest.AssertNoAllocs(t, wrr.Builder{SlowStart: &slowstart.Config{Window: time.Hour}}.Build(nodes))
}

func TestRace(t *testing.T) {
	balancertest.Race(t, wrr.Builder{SlowStart: &slowstart.Config{Window: time.Minute}}, nil)
}

func FuzzParse(f *testing.F) {
	balancertest.FuzzParse(f, balancertest.Registered(f, wrr.Name), "slow_start: {window: 10s}", "slow_start: {window: 1s, aggression: 0.5, min_weight_percent: 0}")
}

func BenchmarkPick(b *testing.B) { balancertest.Bench(b, wrr.Builder{}, nil) }
