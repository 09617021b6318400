// Package roundrobin implements the round_robin policy: every node in turn,
// ignoring weights except that weight 0 (drained) nodes are never given to
// it.
package roundrobin

import (
	"math/rand/v2"
	"sync/atomic"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "round_robin"

func init() { balancer.Register(factory{}) }

type factory struct{}

func (factory) Name() string { return Name }

func (factory) Parse(decode func(any) error) (balancer.Builder, error) {
	var opts struct{}
	if err := decode(&opts); err != nil {
		return nil, err
	}
	return Builder{}, nil
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
	r := b.Rand
	if r == nil {
		r = rand.Uint64
	}
	p := &picker{nodes: nodes}
	p.next.Store(r() % uint64(len(nodes)))
	return p
}

// picker is immutable but for next, an atomic counter shared by every
// goroutine that picks: consecutive picks, from any goroutines, walk the
// nodes in order. next sits on a cache line of its own, so its updates do
// not evict the read-only fields from other cores' caches.
type picker struct {
	nodes []*node.Node
	_     [64]byte
	next  atomic.Uint64
	_     [56]byte
}

func (p *picker) Pick(balancer.Info) *node.Node {
	i := p.next.Add(1) - 1
	return p.nodes[i%uint64(len(p.nodes))]
}
