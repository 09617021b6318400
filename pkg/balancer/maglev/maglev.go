// Package maglev implements the maglev policy: consistent hashing with a
// Maglev lookup table (Eisenbud et al., NSDI 2016; weighted as in Envoy).
// Build fills a table of table_size entries, a prime, from each node's
// permutation of the entries (derived from its ID with a fixed hash
// function), nodes taking turns in proportion to their weights; a request
// goes to the entry its key hashes to (see package hashkey): one lookup,
// no search. Adding or removing a node moves little more than that node's
// share of keys, and the same key reaches the same node across rebuilds,
// restarts and sidecars. A request without its key goes to a random node,
// by weight.
//
// The table should be much larger than the number of nodes (Maglev
// recommends 100×) for shares to follow weights closely; with more nodes
// than entries some nodes get none.
//
//	balancer:
//	  policy: maglev
//	  hash_on: {cookie: session}   # required; see hashkey.Spec
//	  table_size: 65537            # default; a prime
package maglev

import (
	"errors"
	"fmt"
	"math/big"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/balancer/internal/policy"
	"github.com/remora-mesh/remora/pkg/node"
)

// Name is the policy's name in config.
const Name = "maglev"

// Table sizes.
const (
	DefaultTableSize = 65537
	MaxTableSize     = 5000011
)

func init() { policy.Register(Name, parse) }

// Options are the policy's options in config.
type Options struct {
	// HashOn is what to hash; required.
	HashOn hashkey.Spec `yaml:"hash_on" json:"hash_on"`
	// TableSize is the number of entries, a prime; 0 means 65537.
	TableSize int `yaml:"table_size" json:"table_size,omitempty"`
}

// parse validates the options, reporting every field at fault.
func parse(o Options) (balancer.Builder, error) {
	key, err := policy.HashOn(Name, o.HashOn)
	if o.TableSize != 0 {
		err = errors.Join(err, ValidateTableSize(o.TableSize))
	}
	if err != nil {
		return nil, err
	}
	return Builder{Key: key, TableSize: o.TableSize}, nil
}

// ValidateTableSize checks a table_size option.
func ValidateTableSize(m int) error {
	if m < 3 || m > MaxTableSize || !big.NewInt(int64(m)).ProbablyPrime(0) {
		return fmt.Errorf("table_size: %d must be a prime from 3 to %d, e.g. 65537 (default), 131071, 655373", m, MaxTableSize)
	}
	return nil
}

// Builder builds Maglev pickers.
type Builder struct {
	// Key is what to hash; the zero Key sends every request to a random
	// node.
	Key hashkey.Key
	// TableSize is the number of entries, a prime; 0 means
	// DefaultTableSize.
	TableSize int
	// Rand picks a node for requests without their key; nil means
	// math/rand/v2's Uint64.
	Rand func() uint64
}

var (
	_ balancer.Builder = Builder{}
	_ hashkey.Keyed    = Builder{}
	_ balancer.Picker  = (*picker)(nil)
)

// Name implements balancer.Builder.
func (Builder) Name() string { return Name }

// HashKey implements hashkey.Keyed.
func (b Builder) HashKey() hashkey.Key { return b.Key }

// Build implements balancer.Builder.
func (b Builder) Build(nodes []*node.Node) balancer.Picker {
	if len(nodes) == 0 {
		return balancer.Empty
	}
	m := b.TableSize
	if m <= 0 {
		m = DefaultTableSize
	}
	h, ws := policy.NewHashed(nodes, b.Key, b.Rand)
	return &picker{Hashed: h, table: Table(nodes, ws, m)}
}

// Table fills a Maglev table of m entries (m prime) with indexes into
// nodes, whose weights are ws.
func Table(nodes []*node.Node, ws []uint32, m int) []int32 {
	M := uint64(m)
	// A node's permutation is (offset + skip·k) mod M for k = 0, 1, …;
	// pos is its next entry, advanced by skip (< M) with one subtraction
	// instead of a division.
	type fill struct {
		pos, skip      uint64
		weight, target uint64
	}
	fills := make([]fill, len(nodes))
	var maxW uint64
	for i, n := range nodes {
		h := hashkey.String(n.ID)
		fills[i] = fill{
			pos:    h % M,
			skip:   hashkey.Mix(h^0x9e3779b97f4a7c15)%(M-1) + 1,
			weight: uint64(ws[i]),
		}
		maxW = max(maxW, uint64(ws[i]))
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	// Each round, a node of the largest weight takes an entry, and a node
	// of weight w one round in maxW/w (Envoy's weighted Maglev).
	filled := 0
	for round := uint64(1); filled < m; round++ {
		for i := range fills {
			f := &fills[i]
			if round*f.weight < f.target {
				continue
			}
			f.target += maxW
			c := f.pos
			for table[c] >= 0 {
				if c += f.skip; c >= M {
					c -= M
				}
			}
			table[c] = int32(i)
			if c += f.skip; c >= M {
				c -= M
			}
			f.pos = c
			if filled++; filled == m {
				break
			}
		}
	}
	return table
}

// picker is immutable.
type picker struct {
	policy.Hashed
	table []int32
}

func (p *picker) Pick(info balancer.Info) *node.Node {
	h, ok := p.Key.Hash(info)
	if !ok {
		return p.Nodes[p.Random.Sample(p.Rand())]
	}
	return p.Nodes[p.table[alias.Uniform(h, len(p.table))]]
}
