package discovery

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"slices"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/retry"
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
// delivered its own; an error of any part is returned as "stale", and
// again after each set until that part delivers again. Stop stops every
// part.
func Union(parts ...Part) Watcher {
	u := &union{Latest: NewLatest(), parts: parts, sets: make([][]Instance, len(parts)), got: make([]bool, len(parts)), fails: make([]error, len(parts))}
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

	mu    sync.Mutex
	sets  [][]Instance
	got   []bool
	fails []error // by part: its last Next failed
}

// unionLog is where a union logs a panic it contained: a union has no
// logger of its own (it is built from two watchers), so it is logrus'
// standard logger, on standard error. Tests replace it.
var unionLog = logrus.NewEntry(logrus.StandardLogger())

// follow follows part i until ctx ends or the part stops. A panic in it
// (the part's Next, its Relabel) is contained to the part: it is logged
// with its stack (once a minute at most) and reported as the part's error,
// which keeps the union stale with its last set, and the part is followed
// again after PanicPause, beginning with the set it was handling, if any;
// should that set make it panic again, the part's next set is awaited.
func (u *union) follow(ctx context.Context, i int) {
	defer u.wg.Done()
	var held heldSet
	Rerun(unionLog.WithField("part", i), func(err error) { u.failPart(i, err) },
		func() bool { return retry.Sleep(ctx, PanicPause) }, func() { u.followPart(ctx, i, &held) })
}

// heldSet is the set a part's follower was handling, kept across its
// restart after a panic.
type heldSet struct {
	set     []Instance
	held    bool // set is being handled
	retried bool // and the follower started again with it once
}

// failPart records err as part i's and reports it.
func (u *union) failPart(i int, err error) {
	u.mu.Lock()
	u.fails[i] = err
	u.mu.Unlock()
	u.Fail(err)
}

// followPart is follow's loop.
func (u *union) followPart(ctx context.Context, i int, held *heldSet) {
	p := u.parts[i]
	if held.held && held.retried {
		*held = heldSet{} // it made the follower panic twice
	}
	for {
		if !held.held {
			set, err := p.Watcher.Next(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrStopped) {
					return
				}
				u.failPart(i, err)
				continue
			}
			*held = heldSet{set: set, held: true}
		} else {
			held.retried = true
		}
		set := held.set
		if p.Relabel != nil {
			out := make([]Instance, len(set))
			for j, in := range set {
				out[j] = p.Relabel(in)
			}
			set = out
		}
		u.merge(i, set)
		*held = heldSet{}
	}
}

// merge records set as part i's and publishes the union once every part
// delivered a set.
func (u *union) merge(i int, set []Instance) {
	u.mu.Lock()
	defer u.mu.Unlock() // and on a panic: the part is followed again
	u.sets[i], u.got[i], u.fails[i] = set, true, nil
	ready := true
	var all []Instance
	var failing error
	for j, s := range u.sets {
		ready = ready && u.got[j]
		all = append(all, s...)
		if failing == nil {
			failing = u.fails[j]
		}
	}
	if ready {
		// Under mu, so that a part's error cannot come between.
		u.Publish(all)
		if failing != nil {
			// Publishing clears a reported error; a part that still
			// fails keeps the union stale.
			u.Fail(failing)
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
	out := slices.Clone(set)
	ShareMetadata(out)
	var done []map[string]string // the shared maps cloned so far, and their clones
	for i := range out {
		m := out[i].Metadata
		if m == nil {
			continue
		}
		j := 0
		for j < len(done) && !sameMap(done[j], m) {
			j += 2
		}
		if j == len(done) {
			done = append(done, m, maps.Clone(m))
		}
		out[i].Metadata = done[j+1]
	}
	return out
}

// maxShared bounds the distinct maps ShareMetadata compares each instance's
// with: a set of instances that each carry labels of their own (a pod
// name) costs at most this many comparisons per instance.
const maxShared = 16

// ShareMetadata makes the instances of set whose metadata are equal share
// one map, the first of them. It writes nothing to a set whose equal maps
// are shared already, so such a set may itself be shared read-only.
//
// An adapter decodes a map per instance, and an upstream's instances
// mostly carry the same few labels: with 100 instances, one map instead
// of 100 (a map of two labels takes about 300 bytes). Metadata are
// read-only once published, so sharing is safe.
func ShareMetadata(set []Instance) {
	var seen []map[string]string
	for i := range set {
		m := set[i].Metadata
		if len(m) == 0 {
			continue
		}
		shared := false
		for _, s := range seen {
			if sameMap(s, m) {
				shared = true // already: nothing to write
				break
			}
			if maps.Equal(s, m) {
				set[i].Metadata, shared = s, true
				break
			}
		}
		if !shared && len(seen) < maxShared {
			seen = append(seen, m)
		}
	}
}

// sameMap reports whether a and b are the same map (not only equal).
func sameMap(a, b map[string]string) bool {
	return len(a) == len(b) && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// CloneMetadata returns a copy of m that may be modified, never nil.
func CloneMetadata(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}
