// Package named is a small registry of values by name, filled from init
// functions (adapters, policies) and read while config is validated.
package named

import (
	"fmt"
	"slices"
	"sync"
)

// Registry maps names to values. It is safe for concurrent use.
type Registry[T any] struct {
	kind string // what the values are, for the duplicate panic
	mu   sync.RWMutex
	m    map[string]T
}

// New returns an empty registry of kind ("registry type", "policy").
func New[T any](kind string) *Registry[T] {
	return &Registry[T]{kind: kind, m: map[string]T{}}
}

// Add registers v under name; it panics on a duplicate, a programming error.
func (r *Registry[T]) Add(name string, v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[name]; dup {
		panic(fmt.Sprintf("%s %q registered twice", r.kind, name))
	}
	r.m[name] = v
}

// Get returns the value registered under name.
func (r *Registry[T]) Get(name string) (T, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.m[name]
	return v, ok
}

// Names lists the registered names, sorted.
func (r *Registry[T]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.m))
	for name := range r.m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
