package ringhash

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/node"
)

// TestUpdateIsBuild applies random changes to a node list and checks that
// each Update gives the ring Build gives, by the merge for small changes.
func TestUpdateIsBuild(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	k := balancertest.Key(t)
	for _, c := range []struct {
		b     Builder
		nodes int
	}{
		{Builder{Key: k}, 20},
		{Builder{Key: k, PointsPerWeight: 3}, 100},
		{Builder{Key: k, MaxRingSize: 2000}, 60}, // scaled down
		{Builder{Key: k, MinRingSize: 5000}, 20}, // scaled up
	} {
		weights := make([]uint32, c.nodes)
		for i := range weights {
			weights[i] = 1 + uint32(r.IntN(3))
		}
		nodes := balancertest.Nodes(weights...)
		next := c.nodes
		p := c.b.Build(nodes).(*picker)
		merged := 0
		const steps = 100
		for step := range steps {
			nodes = slices.Clone(nodes)
			switch i := r.IntN(len(nodes)); r.IntN(5) {
			case 0: // a node leaves
				if len(nodes) > 1 {
					nodes = slices.Delete(nodes, i, i+1)
				}
			case 1: // a node joins, anywhere in ID order
				n := balancertest.NewNode(next, 1+uint32(r.IntN(3)), time.Time{})
				next++
				n.ID = nodes[i].ID + "+" + strconv.Itoa(next)
				nodes = append(nodes, n)
				slices.SortFunc(nodes, func(a, b *node.Node) int { return strings.Compare(a.ID, b.ID) })
			case 2: // a weight changes
				in := nodes[i].Instance
				in.Weight = 1 + uint32(r.IntN(4))
				nodes[i] = node.New(in, nodes[i].Stats)
			case 3: // metadata changes: a new node, the same points
				in := nodes[i].Instance
				in.Metadata = map[string]string{"step": string(rune('a' + step%26))}
				nodes[i] = node.New(in, nodes[i].Stats)
			case 4: // several at once
				for range 1 + r.IntN(len(nodes)/2) {
					j := r.IntN(len(nodes))
					in := nodes[j].Instance
					in.Weight = 1 + uint32(r.IntN(4))
					nodes[j] = node.New(in, nodes[j].Stats)
				}
			}
			want := c.b.Build(nodes).(*picker)
			got := c.b.update(p, nodes)
			if got != nil {
				merged++
			} else {
				got = c.b.Update(p, nodes).(*picker)
			}
			if !slices.Equal(got.Nodes, nodes) || !slices.Equal(got.points, want.points) ||
				!slices.Equal(got.buckets, want.buckets) || got.shift != want.shift || got.scale != want.scale {
				t.Fatalf("%+v, step %d: Update's ring differs from Build's", c.b, step)
			}
			p = got
		}
		if merged < steps/2 {
			t.Errorf("%+v: only %d of %d updates merged", c.b, merged, steps)
		}
	}
}

// TestUpdateBuildsAfresh: from a picker of other options, or the empty
// picker, Update builds.
func TestUpdateBuildsAfresh(t *testing.T) {
	k := balancertest.Key(t)
	nodes := balancertest.Uniform(50)
	b := Builder{Key: k}
	want := b.Build(nodes).(*picker)
	for _, prev := range []balancer.Picker{Builder{Key: k, PointsPerWeight: 3}.Build(nodes), b.Build(nil)} {
		if got := b.Update(prev, nodes).(*picker); !slices.Equal(got.points, want.points) {
			t.Fatalf("Update from %T differs from Build", prev)
		}
	}
	if b.Update(want, nil) != balancer.Empty {
		t.Fatal("Update to no nodes is not the empty picker")
	}
}

// BenchmarkUpdate changes the weight of one node of 10,000, by Update and
// by Build, with the default bound on the ring (800,000 points here) and
// with a quarter of it.
func BenchmarkUpdate(b *testing.B) {
	nodes := balancertest.Uniform(10000)
	changed := slices.Clone(nodes)
	in := changed[5000].Instance
	in.Weight = 2
	changed[5000] = node.New(in, nil)
	lists := [2][]*node.Node{changed, nodes}
	for _, size := range []int{DefaultMaxRingSize, DefaultMaxRingSize / 4} {
		bl := Builder{Key: balancertest.Key(b), MaxRingSize: size}
		for _, name := range []string{"Update", "Build"} {
			b.Run(fmt.Sprintf("max_ring_size=%d/%s", size, name), func(b *testing.B) {
				p := bl.Build(nodes)
				b.ReportMetric(float64(len(p.(*picker).points)), "points")
				b.ReportAllocs()
				for i := range b.N {
					if name == "Build" {
						p = bl.Build(lists[i%2])
					} else {
						p = bl.Update(p, lists[i%2])
					}
				}
			})
		}
	}
}
