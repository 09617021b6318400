// Package balancer defines how an upstream chooses a node for a request: a
// Builder turns a node list into an immutable Picker, rebuilt on every change
// to the list, and the Picker chooses per request.
//
// Policies live in sub-packages, one each, and register a Factory here from
// their init function; package balancer/all imports every policy.
package balancer

import (
	"net/http"

	"github.com/remora-mesh/remora/internal/named"
	"github.com/remora-mesh/remora/pkg/node"
)

// Info is what a Picker may look at to choose.
type Info struct {
	// Request is the request being routed, nil for TCP connections.
	Request *http.Request
	// RemoteAddr is the client's "host:port" for a connection that has no
	// Request (TCP); policies that hash on the client address read
	// Request.RemoteAddr when there is a Request. Optional.
	RemoteAddr string
}

// Picker chooses a node. Pickers are immutable and used by many goroutines
// at once: Pick must not block, lock or allocate. Per-node state it reads
// (in-flight counts, latency) lives in node.Stats atomics.
type Picker interface {
	// Pick returns a node, or nil when there is none to choose.
	Pick(info Info) *node.Node
}

// Builder builds Pickers for one upstream with its configured options.
type Builder interface {
	// Name is the policy's name as written in config.
	Name() string
	// Build returns a picker over nodes, the upstream's nodes that may
	// receive traffic, sorted by ID. nodes may be empty; Build must not
	// retain or modify the slice beyond what the Picker needs (it is not
	// modified after the call).
	Build(nodes []*node.Node) Picker
}

// Updater is a Builder that can also derive a new picker from the one it
// built for the previous nodes, doing less work than Build where a change
// touches a small part of a large structure (a hash ring). The upstream
// controller calls Update instead of Build when the policy did not change.
type Updater interface {
	Builder
	// Update returns a picker over nodes that picks as Build(nodes) would.
	// prev was returned by this Builder's Build or Update (for the same
	// upstream pool) and is not modified: it may still be in use.
	Update(prev Picker, nodes []*node.Node) Picker
}

// Factory parses a policy's options into a Builder.
type Factory interface {
	// Name is the policy's name as written in config.
	Name() string
	// Parse decodes the policy's options with decode (which rejects unknown
	// fields) and validates them; decode fills nothing when the config has
	// no options block.
	Parse(decode func(v any) error) (Builder, error)
}

// Empty is a Picker that never returns a node.
var Empty Picker = empty{}

type empty struct{}

func (empty) Pick(Info) *node.Node { return nil }

var factories = named.New[Factory]("balancer: policy")

// Register makes a policy available by name; it panics on a duplicate.
func Register(f Factory) { factories.Add(f.Name(), f) }

// Lookup returns the factory of the named policy.
func Lookup(name string) (Factory, bool) { return factories.Get(name) }

// Names lists the registered policies, sorted.
func Names() []string { return factories.Names() }
