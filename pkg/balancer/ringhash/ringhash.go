// Package ringhash implements the ring_hash policy: consistent hashing on a
// ring (Ketama). Every node owns points on a 64-bit ring in proportion to
// its weight; a request goes to the owner of the first point at or after
// the hash of its key (see package hashkey). A request without its key goes
// to a random node, by weight.
//
// A node of weight w gets w × points_per_weight points (160 by default, as
// in Ketama and nginx), placed by hashing "<node id>_<k>" with a fixed
// function, whatever the other nodes are. So a node that joins or leaves,
// or changes weight, moves only the keys of the arcs it gains or loses —
// no key moves between two nodes that stayed — and the same key reaches the
// same node across rebuilds, restarts and sidecars.
//
// (Envoy's ring_hash instead sizes the whole ring from min_ring_size, so a
// node joining shrinks every other node's share of points and moves keys
// between nodes that stayed: adding an 11th node to 10 moves about twice
// the ideal 1/11 of keys.)
//
// The ring is bounded: when the points of all nodes number fewer than
// min_ring_size (default 0: no bound), or more than max_ring_size (default
// 1,048,576), every node's count is scaled by a power of two to fit. Such a
// rescale is the one event that moves keys between nodes that stayed; the
// power of two makes it rare (the node count must halve or double). With
// 10,000 nodes of weight 2, say, the default bound gives each node 40
// points.
//
//	balancer:
//	  policy: ring_hash
//	  hash_on: {header: x-user-id}   # required; see hashkey.Spec
//	  points_per_weight: 160         # default
//	  max_ring_size: 1048576         # default
package ringhash

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	// Imported for the compiler: Pick's p.Random.Sample is inlined only
	// from a package this one imports.
	_ "github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "ring_hash"

// Ring sizes.
const (
	DefaultPointsPerWeight = 160
	MaxPointsPerWeight     = 10000
	DefaultMaxRingSize     = 1 << 20
	// MaxRingSize bounds max_ring_size (8M points, about 100 MB).
	MaxRingSize = 8 << 20
)

func init() { policy.Register(Name, parse) }

// Options are the policy's options in config.
type Options struct {
	// HashOn is what to hash; required.
	HashOn hashkey.Spec `yaml:"hash_on" json:"hash_on"`
	// PointsPerWeight is the number of points per unit of weight; 0 means
	// 160.
	PointsPerWeight int `yaml:"points_per_weight" json:"points_per_weight,omitempty"`
	// MinRingSize is the least number of points; 0 means no bound.
	MinRingSize int `yaml:"min_ring_size" json:"min_ring_size,omitempty"`
	// MaxRingSize is the most number of points; 0 means 1M.
	MaxRingSize int `yaml:"max_ring_size" json:"max_ring_size,omitempty"`
}

func parse(o Options) (balancer.Builder, error) {
	key, err := policy.HashOn(Name, o.HashOn)
	if err != nil {
		return nil, err
	}
	b := Builder{Key: key, PointsPerWeight: o.PointsPerWeight, MinRingSize: o.MinRingSize, MaxRingSize: o.MaxRingSize}
	minSize, maxSize := b.sizes()
	switch {
	case o.PointsPerWeight < 0 || o.PointsPerWeight > MaxPointsPerWeight:
		return nil, fmt.Errorf("points_per_weight: %d is out of range; want 1 to %d (default %d)", o.PointsPerWeight, MaxPointsPerWeight, DefaultPointsPerWeight)
	case minSize < 0 || minSize > MaxRingSize:
		return nil, fmt.Errorf("min_ring_size: %d is out of range; want 0 to %d", o.MinRingSize, MaxRingSize)
	case maxSize < 1 || maxSize > MaxRingSize:
		return nil, fmt.Errorf("max_ring_size: %d is out of range; want 1 to %d", o.MaxRingSize, MaxRingSize)
	case minSize > maxSize:
		return nil, fmt.Errorf("min_ring_size: %d is above max_ring_size %d", minSize, maxSize)
	}
	return b, nil
}

// Builder builds ring-hash pickers.
type Builder struct {
	// Key is what to hash; the zero Key sends every request to a random
	// node.
	Key hashkey.Key
	// PointsPerWeight is the number of points per unit of weight; 0 means
	// DefaultPointsPerWeight.
	PointsPerWeight int
	// MinRingSize and MaxRingSize bound the number of points; 0 means no
	// lower bound and DefaultMaxRingSize.
	MinRingSize, MaxRingSize int
	// Rand picks a node for requests without their key; nil means
	// math/rand/v2's Uint64.
	Rand func() uint64
}

var (
	_ balancer.Builder = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

func (b Builder) sizes() (minSize, maxSize int) {
	minSize, maxSize = b.MinRingSize, b.MaxRingSize
	if maxSize == 0 {
		maxSize = max(DefaultMaxRingSize, minSize)
	}
	return minSize, maxSize
}

// Build implements balancer.Builder.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	minSize, maxSize := b.sizes()
	ppw := b.PointsPerWeight
	if ppw <= 0 {
		ppw = DefaultPointsPerWeight
	}
	h, ws := policy.NewHashed(nodes, b.Key, b.Rand)
	p := &picker{Hashed: h}
	p.hashes, p.owners = ring(nodes, ws, ppw, minSize, maxSize)
	p.shift, p.buckets = buckets(p.hashes)
	return p
}

// buckets indexes sorted hashes by their top bits: about one bucket per
// point, buckets[b] being the index of the first hash at or above b<<shift
// (and buckets[last] = len(hashes)), so a lookup searches a bucket of about
// one point instead of the whole ring.
func buckets(hashes []uint64) (shift uint, idx []uint32) {
	bits := uint(1)
	for 1<<bits < len(hashes) && bits < 30 {
		bits++
	}
	shift = 64 - bits
	idx = make([]uint32, 1<<bits+1)
	j := 0
	for b := range idx {
		for j < len(hashes) && hashes[j]>>shift < uint64(b) {
			j++
		}
		idx[b] = uint32(j)
	}
	return shift, idx
}

// ring places the points: weight × ppw for each node, scaled by a power of
// two to fit the bounds, at least one each; node i's k-th point is at the
// hash of "<id>_<k>". It returns the points' hashes, sorted, and their
// owners.
func ring(nodes []*node.Node, ws []uint32, ppw, minSize, maxSize int) ([]uint64, []int32) {
	var total uint64
	for _, w := range ws {
		total += uint64(w) * uint64(ppw)
	}
	scale := 1.0
	for minSize > 0 && float64(total)*scale < float64(minSize) {
		scale *= 2
	}
	for float64(total)*scale > float64(maxSize) && scale > 0x1p-40 {
		scale /= 2
	}
	type point struct {
		hash  uint64
		owner int32
	}
	points := make([]point, 0, min(int(float64(total)*scale)+len(nodes), maxSize+len(nodes)))
	buf := make([]byte, 0, 64)
	for i, n := range nodes {
		count := max(1, int(float64(ws[i])*float64(ppw)*scale))
		for k := range count {
			buf = strconv.AppendInt(append(append(buf[:0], n.ID...), '_'), int64(k), 10)
			points = append(points, point{hashkey.String(string(buf)), int32(i)})
		}
	}
	slices.SortFunc(points, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.owner - b.owner)
	})
	hashes := make([]uint64, len(points))
	owners := make([]int32, len(points))
	for i, pt := range points {
		hashes[i], owners[i] = pt.hash, pt.owner
	}
	return hashes, owners
}

// picker is immutable.
type picker struct {
	policy.Hashed
	hashes  []uint64 // the points, sorted
	owners  []int32  // the node of each point
	buckets []uint32 // see buckets
	shift   uint
}

func (p *picker) Pick(info balancer.Info) *node.Node {
	h, ok := p.Key.Hash(info)
	if !ok {
		return p.Nodes[p.Random.Sample(p.Rand())]
	}
	// The first point at or after h, wrapping around.
	b := h >> p.shift
	lo, hi := int(p.buckets[b]), int(p.buckets[b+1])
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.hashes[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(p.hashes) {
		lo = 0
	}
	return p.Nodes[p.owners[lo]]
}
