// Package random implements the random policy: each pick draws a node at
// random in proportion to its registry weight (Vose's alias method: O(1),
// one random number per draw). Unlike round robin it shares no counter
// between goroutines, so picks do not contend.
//
// Options (all optional):
//
//	balancer: {policy: random, slow_start: {window: 30s}}
package random

import (
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "random"

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

// Builder builds weighted random pickers. The zero value is ready to use.
type Builder struct {
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config
	// Rand is the random source, called concurrently by every picking
	// goroutine; nil means math/rand/v2's Uint64 (lock-free, per-thread
	// state). Tests inject a seeded source and pick from one goroutine.
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

// Build implements balancer.Builder.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	return &picker{
		nodes: nodes,
		table: alias.New(policy.Weights(nodes, 0)),
		rand:  policy.Rand(b.Rand),
		ramp:  policy.Ramp(b.SlowStart, nodes, b.Now),
	}
}

// picker is immutable.
type picker struct {
	nodes []*node.Node
	table alias.Table
	ramp  *slowstart.Ramp
	rand  func() uint64
}

func (p *picker) Pick(balancer.Info) *node.Node {
	for try := 1; ; try++ {
		i := p.table.Sample(p.rand())
		if p.ramp == nil || try == slowstart.MaxTries || p.ramp.Accept(i, p.rand()) {
			return p.nodes[i]
		}
	}
}
