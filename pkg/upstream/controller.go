package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
)

// The controller: Run's goroutine, the only writer of an upstream's
// snapshot and of its per-node stats table. It turns registry sets,
// registry errors, ejections, probe verdicts and canary judgements into
// snapshots.

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
	defer func() { _ = w.Stop() }()
	// A Poller is followed from this goroutine; any other watcher by a
	// goroutine blocked in Next.
	poller, _ := w.(discovery.Poller)
	var updates chan update
	if poller == nil {
		updates = make(chan update)
		go follow(ctx, w, updates, u.cfg.Log)
	}
	c := newController(u)
	defer c.stop()
	c.start()
	var panicked panics.Log
	for {
		// A bug in a policy, a probe's callback or the registry's data
		// must not end the process, whose other upstreams serve on: a
		// panic keeps the nodes, marked stale with it as their error,
		// and the loop goes on, after a pause that keeps a panic that
		// repeats from spinning.
		p := c.loop(ctx.Done(), poller, updates)
		if p == nil {
			return
		}
		panicked.Log(u.cfg.Log, p, "the upstream's controller panicked; keeping its nodes, marked stale")
		c.fail(fmt.Errorf("the upstream's controller panicked: %w", p))
		select {
		case <-ctx.Done():
			return
		case <-time.After(discovery.PanicPause):
		}
	}
}

// start readies the controller's clocks and, for an upstream carried over
// from a previous one, serves its nodes with this upstream's policy until
// the registry speaks.
func (c *controller) start() {
	u := c.u
	if c.judge != nil {
		c.judging = time.NewTicker(c.judge.Window())
	}
	if s := u.snap.Load(); s.Synced || s.Restored {
		// Carried over, from the registry or the on-disk snapshot: keep
		// its nodes' state.
		c.nodes = s.Nodes
		c.prober.Update(s.Nodes)
		c.rebuild()
	} else if u.cfg.SnapshotFile != "" {
		wait := u.started.Add(u.cfg.InitialSyncTimeout).Sub(u.cfg.Now())
		c.restoreAt = time.NewTimer(max(wait, time.Millisecond))
	}
	c.interval = time.NewTicker(u.cfg.Health.Passive.Interval)
}

// stop releases what start and newController took.
func (c *controller) stop() {
	c.prober.Stop()
	c.timer.Stop()
	c.interval.Stop()
	if c.judging != nil {
		c.judging.Stop()
	}
	if c.restoreAt != nil {
		c.restoreAt.Stop()
	}
}

// loop is the controller's event loop; it returns when done is closed, the
// poller stops, or updates is closed. Its frame is kept small on purpose:
// the goroutine of each of ten thousand upstreams parks here, and a parked
// stack that uses under a quarter of its size is halved by the GC (4 KiB
// rather than 8 KiB an upstream). For the same reason it contains a panic
// of its own (returned as panicked) instead of running under
// panics.Catch, whose two frames beneath the parked select kept the
// stack at 8 KiB.
func (c *controller) loop(done <-chan struct{}, p discovery.Poller, updates <-chan update) (panicked *panics.Error) {
	defer func() {
		if v := recover(); v != nil {
			panicked = panics.New(v)
		}
	}()
	var ready, stopped <-chan struct{}
	if p != nil {
		ready, stopped = p.Ready(), p.Done()
	}
	var judging, restoreAt <-chan time.Time
	if c.judging != nil {
		judging = c.judging.C
	}
	if c.restoreAt != nil {
		restoreAt = c.restoreAt.C
	}
	for {
		select {
		case <-restoreAt:
			c.restore()
			c.u.first.settle() // the snapshot is served, or there is none
		case <-done:
			return
		case <-c.u.kick:
			c.rebuild()
		case <-c.timer.C:
			c.rebuild()
		case <-judging:
			c.judgeCanary()
		case <-c.interval.C:
			c.passiveInterval()
		case <-stopped:
			return
		case <-ready:
			c.poll(p)
		case up, ok := <-updates:
			if !ok {
				return
			}
			c.update(up.set, up.err)
		}
	}
}

// poll applies every answer p has now.
//
// A set that an error follows at once (a watcher joining a subscription
// its adapter shares, while the registry is down, gets the last set and
// then the outage) is published stale in one snapshot: no reader sees it
// fresh for an instant.
func (c *controller) poll(p discovery.Poller) {
	set, ok, err := p.Poll()
	for ok {
		if err != nil {
			c.fail(err)
			set, ok, err = p.Poll()
			continue
		}
		next, nextOK, nextErr := p.Poll()
		if nextOK && nextErr != nil {
			c.applyStale(set, nextErr)
			set, ok, err = p.Poll()
			continue
		}
		c.apply(set)
		set, ok, err = next, nextOK, nextErr
	}
}

// passiveInterval ends outlier detection's interval.
func (c *controller) passiveInterval() {
	if c.ejector.Interval(c.u.snap.Load().Nodes, c.u.cfg.Now()) {
		c.rebuild()
	}
}

// follow sends what w.Next returns to updates until ctx ends or w stops,
// then closes updates.
//
// A panic in w.Next (the registry's client, its data) is delivered as an
// error, which keeps the upstream's nodes, and Next is called again after
// discovery.PanicPause.
func follow(ctx context.Context, w discovery.Watcher, updates chan<- update, log *logrus.Entry) {
	defer close(updates)
	var panicked panics.Log
	for {
		set, p, err := next(ctx, w)
		if p != nil {
			panicked.Log(log, p, "the registry watcher panicked; keeping the upstream's nodes, marked stale")
			err = fmt.Errorf("the registry watcher panicked: %w", p)
		} else if err != nil && (ctx.Err() != nil || errors.Is(err, discovery.ErrStopped)) {
			return
		}
		select {
		case updates <- update{set, err}:
		case <-ctx.Done():
			return
		}
		if p != nil {
			select {
			case <-time.After(discovery.PanicPause):
			case <-ctx.Done():
				return
			}
		}
	}
}

// next is w.Next, with a panic returned as p.
func next(ctx context.Context, w discovery.Watcher) (set []discovery.Instance, p *panics.Error, err error) {
	defer func() {
		if v := recover(); v != nil {
			set, p, err = nil, panics.New(v), nil
		}
	}()
	set, err = w.Next(ctx)
	return set, nil, err
}

// update applies one answer of the registry: a set, or an error.
func (c *controller) update(set []discovery.Instance, err error) {
	if err != nil {
		c.fail(err)
		return
	}
	c.apply(set)
}

// controller is the state owned by Run's goroutine.
type controller struct {
	u       *Upstream
	nodes   []*node.Node // last reconciled, sorted by ID: the nodes whose state is kept
	ejector *health.Ejector
	prober  *health.Prober // nil without active checks
	timer   *time.Timer    // fires when the next ejection ends

	interval  *time.Ticker // outlier detection's interval
	judging   *time.Ticker // the canary judge's window; nil without one
	restoreAt *time.Timer  // when to serve the on-disk snapshot; nil without one

	// The pickers last built, each with the builder and the pool it was
	// built from: a rebuild over the same pool with the same builder
	// reuses it.
	stablePick, canaryPick built
	// The same for each pool's local zone and the other zones (see
	// zoneSplit).
	stableLocalPick, canaryLocalPick, stableOtherPick, canaryOtherPick built

	restoring bool // apply is serving the on-disk snapshot
	// The current registry outage: errors seen, when one was last logged.
	outageErrors int
	errLoggedAt  time.Time
	judge        *canary.Judge // u.judge: nil without automatic rollback
	canaryPrint  string        // the canary rule's Fingerprint of the last set with canary instances
	badLabels    string        // the weight labels that do not parse, as last reported
}

// newController returns the state Run's goroutine owns for u.
func newController(u *Upstream) *controller {
	c := &controller{
		u:       u,
		ejector: health.NewEjector(u.cfg.Health, u.cfg.Log, nil, &u.metrics.Ejections),
		prober:  health.NewProber(u.cfg.Health, u.cfg.Probe, u.Rebuild, u.cfg.Log),
		timer:   time.NewTimer(time.Hour),
		judge:   u.judge,
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
func (c *controller) apply(set []discovery.Instance) { c.applyStale(set, nil) }

// applyStale is apply of a set the registry's error err (if not nil)
// follows: the snapshot is published with err, then fail records it.
func (c *controller) applyStale(set []discovery.Instance, err error) {
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
	if c.outageErrors > 0 {
		u.cfg.Log.WithField("errors", c.outageErrors).Info("the registry answered again")
		c.outageErrors = 0
	}
	next := &Snapshot{
		Name: u.cfg.Name, Nodes: nodes, Synced: true,
		Version: old.Version + 1, UpdatedAt: now,
	}
	if err != nil {
		next.Err, next.ErrAt = err, now
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
	if err != nil {
		c.fail(err) // counts and logs it; the snapshot stays as published
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
	u.first.settle()
	u.cfg.Log.WithField("nodes", len(set)).Warn("serving the on-disk snapshot until the registry answers")
}

// fail marks the current snapshot stale, keeping its nodes.
//
// It logs the first error of an outage, then at most one line per
// errorLogEvery with the count of errors since (a registry that is down
// errs every second or so, per upstream); apply logs the recovery.
func (c *controller) fail(err error) {
	u := c.u
	old := u.snap.Load()
	next := *old
	now := u.cfg.Now()
	next.Err, next.ErrAt = err, now
	u.snap.Store(&next)
	u.metrics.RegistryErrors.Add(1)
	c.outageErrors++
	if c.outageErrors > 1 && now.Sub(c.errLoggedAt) < errorLogEvery {
		return
	}
	log := u.cfg.Log.WithError(err)
	if c.outageErrors > 1 {
		log = log.WithField("errors_since_first", c.outageErrors-1)
	}
	c.errLoggedAt = now
	switch n := len(next.Nodes); {
	case next.Synced || next.Restored:
		log.WithField("nodes", n).Warnf("registry error; keeping the %d nodes it last gave", n)
	default:
		log.Warn("registry error; no nodes yet (it has not answered since start)")
	}
}

// errorLogEvery bounds how often one upstream logs an ongoing registry
// outage.
const errorLogEvery = time.Minute

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

// partition splits the available nodes of in into the stable ones and the
// canaries, in order, in one pass (every upstream has a canary rule unless
// it is turned off, so this runs on every publish): stable is in itself
// when every node is an available non-canary (nodes slices are never
// modified once built), canaries nil when there is none.
func partition(in []*node.Node, isCanary func(*node.Node) bool) (stable, canaries []*node.Node) {
	for i, n := range in {
		if n.Available() && !isCanary(n) {
			continue
		}
		stable = make([]*node.Node, i, len(in)-1)
		copy(stable, in[:i])
		for _, n := range in[i:] {
			switch {
			case !n.Available():
			case isCanary(n):
				canaries = append(canaries, n)
			default:
				stable = append(stable, n)
			}
		}
		return stable, canaries
	}
	return in, nil
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

// weightLabels reports the canary instances' weight labels that are not
// percentages, which the rule ignores: a warning for each when they
// change, not on every publish. It returns what the snapshot's canary
// split shows: the first, and how many more; "" when there is none.
func (c *controller) weightLabels(rule *canary.Rule, nodes []*node.Node) string {
	bad := rule.BadWeightLabels(nodes)
	if len(bad) == 0 {
		c.badLabels = ""
		return ""
	}
	var seen strings.Builder
	for _, e := range bad {
		seen.WriteString(e.Node + "\x00" + e.Value + "\x01")
	}
	if seen.String() != c.badLabels {
		c.badLabels = seen.String()
		for _, e := range bad {
			c.u.cfg.Log.WithError(e.Err).WithFields(logrus.Fields{"node": e.Node, "label": e.Key, "value": e.Value}).
				Warn("ignoring a canary instance's weight label")
		}
	}
	summary := bad[0].Error()
	if len(bad) > 1 {
		summary += fmt.Sprintf(" (and %d more)", len(bad)-1)
	}
	return summary
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
		stable, canaries = partition(next.Nodes, rule.IsCanary)
	}
	b := u.builder.Load()
	pool, stablePanic := c.pool(stable)
	next.Picker, next.StableAvailable = build(&c.stablePick, b, pool), len(pool)
	next.Available = len(pool)
	next.Panic = stablePanic
	next.StableZone = zoneSplit(u.cfg.Locality, pool, stable, stablePanic, &c.stableLocalPick, &c.stableOtherPick, b)
	if rule != nil {
		cpool, canaryPanic := c.pool(canaries)
		w, from := rule.WeightOf(canaries)
		// A rollback holds until the canary instances are re-labelled;
		// while there are none (scaled to 0, or out of the registry
		// while they restart) their labels have not changed.
		fp := rule.Fingerprint(next.Nodes)
		if rb := u.rollback.Load(); rb != nil {
			if fp != "" && rb.fingerprint != fp {
				u.rollback.Store(nil)
				u.cfg.Log.Info("canary instances changed their labels: automatic rollback cleared")
			} else {
				w, from = 0, "rollback"
			}
		}
		if fp != "" {
			c.canaryPrint = fp
		}
		next.Canary = canary.NewSplit(rule, build(&c.canaryPick, b, cpool), len(cpool), w, from)
		next.Canary.LabelError = c.weightLabels(rule, next.Nodes)
		next.CanaryZone = zoneSplit(u.cfg.Locality, cpool, canaries, canaryPanic, &c.canaryLocalPick, &c.canaryOtherPick, b)
		next.Available += len(cpool)
		next.Panic = next.Panic || canaryPanic
		if prev := u.snap.Load().Canary; prev == nil && len(cpool) > 0 || prev != nil && (prev.Weight != w || prev.WeightFrom != from) {
			u.cfg.Log.WithFields(logrus.Fields{"weight": w, "from": from, "canary_nodes": len(cpool)}).Info("canary weight")
		}
	}
	u.snap.Store(next)
	if next.Synced || next.Restored {
		u.first.settle()
	}
}
