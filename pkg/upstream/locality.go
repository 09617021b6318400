package upstream

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
)

// Locality configures zone-aware routing, as Envoy's: traffic stays in
// Remora's own zone while enough of that zone's nodes are healthy, and
// spills over to the other zones in proportion when they are not. A pool
// in panic mode (see health.Config.PanicThreshold) ignores zones, as
// Envoy's does: it balances over all its available nodes.
type Locality struct {
	// Zone is Remora's own zone; default: the top-level zone, or
	// $REMORA_ZONE. Without one, zones are ignored.
	Zone string `yaml:"zone"`
	// ZoneKey is the metadata key that carries a node's zone; default
	// "zone" (Kubernetes endpoints carry topology.kubernetes.io/zone).
	ZoneKey string `yaml:"zone_key"`
	// MinHealthyPercent: while at least this share of the local zone's
	// available nodes is healthy, every request stays local; below it, the
	// local zone takes the share that is healthy; default 70.
	MinHealthyPercent *int `yaml:"min_healthy_percent"`
	// MinClusterSize: a pool with fewer healthy nodes than this ignores
	// zones (a small upstream would overload one zone's nodes); default 6,
	// Envoy's.
	MinClusterSize *int `yaml:"min_cluster_size"`
}

// Validate fills defaults and checks the block; errors name fields
// relative to it.
func (l *Locality) Validate() error {
	var errs []error
	if l.ZoneKey == "" {
		l.ZoneKey = "zone"
	}
	if l.MinHealthyPercent == nil {
		v := 70
		l.MinHealthyPercent = &v
	}
	if l.MinClusterSize == nil {
		v := 6
		l.MinClusterSize = &v
	}
	if v := *l.MinHealthyPercent; v < 0 || v > 100 {
		errs = append(errs, fmt.Errorf("min_healthy_percent: %d; want 0..100", v))
	}
	if v := *l.MinClusterSize; v < 1 {
		errs = append(errs, fmt.Errorf("min_cluster_size: %d; want at least 1", v))
	}
	return errors.Join(errs...)
}

// ZoneSplit is a pool's locality split in a Snapshot: immutable.
type ZoneSplit struct {
	// Zone is the local zone.
	Zone string
	// Local chooses among the pool's nodes in the local zone, Other among
	// the rest (nil when there are none).
	Local, Other balancer.Picker
	// LocalAvailable counts them; ZoneAvailable counts the zone's
	// available nodes, healthy or not.
	LocalAvailable, ZoneAvailable int
	// Share is the share of requests kept local, 0..1.
	Share     float64
	threshold uint64 // Share as a share of 2^32
}

// local decides whether one request stays in the local zone.
func (z *ZoneSplit) local() bool {
	return z.threshold >= 1<<32 || rand.Uint64()>>32 < z.threshold
}

// zoneSplit computes the locality split of a pool: pool are the nodes the
// pool's picker chooses from, avail the pool's available nodes before
// health (the zone's size), panicked whether the pool is in panic mode. It
// returns nil when zones do not apply: no zone, a pool in panic, a pool
// smaller than min_cluster_size, no healthy local node.
//
// A pool in panic balances over all its available nodes, healthy or not
// (panic_threshold), so its nodes tell nothing of a zone's health: split
// by zone, a zone whose every node is ejected would keep every first pick
// while the other zones' healthy nodes idle. Envoy's zone-aware routing
// stands down in panic mode for the same reason.
func zoneSplit(l *Locality, pool, avail []*node.Node, panicked bool, last, lastOther *built, b *builderBox) *ZoneSplit {
	if l == nil || l.Zone == "" || panicked || len(pool) < *l.MinClusterSize {
		return nil
	}
	inZone := func(n *node.Node) bool { return n.Metadata[l.ZoneKey] == l.Zone }
	local := filter(pool, inZone)
	zone := 0
	for _, n := range avail {
		if inZone(n) {
			zone++
		}
	}
	if len(local) == 0 || zone == 0 {
		return nil
	}
	share := 1.0
	if len(local)*100 < *l.MinHealthyPercent*zone {
		share = float64(len(local)) / float64(zone)
	}
	z := &ZoneSplit{Zone: l.Zone, Local: build(last, b, local), LocalAvailable: len(local), ZoneAvailable: zone,
		Share: share, threshold: uint64(share * (1 << 32))}
	if other := filter(pool, func(n *node.Node) bool { return !inZone(n) }); len(other) > 0 {
		z.Other = build(lastOther, b, other)
	}
	return z
}
