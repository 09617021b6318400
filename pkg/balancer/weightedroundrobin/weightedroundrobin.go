// Package weightedroundrobin implements the weighted_round_robin policy:
// smooth weighted round robin over the registry weights.
//
// Build computes one cycle of an earliest-deadline-first schedule — node i
// of weight w is due at (k+φᵢ)/w for k = 0…w-1, with a phase φᵢ = (i+½)/n
// that staggers nodes of equal weight — and Pick walks it with one atomic
// counter, so picks never lock and the schedule is exact: any window of one
// cycle (the sum of the weights, divided by their greatest common divisor)
// consecutive picks gives each node exactly its weight. Heavy nodes are
// interleaved with light ones rather than bunched (weights 5,1,1 give
// A A A B A A C). A cycle longer than MaxSchedule(n) is approximated by
// scaling the weights down, every node keeping at least 1.
//
// Options (all optional):
//
//	balancer: {policy: weighted_round_robin, slow_start: {window: 30s}}
package weightedroundrobin

import (
	"cmp"
	"slices"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "weighted_round_robin"

func init() { policy.Register(Name, parse) }

// Options are the policy's options in config.
type Options struct {
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config `yaml:"slow_start" json:"slow_start,omitempty"`
}

func parse(o Options) (balancer.Builder, error) {
	if err := o.SlowStart.Validate(); err != nil {
		return nil, err
	}
	return Builder{SlowStart: o.SlowStart}, nil
}

// Builder builds weighted round-robin pickers. The zero value is ready to
// use.
type Builder struct {
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config
	// Rand chooses where each picker's cycle starts and draws slow-start
	// acceptance; nil means math/rand/v2's Uint64.
	Rand func() uint64
	// Now is the clock for slow start; nil means time.Now.
	Now func() time.Time
}

var (
	_ balancer.Builder = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

// MaxSchedule returns the longest cycle Build computes for n nodes.
func MaxSchedule(n int) int { return max(1<<18, 8*n) }

// Build implements balancer.Builder.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	r := policy.Rand(b.Rand)
	p := &picker{nodes: nodes, rand: r, ramp: policy.Ramp(b.SlowStart, nodes, b.Now)}
	p.seq = Schedule(policy.Weights(nodes, 0))
	p.next.Start(r(), len(p.seq))
	return p
}

// Schedule returns one cycle of the smooth schedule of weights (zero
// weights count as 1), as indexes into weights.
func Schedule(weights []uint32) []int32 {
	n := len(weights)
	ws := make([]uint64, n)
	var g, total uint64
	for i, w := range weights {
		ws[i] = max(uint64(w), 1)
		g = gcd(g, ws[i])
	}
	for i := range ws {
		ws[i] /= g
		total += ws[i]
	}
	if limit := uint64(MaxSchedule(n)); total > limit {
		scaled := uint64(0)
		for i, w := range ws {
			ws[i] = max(1, (w*limit+total/2)/total)
			scaled += ws[i]
		}
		total = scaled
	}
	type slot struct {
		due float64
		i   int32
	}
	slots := make([]slot, 0, total)
	for i, w := range ws {
		phase := (float64(i) + 0.5) / float64(n)
		for k := range w {
			slots = append(slots, slot{(float64(k) + phase) / float64(w), int32(i)})
		}
	}
	slices.SortFunc(slots, func(a, b slot) int {
		if c := cmp.Compare(a.due, b.due); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	seq := make([]int32, len(slots))
	for j, s := range slots {
		seq[j] = s.i
	}
	return seq
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// picker is immutable but for next, an atomic cursor over seq shared by
// every goroutine that picks, kept on a cache line of its own.
type picker struct {
	nodes []*node.Node
	seq   []int32
	ramp  *slowstart.Ramp
	rand  func() uint64
	next  policy.Cursor
}

func (p *picker) Pick(balancer.Info) *node.Node {
	for try := 1; ; try++ {
		i := p.seq[p.next.Next()%uint64(len(p.seq))]
		if p.ramp == nil || try == slowstart.MaxTries || p.ramp.Accept(int(i), p.rand()) {
			return p.nodes[i]
		}
	}
}
