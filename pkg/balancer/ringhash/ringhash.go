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
// 262,144), every node's count is scaled by a power of two to fit. Such a
// rescale is the one event that moves keys between nodes that stayed; the
// power of two makes it rare (the node count must halve or double). Up to
// 1,638 nodes of weight 1 keep their 160 points; with 10,000, say, the
// default bound gives each node 20 (a node's share of keys then strays
// from the mean by about 22%, one standard deviation, against 8% with
// 160).
//
// The default bound keeps a one-node change to a 10,000-node upstream
// under 5 ms (the new ring is a copy of the old with the change merged
// in; at 1M points that copy alone takes 7 ms or more): raise
// max_ring_size for an evener spread over very many nodes at the price of
// slower updates and 24 to 32 bytes of memory per point (the point, its
// owner and one or two buckets).
//
//	balancer:
//	  policy: ring_hash
//	  hash_on: {header: x-user-id}   # required; see hashkey.Spec
//	  points_per_weight: 160         # default
//	  max_ring_size: 262144          # default
package ringhash

import (
	"cmp"
	"errors"
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
	DefaultMaxRingSize     = 1 << 18
	// MaxRingSize bounds max_ring_size (8M points, about 200 MB).
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

// parse validates the options, reporting every field at fault.
func parse(o Options) (balancer.Builder, error) {
	key, err := policy.HashOn(Name, o.HashOn)
	errs := []error{err}
	b := Builder{Key: key, PointsPerWeight: o.PointsPerWeight, MinRingSize: o.MinRingSize, MaxRingSize: o.MaxRingSize}
	minSize, maxSize := b.sizes()
	if o.PointsPerWeight < 0 || o.PointsPerWeight > MaxPointsPerWeight {
		errs = append(errs, fmt.Errorf("points_per_weight: %d is out of range; want 1 to %d (default %d)", o.PointsPerWeight, MaxPointsPerWeight, DefaultPointsPerWeight))
	}
	minOK := minSize >= 0 && minSize <= MaxRingSize
	if !minOK {
		errs = append(errs, fmt.Errorf("min_ring_size: %d is out of range; want 0 to %d", o.MinRingSize, MaxRingSize))
	}
	maxOK := maxSize >= 1 && maxSize <= MaxRingSize
	if !maxOK {
		errs = append(errs, fmt.Errorf("max_ring_size: %d is out of range; want 1 to %d", o.MaxRingSize, MaxRingSize))
	}
	if minOK && maxOK && minSize > maxSize {
		errs = append(errs, fmt.Errorf("min_ring_size: %d is above max_ring_size %d", minSize, maxSize))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
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
	_ balancer.Updater = Builder{}
	_ hashkey.Keyed    = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

// HashKey implements hashkey.Keyed.
func (b Builder) HashKey() hashkey.Key { return b.Key }

func (b Builder) sizes() (minSize, maxSize int) {
	minSize, maxSize = b.MinRingSize, b.MaxRingSize
	if maxSize == 0 {
		maxSize = max(DefaultMaxRingSize, minSize)
	}
	return minSize, maxSize
}

func (b Builder) ppw() int {
	if b.PointsPerWeight <= 0 {
		return DefaultPointsPerWeight
	}
	return b.PointsPerWeight
}

// Build implements balancer.Builder.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	minSize, maxSize := b.sizes()
	ppw := b.ppw()
	h, ws := policy.NewHashed(nodes, b.Key, b.Rand)
	p := &picker{Hashed: h, ppw: ppw, minSize: minSize, maxSize: maxSize}
	p.scale = scaleOf(ws, ppw, minSize, maxSize)
	p.points = ring(nodes, ws, ppw, p.scale, maxSize)
	p.shift, p.buckets = buckets(p.points)
	return p
}

// Update implements balancer.Updater. The points of a node depend on its ID
// and count only, so the new ring keeps the points of the nodes that stay
// with the same count, drops those of the others and places those of the
// new: the result is the ring Build would make, in time linear in the
// ring's size (a merge) but hashing and sorting only the points that
// change. It builds afresh when the scale changes (see the package
// comment), when the nodes are not in ID order, or when a quarter of the
// ring or more changes.
func (b Builder) Update(prev balancer.Picker, nodes []*node.Node) balancer.Picker {
	if old, ok := prev.(*picker); ok {
		if p := b.update(old, nodes); p != nil {
			return p
		}
	}
	return b.Build(nodes)
}

// update is Update from a ring picker, or nil when Build should build
// afresh.
func (b Builder) update(old *picker, nodes []*node.Node) *picker {
	minSize, maxSize := b.sizes()
	ppw := b.ppw()
	if len(nodes) == 0 || old.ppw != ppw || old.minSize != minSize || old.maxSize != maxSize ||
		!sortedByID(nodes) || !sortedByID(old.Nodes) {
		return nil
	}
	h, ws := policy.NewHashed(nodes, b.Key, b.Rand)
	scale := scaleOf(ws, ppw, minSize, maxSize)
	if scale != old.scale {
		return nil
	}
	// Match the old nodes to the new by ID: remap[j] is the new index of
	// old node j, or -1 when its points go.
	remap := make([]int32, len(old.Nodes))
	var fresh []int32 // new nodes whose points are placed
	dropped, placed, i := 0, 0, 0
	for j, on := range old.Nodes {
		for i < len(nodes) && nodes[i].ID < on.ID {
			fresh, placed = append(fresh, int32(i)), placed+count(ws[i], ppw, scale)
			i++
		}
		oc := count(max(on.Weight, 1), ppw, scale)
		remap[j] = -1
		if i < len(nodes) && nodes[i].ID == on.ID {
			if c := count(ws[i], ppw, scale); c == oc {
				remap[j] = int32(i)
			} else {
				fresh, placed = append(fresh, int32(i)), placed+c
			}
			i++
		}
		if remap[j] < 0 {
			dropped += oc
		}
	}
	for ; i < len(nodes); i++ {
		fresh, placed = append(fresh, int32(i)), placed+count(ws[i], ppw, scale)
	}
	if 4*(dropped+placed) >= len(old.points) {
		return nil
	}
	add := make([]point, 0, placed)
	buf := make([]byte, 0, 64)
	for _, i := range fresh {
		add, buf = appendPoints(add, buf, nodes[i].ID, count(ws[i], ppw, scale), i)
	}
	slices.SortFunc(add, point.compare)
	// Where the old points of the dropped nodes are, found by their hashes.
	drop := make([]int, 0, dropped)
	var gone []point
	for j, on := range old.Nodes {
		if remap[j] >= 0 {
			continue
		}
		gone, buf = appendPoints(gone[:0], buf, on.ID, count(max(on.Weight, 1), ppw, scale), int32(j))
		for _, pt := range gone {
			x, _ := slices.BinarySearchFunc(old.points, pt.hash, point.compareHash)
			for old.points[x].owner != pt.owner { // ties of hashes
				x++
			}
			drop = append(drop, x)
		}
	}
	slices.Sort(drop)
	for i := 1; i < len(drop); i++ {
		if drop[i] == drop[i-1] { // two points of a node at one hash
			return nil
		}
	}
	// The new ring is the old one cut at the dropped points and at the
	// places of the new ones: runs of old points are copied, and their
	// owners renumbered.
	n := len(old.points) - dropped + len(add)
	p := &picker{Hashed: h, ppw: ppw, minSize: minSize, maxSize: maxSize, scale: scale}
	p.points = make([]point, n)
	k, x, a, d := 0, 0, 0, 0
	for {
		end, dropping, adding := len(old.points), false, false
		if d < len(drop) {
			end, dropping = drop[d], true
		}
		if a < len(add) {
			if at := old.insertAt(add[a], remap, x); at <= end {
				end, dropping, adding = at, false, true
			}
		}
		for _, pt := range old.points[x:end] {
			p.points[k] = point{pt.hash, remap[pt.owner]}
			k++
		}
		x = end
		switch {
		case adding:
			p.points[k] = add[a]
			k, a = k+1, a+1
			continue
		case dropping:
			x, d = x+1, d+1
			continue
		}
		break
	}
	if k != n {
		return nil // cannot happen: the test checks every merge against Build
	}
	p.shift, p.buckets = rebucket(old, p.points, add, drop)
	return p
}

// insertAt returns the index of the first old point from x on that sorts
// after pt, the old owners being renumbered by remap (dropped ones, -1,
// sort first among equal hashes: they go anyway).
func (p *picker) insertAt(pt point, remap []int32, x int) int {
	i, _ := slices.BinarySearchFunc(p.points[x:], pt.hash, point.compareHash)
	i += x
	for i < len(p.points) && p.points[i].hash == pt.hash && remap[p.points[i].owner] < pt.owner {
		i++
	}
	return i
}

// rebucket returns the buckets of points, the old ring's with the added
// points placed and the dropped ones removed: the old buckets shifted by
// the count of points added and dropped before each when the number of
// buckets is the same, counted afresh otherwise.
func rebucket(old *picker, points []point, add []point, drop []int) (uint, []bucket) {
	shift := bucketShift(len(points))
	if shift != old.shift {
		return buckets(points)
	}
	// events: the first bucket past each added (+1) and dropped (-1)
	// point, in order.
	type event struct {
		b     uint64
		delta int32
	}
	events := make([]event, 0, len(add)+len(drop))
	for _, pt := range add {
		events = append(events, event{pt.hash>>shift + 1, 1})
	}
	for _, x := range drop {
		events = append(events, event{old.points[x].hash>>shift + 1, -1})
	}
	slices.SortFunc(events, func(a, b event) int { return cmp.Compare(a.b, b.b) })
	idx := slices.Clone(old.buckets)
	var delta uint32
	for e, ev := range events {
		delta += uint32(ev.delta)
		end := uint64(len(idx))
		if e+1 < len(events) {
			end = events[e+1].b
		}
		for b := ev.b; b < end; b++ {
			idx[b].start += delta
		}
	}
	ownBuckets(idx, points)
	return shift, idx
}

func sortedByID(nodes []*node.Node) bool {
	for i := 1; i < len(nodes); i++ {
		if nodes[i-1].ID >= nodes[i].ID {
			return false
		}
	}
	return true
}

// buckets indexes sorted points by the top bits of their hashes: about one
// bucket per point, buckets[b].start being the index of the first point at or
// above b<<shift (and buckets[last] = len(points)), so a lookup searches a
// bucket of about one point instead of the whole ring.
func buckets(points []point) (shift uint, idx []bucket) {
	shift = bucketShift(len(points))
	bits := 64 - shift
	// Count the hashes of each bucket into the entry after it, then sum:
	// no branch depends on the hashes, which a search per bucket
	// mispredicts at about every bucket.
	idx = make([]bucket, 1<<bits+1)
	for _, pt := range points {
		idx[pt.hash>>shift+1].start++
	}
	for b := 1; b < len(idx); b++ {
		idx[b].start += idx[b-1].start
	}
	ownBuckets(idx, points)
	return shift, idx
}

// bucket is where a bucket's points start, and the owner of the first
// point at or after them (wrapping around): the answer for every hash of
// a bucket without points, found without reading the points.
type bucket struct {
	start uint32
	owner int32
}

// ownBuckets sets the owner of each bucket from its start.
func ownBuckets(idx []bucket, points []point) {
	if len(points) == 0 {
		return
	}
	for b := range idx {
		i := idx[b].start
		if int(i) == len(points) {
			i = 0
		}
		idx[b].owner = points[i].owner
	}
}

// bucketShift returns the shift of the buckets of n points.
func bucketShift(n int) uint {
	bits := uint(1)
	for 1<<bits < n && bits < 30 {
		bits++
	}
	return 64 - bits
}

// scaleOf returns the power of two by which every node's weight × ppw
// points are scaled so that the ring fits the bounds.
func scaleOf(ws []uint32, ppw, minSize, maxSize int) float64 {
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
	return scale
}

// count returns the points of a node of weight w: w × ppw × scale, at
// least one.
func count(w uint32, ppw int, scale float64) int {
	return max(1, int(float64(w)*float64(ppw)*scale))
}

// point is a point of the ring and its owner, an index into the nodes:
// together, so that a lookup finds both in one cache line.
type point struct {
	hash  uint64
	owner int32
}

// compareHash orders a point and a hash, for a binary search.
func (a point) compareHash(h uint64) int { return cmp.Compare(a.hash, h) }

// compare orders points by hash, then owner (a tie of two nodes' hashes
// goes to the first by ID).
func (a point) compare(b point) int {
	switch {
	case a.hash < b.hash:
		return -1
	case a.hash > b.hash:
		return 1
	}
	return int(a.owner - b.owner)
}

// appendPoints appends the count points of the node id, owner: its k-th
// is at the hash of "<id>_<k>". buf is scratch space, returned for reuse.
func appendPoints(points []point, buf []byte, id string, count int, owner int32) ([]point, []byte) {
	for k := range count {
		buf = strconv.AppendInt(append(append(buf[:0], id...), '_'), int64(k), 10)
		points = append(points, point{hashkey.String(string(buf)), owner})
	}
	return points, buf
}

// ring places the points: weight × ppw for each node, times scale, at
// least one each (see appendPoints). It returns them sorted.
func ring(nodes []*node.Node, ws []uint32, ppw int, scale float64, maxSize int) []point {
	var total uint64
	for _, w := range ws {
		total += uint64(w) * uint64(ppw)
	}
	points := make([]point, 0, min(int(float64(total)*scale)+len(nodes), maxSize+len(nodes)))
	buf := make([]byte, 0, 64)
	for i, n := range nodes {
		points, buf = appendPoints(points, buf, n.ID, count(ws[i], ppw, scale), int32(i))
	}
	slices.SortFunc(points, point.compare)
	return points
}

// picker is immutable.
type picker struct {
	policy.Hashed
	points  []point  // sorted by hash, then owner
	buckets []bucket // see buckets
	shift   uint

	// What the ring was built with, for Update.
	ppw, minSize, maxSize int
	scale                 float64
}

func (p *picker) Pick(info balancer.Info) *node.Node {
	h, ok := p.Key.Hash(info)
	if !ok {
		return p.Nodes[p.Random.Sample(p.Rand())]
	}
	// The first point at or after h, wrapping around.
	b := h >> p.shift
	lo, hi := int(p.buckets[b].start), int(p.buckets[b+1].start)
	if lo == hi {
		return p.Nodes[p.buckets[b].owner]
	}
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.points[mid].hash < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(p.points) {
		lo = 0
	}
	return p.Nodes[p.points[lo].owner]
}
