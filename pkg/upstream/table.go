package upstream

import (
	"slices"
	"strings"
)

// Table is an immutable set of upstreams by name. A new table is built when
// the configuration changes; readers hold whichever table they loaded.
type Table struct {
	byName map[string]*Upstream
	names  []string
}

// NewTable returns a table of ups. Names must be unique (config validation
// guarantees it); a later duplicate replaces an earlier one.
func NewTable(ups ...*Upstream) *Table {
	t := &Table{byName: make(map[string]*Upstream, len(ups))}
	for _, u := range ups {
		t.byName[u.Name()] = u
	}
	for name := range t.byName {
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	return t
}

// Lookup returns the upstream named name (case-insensitively), or nil.
// It does not allocate when name is already lower case.
func (t *Table) Lookup(name string) *Upstream {
	if u, ok := t.byName[name]; ok {
		return u
	}
	return t.byName[strings.ToLower(name)]
}

// Names returns the upstream names, sorted. The slice must not be modified.
func (t *Table) Names() []string { return t.names }

// All returns the upstreams in name order.
func (t *Table) All() []*Upstream {
	out := make([]*Upstream, len(t.names))
	for i, name := range t.names {
		out[i] = t.byName[name]
	}
	return out
}

// Ready reports whether every upstream is ready (see Upstream.Ready).
func (t *Table) Ready() bool {
	for _, u := range t.byName {
		if !u.Ready() {
			return false
		}
	}
	return true
}
