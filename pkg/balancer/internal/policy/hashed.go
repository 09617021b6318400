package policy

import (
	"fmt"

	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/balancer/internal/alias"
	"github.com/remora-mesh/remora/pkg/node"
)

// HashOn compiles the hash_on option of the consistent-hash policy name,
// which requires it.
func HashOn(name string, spec hashkey.Spec) (hashkey.Key, error) {
	key, err := spec.Compile()
	if err == hashkey.ErrNoKey {
		return key, fmt.Errorf("hash_on: required; say what to hash, e.g. {policy: %s, hash_on: {header: x-user-id}} (or cookie, source_ip, path, query_parameter)", name)
	}
	return key, err
}

// Hashed is the part of a consistent-hash picker (ring_hash, maglev) that
// does not hash: its nodes, the key it hashes, and what a request without
// its key is sent by, a random node by weight:
//
//	Nodes[Random.Sample(Rand())]
//
// (written out in each Pick: as a method it would be too large to inline).
// It is immutable.
type Hashed struct {
	Nodes  []*node.Node
	Key    hashkey.Key
	Random alias.Table
	Rand   func() uint64
}

// NewHashed returns the Hashed part of a picker over nodes (not empty) and
// the weights it draws by, each node's weight but at least 1, by which the
// policy places the nodes' entries too. rand nil means math/rand/v2's
// Uint64.
func NewHashed(nodes []*node.Node, key hashkey.Key, rand func() uint64) (Hashed, []uint32) {
	ws := Weights(nodes, 1)
	return Hashed{Nodes: nodes, Key: key, Random: alias.New(ws), Rand: Rand(rand)}, ws
}
