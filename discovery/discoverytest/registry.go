// Package discoverytest holds test helpers for discovery: Registry, a manual
// in-memory registry; Conformance, the suite every adapter runs against
// its real server; and Partition, a relay that cuts a client off from a
// real server that stays up.
package discoverytest

import "github.com/remora-mesh/remora/discovery/static"

// Registry is a manual in-memory registry (the static adapter's store).
type Registry = static.Registry

// NewRegistry returns an empty manual registry.
func NewRegistry() *Registry { return static.NewRegistry() }
