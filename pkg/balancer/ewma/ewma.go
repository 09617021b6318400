// Package ewma implements the ewma policy: peak-EWMA power of d choices,
// as in Finagle and Linkerd. Each pick draws choice_count distinct
// candidates (2 by default), each in proportion to its registry weight,
// and takes the cheapest, where
//
//	cost = latency estimate × (requests in flight + 1)
//
// The latency estimate is node.Stats' peak-EWMA (see node.Stats.End and
// PeakEWMA): a slower response replaces it at once, faster ones pull it down
// with a time constant of decay, and between responses it decays towards 0
// so that a node avoided for being slow is tried again after a while. A node
// without a latency sample costs 0 while it has nothing in flight and a
// large penalty once it has (Finagle's rule), so a new node gets a first
// request at once but is not flooded before its first response.
//
// Build sets each node's decay (node.Stats.SetLatencyDecay) to the policy's:
// the estimate is kept by node.Stats, which the proxy updates through End.
//
// Options (all optional):
//
//	balancer: {policy: ewma, decay: 10s, choice_count: 2}
package ewma

import (
	"errors"
	"fmt"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/internal/p2c"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "ewma"

// Limits of the decay option.
const (
	DefaultDecay = node.DefaultLatencyDecay
	MinDecay     = 10 * time.Millisecond
	MaxDecay     = time.Hour
)

// penalty is the cost (in ns) of a node without a latency sample that has
// requests in flight, per request in flight: far above any real latency.
const penalty = 1e13

func init() { policy.Register(Name, parse) }

// Options are the policy's options in config.
type Options struct {
	// Decay is the time constant of the latency estimate; 0 means 10s.
	Decay time.Duration `yaml:"decay" json:"decay,omitempty"`
	// ChoiceCount is how many candidates each pick compares, 2 to 16;
	// 0 means 2.
	ChoiceCount int `yaml:"choice_count" json:"choice_count,omitempty"`
}

// parse validates the options, reporting every field at fault.
func parse(o Options) (balancer.Builder, error) {
	var errs []error
	if o.Decay != 0 && (o.Decay < MinDecay || o.Decay > MaxDecay) {
		errs = append(errs, fmt.Errorf("decay: %v is out of range; want %v to %v (default %v)", o.Decay, MinDecay, MaxDecay, DefaultDecay))
	}
	errs = append(errs, p2c.ValidateChoices(o.ChoiceCount))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return Builder{Decay: o.Decay, ChoiceCount: o.ChoiceCount}, nil
}

// Builder builds peak-EWMA pickers. The zero value is ready to use.
type Builder struct {
	// Decay is the time constant of the latency estimate; 0 means
	// DefaultDecay.
	Decay time.Duration
	// ChoiceCount is how many candidates each pick compares; 0 means 2.
	ChoiceCount int
	// Rand is the random source, called concurrently by every picking
	// goroutine; nil means math/rand/v2's Uint64.
	Rand func() uint64
}

var (
	_ balancer.Builder = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

// Build implements balancer.Builder. It sets every node's latency decay.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	decay := b.Decay
	if decay <= 0 {
		decay = DefaultDecay
	}
	for _, n := range nodes {
		if n.Stats.LatencyDecay() != decay {
			n.Stats.SetLatencyDecay(decay)
		}
	}
	stats := make([]*node.Stats, len(nodes))
	for i, n := range nodes {
		stats[i] = n.Stats
	}
	return &picker{
		nodes:   nodes,
		stats:   stats,
		sampler: p2c.New(nodes, nil, b.Rand),
		choices: p2c.Choices(b.ChoiceCount),
		inv:     1 / float64(decay),
	}
}

// picker is immutable; the latency estimates and in-flight counts it
// compares are atomics on the nodes.
type picker struct {
	nodes   []*node.Node
	stats   []*node.Stats // nodes[i].Stats: a pick reads a candidate's stats without its node
	sampler p2c.Sampler
	choices int
	inv     float64 // 1/decay in 1/ns
}

// candidate is a node's cost as of its estimate's last update.
type candidate struct {
	cost   float64 // ns × (in flight + 1), or the penalty
	at     int64   // Mono instant of the estimate
	decays bool    // false for a node without a sample
}

func candidateOf(s *node.Stats) candidate {
	inflight := float64(max(s.InFlight.Load(), 0))
	est, at := s.EWMA()
	if est == 0 {
		return candidate{cost: penalty * inflight}
	}
	return candidate{cost: est * (inflight + 1), at: at, decays: true}
}

// less reports whether a costs less than b now. Both estimates decay by
// the same factor from the later of their instants to now, so only the
// older one needs decaying to the newer one's instant: the comparison
// needs one exponential and no clock. A penalised node is compared without
// decay, which only matters for estimates of hours.
//
// The exponential is computed only when its bounds 1-x <= exp(-x) <=
// 1-x+x²/2 do not decide: candidates' estimates are rarely that close, and
// exp is most of a pick's arithmetic.
func (a candidate) less(b candidate, inv float64) bool {
	if !a.decays || !b.decays || a.at == b.at {
		return a.cost < b.cost
	}
	// Is the newer cost below the older one decayed by x?
	newer, older, d, aNewer := a.cost, b.cost, a.at-b.at, true
	if d < 0 {
		newer, older, d, aNewer = b.cost, a.cost, -d, false
	}
	x := float64(d) * inv
	lo := 1 - x
	switch {
	case newer < older*lo:
		return aNewer
	case newer > older*(lo+x*x/2):
		return !aNewer
	}
	return decayedLess(newer, older, x, aNewer)
}

// decayedLess is less's exact comparison of newer with older·exp(-x):
// whether newer is below it when aNewer, above it otherwise.
func decayedLess(newer, older, x float64, aNewer bool) bool {
	decayed := older * node.ExpNeg(x)
	if aNewer {
		return newer < decayed
	}
	return newer > decayed
}

func (p *picker) Pick(balancer.Info) *node.Node {
	if len(p.nodes) == 1 {
		return p.nodes[0]
	}
	d := p.sampler.Start()
	best := d.Draw(nil)
	var drawn [p2c.MaxChoices]int32
	drawn[0] = int32(best)
	bc := candidateOf(p.stats[best])
	for c := 1; c < p.choices; c++ {
		i := d.Draw(drawn[:c])
		drawn[c] = int32(i)
		if ic := candidateOf(p.stats[i]); ic.less(bc, p.inv) {
			best, bc = i, ic
		}
	}
	return p.nodes[best]
}
