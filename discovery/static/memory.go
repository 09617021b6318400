package static

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/remora-mesh/remora/discovery"
)

// Registry is an in-memory discovery.Registry: Set replaces a service's
// instances and every watcher of it sees the new set. The static adapter
// feeds it from the config or a file; tests drive it by hand. It is safe for
// concurrent use.
type Registry struct {
	mu       sync.Mutex
	services map[string][]discovery.Instance
	watchers map[string][]*discovery.Latest
	closed   bool
}

var _ discovery.Registry = (*Registry)(nil)

// NewRegistry returns an empty in-memory registry.
func NewRegistry() *Registry {
	return &Registry{services: map[string][]discovery.Instance{}, watchers: map[string][]*discovery.Latest{}}
}

// Replace sets every service at once: services missing from all become
// empty.
func (r *Registry) Replace(all map[string][]discovery.Instance) {
	r.mu.Lock()
	old := slices.Collect(maps.Keys(r.services))
	r.mu.Unlock()
	for name, set := range all {
		r.Set(name, set...)
	}
	for _, name := range old {
		if _, kept := all[name]; !kept {
			r.Set(name)
		}
	}
}

// FailAll makes every watcher report err once.
func (r *Registry) FailAll(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ls := range r.watchers {
		for _, l := range ls {
			l.Fail(err)
		}
	}
}

// Set replaces the instances of service. The registry keeps a copy of set,
// metadata included, sorted by ID with its equal metadata maps shared, and
// publishes that one copy to every watcher: it is read-only once published
// (Latest writes nothing to such a set), so a million instances are held
// once, not once per watcher.
func (r *Registry) Set(service string, set ...discovery.Instance) {
	own := discovery.CloneSet(set)
	discovery.SortByID(own)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(own) == 0 {
		delete(r.services, service)
	} else {
		r.services[service] = own
	}
	for _, l := range r.watchers[service] {
		l.Publish(own)
	}
}

// Upsert adds inst to service or replaces the instance with its ID.
func (r *Registry) Upsert(service string, inst discovery.Instance) {
	r.mu.Lock()
	set := slices.DeleteFunc(slices.Clone(r.services[service]), func(i discovery.Instance) bool { return i.ID == inst.ID })
	r.mu.Unlock()
	r.Set(service, append(set, inst)...)
}

// Delete removes the instance with id from service.
func (r *Registry) Delete(service, id string) {
	r.mu.Lock()
	set := slices.DeleteFunc(slices.Clone(r.services[service]), func(i discovery.Instance) bool { return i.ID == id })
	r.mu.Unlock()
	r.Set(service, set...)
}

// Fail makes every watcher of service report err once, as an unreachable
// registry would.
func (r *Registry) Fail(service string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.watchers[service] {
		l.Fail(err)
	}
}

// Watch implements discovery.Registry.
func (r *Registry) Watch(_ context.Context, service string) (discovery.Watcher, error) {
	return r.watch(service, nil), nil
}

// watch opens a watcher whose first report is the current set, or failed
// when it is not nil.
func (r *Registry) watch(service string, failed error) *watcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := discovery.NewLatest()
	if r.closed {
		_ = l.Stop()
	}
	if failed != nil {
		l.Fail(failed)
	} else {
		l.Publish(r.services[service])
	}
	r.watchers[service] = append(r.watchers[service], l)
	return &watcher{Latest: l, stop: func() { r.forget(service, l) }}
}

func (r *Registry) forget(service string, l *discovery.Latest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers[service] = slices.DeleteFunc(r.watchers[service], func(x *discovery.Latest) bool { return x == l })
}

// Close implements discovery.Registry; it stops every watcher.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, ls := range r.watchers {
		for _, l := range ls {
			l.Stop()
		}
	}
	return nil
}

type watcher struct {
	*discovery.Latest
	stop func()
}

func (w *watcher) Stop() error {
	w.stop()
	return w.Latest.Stop()
}
