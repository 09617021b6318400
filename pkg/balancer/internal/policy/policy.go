// Package policy holds what the policy packages share: the Factory that
// decodes a policy's options, the defaults of a Builder's random source and
// clock, node weights, the slow-start ramp of a new picker, and the cursor
// of the round-robin policies. See hashed.go for the consistent-hash
// policies' part.
package policy

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/slowstart"
	"github.com/remora-mesh/remora/pkg/node"
)

// Register registers the policy name with balancer: its options block
// decodes into an O, which parse validates and turns into a Builder.
func Register[O any](name string, parse func(O) (balancer.Builder, error)) {
	balancer.Register(factory[O]{name: name, parse: parse})
}

var _ balancer.Factory = factory[struct{}]{}

type factory[O any] struct {
	name  string
	parse func(O) (balancer.Builder, error)
}

func (f factory[O]) Name() string { return f.name }

func (f factory[O]) Parse(decode func(any) error) (balancer.Builder, error) {
	var o O
	if err := decode(&o); err != nil {
		return nil, err
	}
	return f.parse(o)
}

// Rand returns a Builder's random source r, or math/rand/v2's Uint64 when r
// is nil.
func Rand(r func() uint64) func() uint64 {
	if r == nil {
		return rand.Uint64
	}
	return r
}

// Ramp returns the slow-start ramp of a picker over nodes built now, as
// read from clock (nil means time.Now), which the ramp also reads at pick
// time; nil when c is nil or off, or no node is ramping.
func Ramp(c *slowstart.Config, nodes []*node.Node, clock func() time.Time) *slowstart.Ramp {
	if clock == nil {
		clock = time.Now
	}
	return c.Ramp(nodes, clock(), clock)
}

// Weights returns the nodes' registry weights, each raised to at least
// floor.
func Weights(nodes []*node.Node, floor uint32) []uint32 {
	ws := make([]uint32, len(nodes))
	for i, n := range nodes {
		ws[i] = max(n.Weight, floor)
	}
	return ws
}

// Cursor is the position of a round-robin walk, an atomic counter shared
// by every goroutine that picks: consecutive Nexts, from any goroutines,
// return consecutive counts, which the picker takes mod its length. It sits
// on a cache line of its own, so that its updates do not evict a picker's
// read-only fields from other cores' caches.
type Cursor struct {
	_    [64]byte
	next atomic.Uint64
	_    [56]byte
}

// Start sets the count to rnd mod n, before the picker is published.
func (c *Cursor) Start(rnd uint64, n int) { c.next.Store(rnd % uint64(n)) }

// Next returns the count and advances it. The caller takes it mod the
// length of what it indexes, in the index expression, so that the compiler
// drops the bounds check.
func (c *Cursor) Next() uint64 { return c.next.Add(1) - 1 }
