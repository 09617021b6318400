// Package alias samples indexes in proportion to integer weights in O(1)
// time with Vose's alias method, using one 64-bit random number per sample
// and no allocation. It is shared by the weighted policies.
package alias

import "math/bits"

// Table is an immutable alias table over n weights; safe for concurrent use.
type Table struct {
	entries []entry // nil when every weight is equal
	n       uint64
}

// entry is one column: it yields its own index with probability
// thresh/2^64 and alias otherwise.
type entry struct {
	thresh uint64
	alias  uint32
}

// New returns a table over weights. A zero weight is never sampled unless
// every weight is zero, in which case sampling is uniform. New panics when
// there are 2^32 or more weights.
func New(weights []uint32) Table {
	n := uint64(len(weights))
	if n >= 1<<32 {
		panic("alias: too many weights")
	}
	t := Table{n: n}
	var total uint64
	equal := true
	for _, w := range weights {
		total += uint64(w)
		equal = equal && w == weights[0]
	}
	if n == 0 || equal || total == 0 {
		return t
	}
	// Vose's method in integers: column i holds p[i] = w[i]*n of the
	// total mass, and each column is filled up to total.
	p := make([]uint64, n)
	small := make([]uint32, 0, n)
	large := make([]uint32, 0, n)
	for i, w := range weights {
		p[i] = uint64(w) * n
		if p[i] < total {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	t.entries = make([]entry, n)
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		thresh, _ := bits.Div64(p[s], 0, total) // p[s] < total
		t.entries[s] = entry{thresh: thresh, alias: l}
		p[l] -= total - p[s]
		if p[l] < total {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// What is left is full up to rounding.
	for _, i := range append(small, large...) {
		t.entries[i] = entry{thresh: ^uint64(0), alias: i}
	}
	return t
}

// Len is the number of weights.
func (t *Table) Len() int { return int(t.n) }

// Sample maps a uniform random r to an index.
func (t *Table) Sample(r uint64) int {
	col, frac := bits.Mul64(r, t.n)
	if t.entries == nil {
		return int(col)
	}
	if e := &t.entries[col]; frac >= e.thresh {
		return int(e.alias)
	}
	return int(col)
}

// Sample32 is Sample for a 32-bit random r: half the randomness, at a
// resolution of 2^-32 on the probabilities.
func (t *Table) Sample32(r uint32) int {
	x := uint64(r) * t.n
	col, frac := x>>32, uint32(x)
	if t.entries == nil {
		return int(col)
	}
	if e := &t.entries[col]; frac >= uint32(e.thresh>>32) && e.thresh != ^uint64(0) {
		return int(e.alias)
	}
	return int(col)
}

// Equal reports whether every weight is equal (sampling is uniform).
func (t *Table) Equal() bool { return t.entries == nil }

// Uniform maps a uniform random r to [0, n) without division (Lemire's
// multiply-shift).
func Uniform(r uint64, n int) int {
	hi, _ := bits.Mul64(r, uint64(n))
	return int(hi)
}
