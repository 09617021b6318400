// Package leastrequest implements the least_request policy: power of d
// choices over in-flight requests. Each pick draws choice_count distinct
// candidates (2 by default), each in proportion to its registry weight,
// and takes the one with the fewest requests in flight (node.Stats
// InFlight), the first drawn on a tie. At low load, when in-flight counts
// are equal, shares follow the weights; under load, a node that answers
// slowly accumulates in-flight requests and is avoided.
//
// Options (all optional):
//
//	balancer: {policy: least_request, choice_count: 2, slow_start: {window: 30s}}
package leastrequest

import (
	"errors"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/p2c"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "least_request"

func init() { policy.Register(Name, parse) }

// Options are the policy's options in config.
type Options struct {
	// ChoiceCount is how many candidates each pick compares, 2 to 16;
	// 0 means 2.
	ChoiceCount int `yaml:"choice_count" json:"choice_count,omitempty"`
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config `yaml:"slow_start" json:"slow_start,omitempty"`
}

// parse validates the options, reporting every field at fault.
func parse(o Options) (balancer.Builder, error) {
	if err := errors.Join(p2c.ValidateChoices(o.ChoiceCount), o.SlowStart.Validate()); err != nil {
		return nil, err
	}
	return Builder{ChoiceCount: o.ChoiceCount, SlowStart: o.SlowStart}, nil
}

// Builder builds least-request pickers. The zero value is ready to use.
type Builder struct {
	// ChoiceCount is how many candidates each pick compares; 0 means 2.
	ChoiceCount int
	// SlowStart ramps up nodes that joined recently; off when nil.
	SlowStart *slowstart.Config
	// Rand is the random source, called concurrently by every picking
	// goroutine; nil means math/rand/v2's Uint64.
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
		nodes:   nodes,
		sampler: p2c.New(nodes, policy.Ramp(b.SlowStart, nodes, b.Now), b.Rand),
		choices: p2c.Choices(b.ChoiceCount),
	}
}

// picker is immutable; the in-flight counts it compares are atomics on the
// nodes.
type picker struct {
	nodes   []*node.Node
	sampler p2c.Sampler
	choices int
}

func (p *picker) Pick(balancer.Info) *node.Node {
	if len(p.nodes) == 1 {
		return p.nodes[0]
	}
	var drawn [p2c.MaxChoices]int32
	d := p.sampler.Start()
	best := d.Draw(nil)
	drawn[0] = int32(best)
	bestLoad := p.nodes[best].Stats.InFlight.Load()
	for c := 1; c < p.choices; c++ {
		i := d.Draw(drawn[:c])
		drawn[c] = int32(i)
		if load := p.nodes[i].Stats.InFlight.Load(); load < bestLoad {
			best, bestLoad = i, load
		}
	}
	return p.nodes[best]
}
