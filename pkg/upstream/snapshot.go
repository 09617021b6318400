package upstream

import (
	"time"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
)

// Snapshot is the state of an upstream at one moment. It is immutable once
// published: readers on any goroutine may use it without synchronisation,
// and a change produces a new Snapshot.
type Snapshot struct {
	// Name is the upstream's name.
	Name string
	// Nodes holds every instance the registry reports, sorted by ID,
	// including those that may not receive traffic.
	Nodes []*node.Node
	// Picker chooses among the nodes that may receive traffic; never nil.
	Picker balancer.Picker
	// Available counts the nodes the Picker chooses from (all nodes the
	// registry allows when Panic).
	Available int
	// Synced is true once the registry delivered a first set.
	Synced bool
	// Restored is true while the nodes come from the on-disk snapshot
	// (the registry was not reached at start).
	Restored bool
	// Version counts published node sets, starting at 1 for the first.
	Version uint64
	// UpdatedAt is when the registry last delivered a set.
	UpdatedAt time.Time
	// Panic is true when fewer nodes pass health than the panic threshold
	// and the picker balances over every available node instead.
	Panic bool
	// StableAvailable counts the nodes Picker chooses from; Available
	// adds the canary's.
	StableAvailable int
	// Canary is the canary split, nil without a canary rule. Picker then
	// serves the stable pool only.
	Canary *canary.Split
	// StableZone and CanaryZone are each pool's locality split, nil when
	// zones do not apply (see Locality).
	StableZone, CanaryZone *ZoneSplit
	// Err is the registry error seen since the last good set, if any: the
	// nodes are then stale but kept.
	Err error
	// ErrAt is when Err was seen.
	ErrAt time.Time
}

// Stale reports whether the registry could not be read since the last set.
func (s *Snapshot) Stale() bool { return s.Err != nil }
