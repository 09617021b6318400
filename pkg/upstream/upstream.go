// Package upstream keeps the live node set of each upstream: one controller
// goroutine per upstream (the only writer) turns registry updates into
// immutable Snapshots published through an atomic pointer, which the request
// path reads with a single atomic load.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
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
	// Err is the registry error seen since the last good set, if any: the
	// nodes are then stale but kept.
	Err error
	// ErrAt is when Err was seen.
	ErrAt time.Time
}

// Stale reports whether the registry could not be read since the last set.
func (s *Snapshot) Stale() bool { return s.Err != nil }

// Config is what an upstream is made of.
type Config struct {
	// Name is the upstream's name, matched against the Host header.
	Name string
	// Service is the name in the registry.
	Service string
	// Balancer builds pickers; round robin when nil.
	Balancer balancer.Builder
	// Policy is the traffic policy (retries, timeouts, circuit breaking);
	// nil means the defaults.
	Policy *Policy
	// Health configures outlier detection and active probes; nil means
	// the defaults (passive detection on, no probes).
	Health *health.Config
	// Probe is how active probes speak to the nodes: as the upstream's
	// traffic does (its TLS and HTTP/2 settings).
	Probe health.Transport
	// InitialSyncTimeout is how long to wait for the registry's first set
	// before serving the on-disk snapshot, if there is one.
	InitialSyncTimeout time.Duration
	// SnapshotFile, when set, keeps the last good node set on disk: it is
	// written on every change and served (marked stale) when the registry
	// is not reached within InitialSyncTimeout at start.
	SnapshotFile string
	// Canary splits traffic to canary nodes; nil means none.
	Canary *canary.Rule
	// Previous is the upstream this one replaces on a config reload: its
	// nodes, with their stats and health, are carried over. Its controller
	// must have stopped.
	Previous *Upstream
	// Log is the logger; one that discards when nil.
	Log *logrus.Entry
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Upstream is one named group of nodes fed by one registry watch.
//
// Snapshot may be called from any goroutine. Run is the controller: exactly
// one goroutine runs it, and it is the only writer of the snapshot and of the
// per-node stats table.
type Upstream struct {
	cfg      Config
	detector *health.Detector // immutable

	active  atomic.Int64 // requests in flight (circuit breaker, retry budget)
	retries atomic.Int64 // retries in flight

	canaryStats *canary.Stats                 // per-pool outcomes, kept across reloads
	metrics     *Metrics                      // kept across reloads
	rollback    atomic.Pointer[rollbackState] // automatic rollback in force
	snap        atomic.Pointer[Snapshot]
	builder     atomic.Pointer[builderBox]
	kick        chan struct{} // capacity 1: rebuild pickers
}

type builderBox struct{ balancer.Builder }

// New returns an upstream with an empty, unsynced snapshot. Call Run to feed
// it.
func New(cfg Config) *Upstream {
	if cfg.Service == "" {
		cfg.Service = cfg.Name
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = discovery.Env{}.Logger()
	}
	cfg.Log = cfg.Log.WithField("upstream", cfg.Name)
	if cfg.Health == nil {
		cfg.Health = &health.Config{}
		if err := cfg.Health.Validate(); err != nil {
			panic(err) // the zero config is valid
		}
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{}
		if err := cfg.Policy.Validate(); err != nil {
			panic(err) // the zero policy is valid
		}
	}
	u := &Upstream{cfg: cfg, detector: health.NewDetector(cfg.Health), kick: make(chan struct{}, 1)}
	b := cfg.Balancer
	if b == nil {
		b = defaultBuilder()
	}
	u.builder.Store(&builderBox{b})
	u.snap.Store(&Snapshot{Name: cfg.Name, Picker: balancer.Empty})
	u.canaryStats, u.metrics = new(canary.Stats), new(Metrics)
	if prev := cfg.Previous; prev != nil {
		u.canaryStats, u.metrics = prev.canaryStats, prev.metrics
		u.rollback.Store(prev.rollback.Load())
		old := *prev.Snapshot()
		old.Name = cfg.Name
		u.snap.Store(&old) // republished with this upstream's picker by Run
	}
	return u
}

// Name returns the upstream's name.
func (u *Upstream) Name() string { return u.cfg.Name }

// Service returns the registry service the upstream follows.
func (u *Upstream) Service() string { return u.cfg.Service }

// Snapshot returns the current snapshot: one atomic load, no allocation.
func (u *Upstream) Snapshot() *Snapshot { return u.snap.Load() }

// SetBalancer replaces the balancing policy; the controller rebuilds the
// picker over the same nodes, whose stats are kept.
func (u *Upstream) SetBalancer(b balancer.Builder) {
	u.builder.Store(&builderBox{b})
	u.Rebuild()
}

// Policy returns the upstream's traffic policy; it must not be modified.
func (u *Upstream) Policy() *Policy { return u.cfg.Policy }

// BeginRequest counts a request in flight, or reports false (counting
// nothing) when circuit_breaker.max_requests are already in flight.
func (u *Upstream) BeginRequest() bool {
	n := u.active.Add(1)
	if limit := u.cfg.Policy.CircuitBreaker.MaxRequests; limit > 0 && n > int64(limit) {
		u.active.Add(-1)
		return false
	}
	return true
}

// EndRequest ends a request counted by BeginRequest.
func (u *Upstream) EndRequest() { u.active.Add(-1) }

// Active returns the requests in flight.
func (u *Upstream) Active() int64 { return u.active.Load() }

// TryRetry takes a place in the retry budget, or reports false when the
// retries in flight already reach budget_percent of the requests in flight
// (and min_retries). A true result is returned with EndRetry.
func (u *Upstream) TryRetry() bool {
	r := &u.cfg.Policy.Retry
	limit := max(int64(*r.MinRetries), u.active.Load()*int64(*r.BudgetPercent)/100)
	if u.retries.Add(1) > limit {
		u.retries.Add(-1)
		return false
	}
	u.metrics.Retries.Add(1)
	return true
}

// EndRetry returns a place taken by TryRetry.
func (u *Upstream) EndRetry() { u.retries.Add(-1) }

// RetriesInFlight returns the retries in flight.
func (u *Upstream) RetriesInFlight() int64 { return u.retries.Load() }

// rollbackState is an automatic canary rollback: why, when, and the canary
// nodes' labels when it tripped (a change of them clears it).
type rollbackState struct {
	reason      string
	at          time.Time
	fingerprint string
}

// CanaryStats returns the per-pool counters.
func (u *Upstream) CanaryStats() *canary.Stats { return u.canaryStats }

// RolledBack returns why the canary is rolled back and since when, or "".
func (u *Upstream) RolledBack() (string, time.Time) {
	if rb := u.rollback.Load(); rb != nil {
		return rb.reason, rb.at
	}
	return "", time.Time{}
}

// ResumeCanary clears an automatic rollback; it reports whether there was
// one.
func (u *Upstream) ResumeCanary() bool {
	if u.rollback.Swap(nil) == nil {
		return false
	}
	u.cfg.Log.Info("canary resumed by an operator")
	u.Rebuild()
	return true
}

// Observe records the outcome of an attempt on n for outlier detection and
// wakes the controller when it asks for an ejection. It is called on the
// request path: no locks, no allocations.
func (u *Upstream) Observe(n *node.Node, o health.Outcome) {
	if u.detector.Observe(&n.Stats.Health, o) {
		u.Rebuild()
	}
}

// Rebuild asks the controller to rebuild the picker (after a node's
// eligibility changed outside the registry). It never blocks.
func (u *Upstream) Rebuild() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// Ready reports whether the upstream has nodes to serve: its first set from
// the registry, or its on-disk snapshot after the initial-sync timeout.
func (u *Upstream) Ready() bool {
	s := u.snap.Load()
	return s.Synced || s.Restored
}

type update struct {
	set []discovery.Instance
	err error
}

// Run follows w until ctx ends or w stops, then stops w. It publishes a
// snapshot for every set w delivers. Registry errors mark the snapshot stale
// and keep its nodes: an unreachable registry never empties an upstream.
func (u *Upstream) Run(ctx context.Context, w discovery.Watcher) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan update)
	go func() {
		defer close(updates)
		for {
			set, err := w.Next(ctx)
			if err != nil && (ctx.Err() != nil || errors.Is(err, discovery.ErrStopped)) {
				return
			}
			select {
			case updates <- update{set, err}:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { _ = w.Stop() }()

	c := newController(u)
	var judging <-chan time.Time
	if c.judge != nil {
		t := time.NewTicker(c.judge.Window())
		defer t.Stop()
		judging = t.C
	}
	defer c.prober.Stop()
	if s := u.snap.Load(); s.Synced {
		// Carried over from a previous upstream: keep its nodes' state and
		// serve them with this upstream's policy until the registry speaks.
		c.nodes = s.Nodes
		c.prober.Update(s.Nodes)
		c.rebuild()
	}
	var restore <-chan time.Time
	if !u.snap.Load().Synced && u.cfg.SnapshotFile != "" {
		t := time.NewTimer(max(u.cfg.InitialSyncTimeout, time.Millisecond))
		defer t.Stop()
		restore = t.C
	}
	interval := time.NewTicker(u.cfg.Health.Passive.Interval)
	defer interval.Stop()
	for {
		select {
		case <-restore:
			c.restore()
		case <-ctx.Done():
			return
		case <-u.kick:
			c.rebuild()
		case <-c.timer.C:
			c.rebuild()
		case <-judging:
			c.judgeCanary()
		case <-interval.C:
			if c.ejector.Interval(u.snap.Load().Nodes, u.cfg.Now()) {
				c.rebuild()
			}
		case up, ok := <-updates:
			if !ok {
				return
			}
			if up.err != nil {
				c.fail(up.err)
				continue
			}
			c.apply(up.set)
		}
	}
}

// controller is the state owned by Run's goroutine.
type controller struct {
	u       *Upstream
	nodes   []*node.Node // last reconciled, sorted by ID: the nodes whose state is kept
	ejector *health.Ejector
	prober  *health.Prober // nil without active checks
	timer   *time.Timer    // fires when the next ejection ends

	// The pickers last built, each with the builder and the pool it was
	// built from: a rebuild over the same pool with the same builder
	// reuses it.
	stablePick, canaryPick built

	restoring   bool          // apply is serving the on-disk snapshot
	judge       *canary.Judge // nil without automatic rollback
	canaryPrint string        // fingerprint of the canary nodes last published
}

// newController returns the state Run's goroutine owns for u.
func newController(u *Upstream) *controller {
	c := &controller{
		u:       u,
		ejector: health.NewEjector(u.cfg.Health, u.cfg.Log, nil, &u.metrics.Ejections),
		prober:  health.NewProber(u.cfg.Health, u.cfg.Probe, u.Rebuild, u.cfg.Log),
		timer:   time.NewTimer(time.Hour),
		judge:   canary.NewJudge(u.cfg.Canary),
	}
	c.timer.Stop()
	return c
}

// apply reconciles set with the current nodes by instance ID, so a node that
// stays keeps its Stats, and publishes the result.
//
// Both are sorted by ID (the Watcher contract; an unsorted set is sorted
// first), so reconciling is one merge: it compares each instance with the
// node of its ID, and a node whose instance did not change is carried into
// the new snapshot as it is. Only added and changed instances allocate;
// the rest is a walk over the set.
func (c *controller) apply(set []discovery.Instance) {
	u := c.u
	old := u.snap.Load()
	now := u.cfg.Now()
	if !slices.IsSortedFunc(set, byID) {
		set = slices.Clone(set)
		slices.SortStableFunc(set, byID) // the first of duplicate IDs wins, as registered
	}
	prev := c.nodes
	nodes := make([]*node.Node, 0, len(set))
	j, added, changed, removed, moved := 0, 0, 0, 0, 0
	for i := range set {
		inst := &set[i]
		if err := inst.Validate(); err != nil {
			u.cfg.Log.WithError(err).Warn("ignoring invalid instance from the registry")
			continue
		}
		if k := len(nodes); k > 0 && nodes[k-1].ID == inst.ID {
			u.cfg.Log.WithField("node", inst.ID).Warn("ignoring duplicate instance id from the registry")
			continue
		}
		for j < len(prev) && prev[j].ID < inst.ID {
			j, removed = j+1, removed+1
		}
		if j == len(prev) || prev[j].ID != inst.ID {
			added++
			nodes = append(nodes, node.New(*inst, node.NewStats(now)))
			continue
		}
		p := prev[j]
		j++
		if p.Instance.Equal(*inst) {
			nodes = append(nodes, p)
			continue
		}
		changed++
		n := &node.Node{Instance: *inst, HostPort: p.HostPort, Stats: p.Stats}
		if inst.Address != p.Address || inst.Port != p.Port {
			n.HostPort = inst.HostPort()
			moved++
		}
		nodes = append(nodes, n)
	}
	removed += len(prev) - j
	c.nodes = nodes
	if added+removed+moved > 0 {
		c.prober.Update(nodes)
	}
	next := &Snapshot{
		Name: u.cfg.Name, Nodes: nodes, Synced: true,
		Version: old.Version + 1, UpdatedAt: now,
	}
	c.publish(next)
	u.cfg.Log.WithFields(logrus.Fields{
		"nodes": len(nodes), "available": next.Available, "added": added, "changed": changed, "removed": removed, "version": next.Version,
	}).Info("node set updated")
	if u.cfg.SnapshotFile != "" && !c.restoring {
		if err := saveSnapshot(u.cfg.SnapshotFile, u.cfg.Name, u.cfg.Service, set, now); err != nil {
			u.cfg.Log.WithError(err).Warn("could not write the on-disk snapshot")
		}
	}
}

func byID(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) }

// restore serves the on-disk snapshot when the registry has not delivered a
// set within the initial-sync timeout. A corrupt file is reported and
// ignored.
func (c *controller) restore() {
	u := c.u
	if u.snap.Load().Synced {
		return
	}
	set, saved, err := loadSnapshot(u.cfg.SnapshotFile, u.cfg.Service)
	switch {
	case err != nil:
		u.cfg.Log.WithError(err).Error("ignoring the on-disk snapshot")
		return
	case set == nil:
		u.cfg.Log.Warn("the registry has not answered and there is no on-disk snapshot; no nodes to serve yet")
		return
	}
	c.restoring = true
	c.apply(set)
	c.restoring = false
	s := *u.snap.Load()
	s.Synced, s.Restored = false, true
	s.Err = fmt.Errorf("the registry was not reached within %v; serving the on-disk snapshot saved at %s",
		u.cfg.InitialSyncTimeout, saved.Format(time.RFC3339))
	s.ErrAt = u.cfg.Now()
	u.snap.Store(&s)
	u.cfg.Log.WithField("nodes", len(set)).Warn("serving the on-disk snapshot until the registry answers")
}

// fail marks the current snapshot stale, keeping its nodes.
func (c *controller) fail(err error) {
	u := c.u
	old := u.snap.Load()
	next := *old
	next.Err, next.ErrAt = err, u.cfg.Now()
	u.snap.Store(&next)
	u.metrics.RegistryErrors.Add(1)
	u.cfg.Log.WithError(err).Warn("registry error; keeping the last known nodes")
}

// rebuild republishes the current nodes with a fresh picker.
func (c *controller) rebuild() {
	next := *c.u.snap.Load()
	c.publish(&next)
}

// judgeCanary compares the pools and rolls the canary back when it does
// worse than stable.
func (c *controller) judgeCanary() {
	u := c.u
	reason := c.judge.Evaluate(u.canaryStats)
	if reason == "" || u.rollback.Load() != nil {
		return
	}
	u.rollback.Store(&rollbackState{reason: reason, at: u.cfg.Now(), fingerprint: c.canaryPrint})
	u.cfg.Log.WithField("reason", reason).Warn("canary rolled back automatically: its weight is 0 until resumed or re-labelled")
	c.rebuild()
}

// pool returns the nodes of avail (registry-available) that may be picked:
// the eligible ones, or all of avail when fewer than the panic threshold
// are eligible (panic reported true).
func (c *controller) pool(avail []*node.Node) ([]*node.Node, bool) {
	eligible := filter(avail, (*node.Node).Eligible)
	pct := *c.u.cfg.Health.PanicThreshold
	if len(avail) > 0 && len(eligible)*100 < pct*len(avail) {
		c.u.cfg.Log.WithFields(logrus.Fields{"healthy": len(eligible), "available": len(avail), "panic_threshold": pct}).
			Warn("panic mode: too few healthy nodes; balancing over all available nodes")
		return avail, true
	}
	return eligible, false
}

// filter returns the nodes of in that keep accepts, in order: in itself
// when it accepts them all (nodes slices are never modified once built), a
// new slice otherwise.
func filter(in []*node.Node, keep func(*node.Node) bool) []*node.Node {
	for i, n := range in {
		if keep(n) {
			continue
		}
		out := make([]*node.Node, i, len(in)-1)
		copy(out, in[:i])
		for _, n := range in[i+1:] {
			if keep(n) {
				out = append(out, n)
			}
		}
		return out
	}
	return in
}

// built is a picker with what it was built from.
type built struct {
	picker  balancer.Picker
	builder *builderBox
	pool    []*node.Node
}

// build returns a picker over pool from b: last's picker when it was
// built by b over the same nodes (pickers are immutable, so it would be
// built again alike), else one updated from it when b is a
// balancer.Updater, else a new one; last becomes it.
func build(last *built, b *builderBox, pool []*node.Node) balancer.Picker {
	switch up, ok := b.Builder.(balancer.Updater); {
	case last.picker == nil || last.builder != b:
		*last = built{picker: b.Build(pool), builder: b, pool: pool}
	case slices.Equal(last.pool, pool):
	case ok:
		*last = built{picker: up.Update(last.picker, pool), builder: b, pool: pool}
	default:
		*last = built{picker: b.Build(pool), builder: b, pool: pool}
	}
	return last.picker
}

// fingerprint identifies a set of canary nodes and their labels, to notice
// a re-tag.
func fingerprint(nodes []*node.Node) string {
	var b strings.Builder
	for _, n := range nodes {
		b.WriteString(n.ID)
		keys := slices.Sorted(maps.Keys(n.Metadata))
		for _, k := range keys {
			b.WriteString("\x00" + k + "=" + n.Metadata[k])
		}
		b.WriteString("\x01")
	}
	return b.String()
}

// publish settles ejections, builds next's pickers over the eligible nodes
// of each pool (stable, and canary when configured) and stores it. When
// fewer than the panic threshold of a pool's available nodes are eligible,
// that pool balances over all of them.
func (c *controller) publish(next *Snapshot) {
	u := c.u
	now := u.cfg.Now()
	_, wake := c.ejector.Apply(next.Nodes, now)
	c.timer.Stop()
	if !wake.IsZero() {
		c.timer.Reset(max(wake.Sub(now), time.Millisecond))
	}
	rule := u.cfg.Canary
	var stable, canaries []*node.Node
	if rule == nil {
		stable = filter(next.Nodes, (*node.Node).Available)
	} else {
		stable = filter(next.Nodes, func(n *node.Node) bool { return n.Available() && !rule.IsCanary(n) })
		canaries = filter(next.Nodes, func(n *node.Node) bool { return n.Available() && rule.IsCanary(n) })
	}
	b := u.builder.Load()
	pool, stablePanic := c.pool(stable)
	next.Picker, next.StableAvailable = build(&c.stablePick, b, pool), len(pool)
	next.Available = len(pool)
	next.Panic = stablePanic
	if rule != nil {
		cpool, canaryPanic := c.pool(canaries)
		w, from := rule.WeightOf(canaries)
		fp := fingerprint(canaries)
		if rb := u.rollback.Load(); rb != nil {
			if rb.fingerprint != fp {
				u.rollback.Store(nil)
				u.cfg.Log.Info("canary instances changed their labels: automatic rollback cleared")
			} else {
				w, from = 0, "rollback"
			}
		}
		c.canaryPrint = fp
		next.Canary = canary.NewSplit(rule, build(&c.canaryPick, b, cpool), len(cpool), w, from)
		next.Available += len(cpool)
		next.Panic = next.Panic || canaryPanic
		if prev := u.snap.Load().Canary; prev == nil || prev.Weight != w || prev.WeightFrom != from {
			u.cfg.Log.WithFields(logrus.Fields{"weight": w, "from": from, "canary_nodes": len(cpool)}).Info("canary weight")
		}
	}
	u.snap.Store(next)
}
