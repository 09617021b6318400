// Package slowstart ramps up the share of nodes that joined an upstream
// recently, so that a cold instance is not flooded (Envoy's
// slow_start_config). The weighted policies (weighted_round_robin, random,
// least_request) accept it as their slow_start option:
//
//	balancer:
//	  policy: random
//	  slow_start: {window: 30s, aggression: 1.0, min_weight_percent: 10}
//
// During the window after a node joined (node.Stats.Added), its effective
// weight is
//
//	weight × max(min_weight_percent/100, (elapsed/window)^(1/aggression))
//
// A picker applies the ramp at pick time by rejection: a candidate that is
// ramping is kept with probability factor(node)/factor(oldest node) and
// drawn again otherwise, so shares follow the formula without rebuilding
// the picker as time passes. Because shares are relative, nodes that joined
// together (an upstream's first node set at startup) ramp together and
// split traffic evenly from the start.
package slowstart

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/remora-mesh/remora/pkg/node"
)

// Defaults and limits of the options.
const (
	DefaultAggression       = 1.0
	DefaultMinWeightPercent = 10.0
	MaxWindow               = time.Hour
	// MaxTries bounds the draws of one pick: after MaxTries rejected
	// candidates the last one is taken.
	MaxTries = 8
)

// Config is the slow_start option block. A zero Window disables slow start.
type Config struct {
	// Window is how long a new node ramps; 0 disables slow start.
	Window time.Duration `yaml:"window" json:"window"`
	// Aggression shapes the ramp: 1 is linear, above 1 ramps faster early,
	// below 1 slower. Default 1.
	Aggression *float64 `yaml:"aggression" json:"aggression,omitempty"`
	// MinWeightPercent is the floor of the effective weight, 0..100.
	// Default 10.
	MinWeightPercent *float64 `yaml:"min_weight_percent" json:"min_weight_percent,omitempty"`
}

// Validate checks the options; each error names its field under
// slow_start, and they are joined (errors.Join).
func (c *Config) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.Window < 0 || c.Window > MaxWindow {
		errs = append(errs, fmt.Errorf("slow_start.window: %v is out of range; want 0 (off) to %v", c.Window, MaxWindow))
	}
	if a := c.Aggression; a != nil && (!(*a > 0) || math.IsInf(*a, 0)) {
		errs = append(errs, fmt.Errorf("slow_start.aggression: %v must be a positive number (1 is linear)", *a))
	}
	if m := c.MinWeightPercent; m != nil && !(*m >= 0 && *m <= 100) {
		errs = append(errs, fmt.Errorf("slow_start.min_weight_percent: %v is out of range; want 0 to 100", *m))
	}
	return errors.Join(errs...)
}

// Ramp is the slow-start state of one picker: which of its nodes were
// ramping when it was built. It is immutable; a nil *Ramp accepts every
// candidate.
type Ramp struct {
	window   float64 // ns
	invAggr  float64
	minFrac  float64
	slot     []int32     // by node index: index into added, or -1
	added    []time.Time // join times of the ramping nodes
	oldest   time.Time   // earliest join time of all nodes
	now      func() time.Time
	hasAdded bool // some node has a zero join time (joined long ago)
}

// Ramp returns the ramp of a picker over nodes built at now, or nil when
// slow start is off or no node is ramping. clock is read at pick time when
// a ramping node is drawn; nil means time.Now.
func (c *Config) Ramp(nodes []*node.Node, now time.Time, clock func() time.Time) *Ramp {
	if c == nil || c.Window <= 0 || len(nodes) < 2 {
		return nil
	}
	r := &Ramp{
		window:  float64(c.Window),
		invAggr: 1 / DefaultAggression,
		minFrac: DefaultMinWeightPercent / 100,
		now:     clock,
	}
	if c.Aggression != nil {
		r.invAggr = 1 / *c.Aggression
	}
	if c.MinWeightPercent != nil {
		r.minFrac = *c.MinWeightPercent / 100
	}
	if r.now == nil {
		r.now = time.Now
	}
	for i, n := range nodes {
		added := n.Stats.Added()
		if added.IsZero() {
			r.hasAdded = true // as old as can be
			continue
		}
		if r.oldest.IsZero() || added.Before(r.oldest) {
			r.oldest = added
		}
		if now.Sub(added) >= c.Window {
			continue
		}
		if r.slot == nil {
			r.slot = make([]int32, len(nodes))
			for j := range r.slot {
				r.slot[j] = -1
			}
		}
		r.slot[i] = int32(len(r.added))
		r.added = append(r.added, added)
	}
	if r.slot == nil {
		return nil
	}
	return r
}

// factor is the share of its weight a node that joined elapsed ago gets.
func (r *Ramp) factor(elapsed time.Duration) float64 {
	if float64(elapsed) >= r.window {
		return 1
	}
	frac := max(float64(elapsed), 0) / r.window
	if r.invAggr != 1 {
		frac = math.Pow(frac, r.invAggr)
	}
	return max(frac, r.minFrac)
}

// Factor returns the effective weight factor of node i at now, relative to
// the oldest node (1 when i is not ramping).
func (r *Ramp) Factor(i int, now time.Time) float64 {
	if r == nil || r.slot[i] < 0 {
		return 1
	}
	f := r.factor(now.Sub(r.added[r.slot[i]]))
	if f >= 1 {
		return 1
	}
	fo := 1.0
	if !r.hasAdded {
		fo = r.factor(now.Sub(r.oldest))
	}
	if fo <= 0 {
		return 1 // every node is at zero: none can be preferred
	}
	return min(f/fo, 1)
}

// Ramping reports whether node i was ramping when the picker was built.
func (r *Ramp) Ramping(i int) bool { return r != nil && r.slot[i] >= 0 }

// Accept reports whether candidate i is kept, given a uniform random rnd.
// It reads the clock only when i is ramping; it does not allocate.
func (r *Ramp) Accept(i int, rnd uint64) bool {
	if r == nil || r.slot[i] < 0 {
		return true
	}
	f := r.Factor(i, r.now())
	return f >= 1 || float64(rnd>>11)*0x1p-53 < f
}
