// Package roundrobin implements the round_robin policy: every node in turn,
// ignoring weights except that weight 0 (drained) nodes are never given to
// it.
package roundrobin

import (
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "round_robin"

func init() {
	policy.Register(Name, func(struct{}) (balancer.Builder, error) { return Builder{}, nil })
}

// Builder builds round-robin pickers. The zero value is ready to use.
type Builder struct {
	// Rand chooses where each picker's cycle starts; nil means
	// math/rand/v2's Uint64. Tests inject a seeded source.
	Rand func() uint64
}

var (
	_ balancer.Builder = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

// Build implements balancer.Builder. The cycle starts at a random node so
// that many sidecars started together do not all hit the same node first.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	p := &picker{nodes: nodes}
	p.next.Start(policy.Rand(b.Rand)(), len(nodes))
	return p
}

// picker is immutable but for next, an atomic cursor shared by every
// goroutine that picks: consecutive picks, from any goroutines, walk the
// nodes in order. next sits on a cache line of its own (see policy.Cursor).
type picker struct {
	nodes []*node.Node
	next  policy.Cursor
}

func (p *picker) Pick(balancer.Info) *node.Node {
	return p.nodes[p.next.Next()%uint64(len(p.nodes))]
}
