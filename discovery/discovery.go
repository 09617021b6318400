// Package discovery defines the contract between Remora and a service
// registry: an Instance, a level-triggered Watcher that returns complete
// instance sets, and a Registry that opens watchers. Adapters (etcd, Consul,
// Nacos, static) live in sub-packages and register a Factory here under their
// type name; this package imports no registry SDK.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// DefaultWeight is the weight of an instance whose registry entry does not
// state one.
const DefaultWeight = 1

// Instance is one backend endpoint as a registry reports it.
//
// An Instance is a value; once it has been returned by Watcher.Next it is
// shared with readers on other goroutines and must not be modified, including
// its Metadata map.
type Instance struct {
	// ID is the instance's stable identity within one service. Per-node state
	// (statistics, health) is reconciled by it across updates.
	ID string
	// Address is a host name or an IP address, without a port.
	Address string
	// Port is the TCP port, 1..65535.
	Port int
	// Weight is the registry's weight. 0 drains the instance: it stays in
	// the set but receives no new requests.
	Weight uint32
	// Healthy is the registry's own verdict on the instance.
	Healthy bool
	// Metadata holds the instance's labels and tags.
	Metadata map[string]string
}

// HostPort returns "address:port", bracketing IPv6 literals.
func (in Instance) HostPort() string {
	return net.JoinHostPort(in.Address, strconv.Itoa(in.Port))
}

// Validate reports what makes the instance unusable, or nil.
func (in Instance) Validate() error {
	switch {
	case in.ID == "":
		return errors.New("instance has an empty id")
	case in.Address == "":
		return fmt.Errorf("instance %q has an empty address", in.ID)
	case in.Port < 1 || in.Port > 65535:
		return fmt.Errorf("instance %q has port %d; want 1..65535", in.ID, in.Port)
	}
	return nil
}

// Equal reports whether two instances are the same in every field.
func (in Instance) Equal(o Instance) bool {
	return in.ID == o.ID && in.Address == o.Address && in.Port == o.Port &&
		in.Weight == o.Weight && in.Healthy == o.Healthy && metadataEqual(in.Metadata, o.Metadata)
}

// metadataEqual is maps.Equal, at once for the same map: an adapter that
// keeps its unchanged instances publishes them with the same maps, and
// comparing a set with its predecessor is then cheap.
func metadataEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer() {
		return true
	}
	return maps.Equal(a, b)
}

// SortByID sorts a set in place by ID, the canonical order of a set.
func SortByID(set []Instance) {
	if slices.IsSortedFunc(set, byID) {
		return // and writes nothing: a set shared read-only stays so
	}
	slices.SortFunc(set, byID)
}

func byID(a, b Instance) int { return strings.Compare(a.ID, b.ID) }

// EqualSets reports whether a and b hold the same instances. Both must be
// sorted by ID.
func EqualSets(a, b []Instance) bool {
	return slices.EqualFunc(a, b, Instance.Equal)
}

// Watcher follows one service in a registry.
//
// Watchers are level-triggered: Next returns the complete current set, never
// a delta, and intermediate states may be coalesced. A Watcher is used by one
// goroutine at a time, except that Stop may be called concurrently with Next.
type Watcher interface {
	// Next blocks until the instance set differs from the one it returned
	// last (the first call returns the current set at once, even if empty)
	// and returns the complete set sorted by ID. An error means the registry
	// could not be read: the caller keeps its last good set and calls Next
	// again. After Stop, or when ctx ends, Next returns an error wrapping
	// ErrStopped or ctx.Err(). The set and its metadata maps are
	// read-only: a registry may hand the same set to every watcher of a
	// service.
	Next(ctx context.Context) ([]Instance, error)
	// Stop releases the watcher and unblocks a pending Next.
	Stop() error
}

// Registry opens watchers on services of one registry.
type Registry interface {
	// Watch starts following service. It does not wait for the first set.
	Watch(ctx context.Context, service string) (Watcher, error)
	// Close releases the registry's connections. Watchers opened from it
	// stop.
	Close() error
}

// ErrStopped is returned by Next after Stop.
var ErrStopped = errors.New("discovery: watcher stopped")
