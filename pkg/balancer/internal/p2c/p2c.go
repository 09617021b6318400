// Package p2c draws the candidates of the power-of-choices policies
// (least_request, ewma): distinct nodes, each drawn in proportion to its
// weight and to its slow-start ramp.
package p2c

import (
	"fmt"

	"github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Choice counts.
const (
	DefaultChoices = 2
	MaxChoices     = 16
	// maxRedraws bounds the draws spent avoiding a repeated candidate.
	maxRedraws = 8
)

// ValidateChoices checks a choice_count option (0 means the default).
func ValidateChoices(n int) error {
	if n != 0 && (n < 2 || n > MaxChoices) {
		return fmt.Errorf("choice_count: %d is out of range; want 2 to %d (default %d)", n, MaxChoices, DefaultChoices)
	}
	return nil
}

// Choices returns the effective choice count of option n: DefaultChoices
// for 0, else n clamped to 2…MaxChoices.
func Choices(n int) int {
	if n == 0 {
		return DefaultChoices
	}
	return max(2, min(n, MaxChoices))
}

// Sampler draws candidates; it is immutable and safe for concurrent use
// when its random source is.
type Sampler struct {
	table alias.Table
	ramp  *slowstart.Ramp
	rand  func() uint64
}

// New returns a sampler over nodes; rand nil means math/rand/v2's Uint64.
func New(nodes []*node.Node, ramp *slowstart.Ramp, rand func() uint64) Sampler {
	return Sampler{table: alias.New(policy.Weights(nodes, 0)), ramp: ramp, rand: policy.Rand(rand)}
}

// Draws is the random state of one pick: it hands out 32-bit draws, two
// per call of the random source. Keep it on the stack, one per pick.
type Draws struct {
	s    *Sampler
	buf  uint64
	have bool
}

// Start returns the random state of a new pick.
func (s *Sampler) Start() Draws { return Draws{s: s} }

func (d *Draws) u32() uint32 {
	if d.have {
		d.have = false
		return uint32(d.buf >> 32)
	}
	d.buf, d.have = d.s.rand(), true
	return uint32(d.buf)
}

// one draws a candidate by weight and ramp.
func (d *Draws) one() int {
	s := d.s
	for try := 1; ; try++ {
		i := s.table.Sample32(d.u32())
		if s.ramp == nil || try == slowstart.MaxTries || s.ramp.Accept(i, uint64(d.u32())<<32) {
			return i
		}
	}
}

// Draw returns a candidate that is not in prev, unless every node is in
// prev (fewer nodes than choices). When redraws by weight keep hitting
// prev, it falls back to the next node not in prev.
func (d *Draws) Draw(prev []int32) int {
	s := d.s
	if len(prev) == 1 && s.ramp == nil && s.table.Equal() {
		// Uniform over the others, in one draw.
		j := int((uint64(d.u32()) * uint64(s.table.Len()-1)) >> 32)
		if j >= int(prev[0]) {
			j++
		}
		return j
	}
	i := d.one()
	for range maxRedraws {
		if !contains(prev, i) {
			return i
		}
		i = d.one()
	}
	// Unlucky, or prev holds every node: the next node not in prev.
	n := s.table.Len()
	for k := 1; k < n; k++ {
		if j := (i + k) % n; !contains(prev, j) {
			return j
		}
	}
	return i
}

func contains(s []int32, v int) bool {
	for _, x := range s {
		if int(x) == v {
			return true
		}
	}
	return false
}
