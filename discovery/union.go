package discovery

import (
	"context"
	"errors"
	"maps"
	"sync"
)

// Part is one watcher of a Union and how its instances are marked.
type Part struct {
	Watcher Watcher
	// Relabel returns a changed copy of an instance (to prefix its ID or
	// add a label); nil keeps instances as they are. It must not modify
	// its argument's Metadata map: clone it first (CloneMetadata).
	Relabel func(Instance) Instance
}

// Union watches several services as one: Next returns the instances of
// every part, relabelled. The first set is returned once every part
// delivered its own; an error of any part is returned as "stale". Stop
// stops every part.
func Union(parts ...Part) Watcher {
	u := &union{Latest: NewLatest(), parts: parts, sets: make([][]Instance, len(parts)), got: make([]bool, len(parts))}
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	for i := range parts {
		u.wg.Add(1)
		go u.follow(ctx, i)
	}
	return u
}

type union struct {
	*Latest
	parts  []Part
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	sets [][]Instance
	got  []bool
}

func (u *union) follow(ctx context.Context, i int) {
	defer u.wg.Done()
	p := u.parts[i]
	for {
		set, err := p.Watcher.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrStopped) {
				return
			}
			u.Fail(err)
			continue
		}
		if p.Relabel != nil {
			out := make([]Instance, len(set))
			for j, in := range set {
				out[j] = p.Relabel(in)
			}
			set = out
		}
		u.mu.Lock()
		u.sets[i], u.got[i] = set, true
		ready := true
		var all []Instance
		for j, s := range u.sets {
			ready = ready && u.got[j]
			all = append(all, s...)
		}
		u.mu.Unlock()
		if ready {
			u.Publish(all)
		}
	}
}

// Stop implements Watcher.
func (u *union) Stop() error {
	u.cancel()
	var errs []error
	for _, p := range u.parts {
		errs = append(errs, p.Watcher.Stop())
	}
	u.wg.Wait()
	errs = append(errs, u.Latest.Stop())
	return errors.Join(errs...)
}

// CloneSet returns a copy of set whose instances have metadata maps of
// their own (a nil map stays nil).
func CloneSet(set []Instance) []Instance {
	out := make([]Instance, len(set))
	for i, in := range set {
		in.Metadata = maps.Clone(in.Metadata)
		out[i] = in
	}
	return out
}

// CloneMetadata returns a copy of m that may be modified, never nil.
func CloneMetadata(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}
