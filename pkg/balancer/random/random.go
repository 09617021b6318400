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
	"math/rand/v2"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "random"

func init() { balancer.Register(factory{}) }

// Options are the policy's options in config.
type Options struct {
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config `yaml:"slow_start" json:"slow_start,omitempty"`
}

type factory struct{}

func (factory) Name() string { return Name }

func (factory) Parse(decode func(any) error) (balancer.Builder, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
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
	r := b.Rand
	if r == nil {
		r = rand.Uint64
	}
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	ws := make([]uint32, len(nodes))
	for i, n := range nodes {
		ws[i] = n.Weight
	}
	return &picker{nodes: nodes, table: alias.New(ws), rand: r, ramp: b.SlowStart.Ramp(nodes, now(), now)}
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
