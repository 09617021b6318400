// Package upstream keeps the live node set of each upstream: one controller
// goroutine per upstream (the only writer) turns registry updates into
// immutable Snapshots published through an atomic pointer, which the request
// path reads with a single atomic load.
package upstream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
)

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
	// before serving the on-disk snapshot, if there is one; it counts from
	// the start of the first upstream a chain of Previous reloads began
	// with.
	InitialSyncTimeout time.Duration
	// SnapshotFile, when set, keeps the last good node set on disk: it is
	// written on every change and served (marked stale) when the registry
	// is not reached within InitialSyncTimeout at start.
	SnapshotFile string
	// Canary splits traffic to canary nodes; nil means none.
	Canary *canary.Rule
	// Locality routes to Remora's own zone first (validated); nil means
	// zones are ignored.
	Locality *Locality
	// Previous is the upstream this one replaces on a config reload: its
	// nodes (from the registry or the on-disk snapshot), with their stats
	// and health, are carried over. Its controller must have stopped.
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

	// admission counts the requests and retries in flight (circuit
	// breaker, retry budget); shared by the line of upstreams started
	// is, so that a reload does not forget the requests (tcp connections,
	// WebSockets) the upstream it replaces still carries.
	admission *admission
	limiter   *Limiter // rate_limit; nil without one; kept by a reload that leaves it as it was (immutable)

	canaryStats *canary.Stats                 // per-pool outcomes, kept across reloads
	metrics     *Metrics                      // kept across reloads
	rollback    atomic.Pointer[rollbackState] // automatic rollback in force
	snap        atomic.Pointer[Snapshot]
	builder     atomic.Pointer[builderBox]
	kick        chan struct{} // capacity 1: rebuild pickers
	// started is when the first upstream of the line this one continues
	// (Previous) was made: the initial-sync timeout counts from it, so a
	// reload does not start it again. Immutable.
	started time.Time
	// first ends the wait of calls made before the first set; shared by
	// the line of upstreams started is.
	first *firstSet
	// judge is the automatic rollback's judge, nil without one: made by
	// New, from where the judge of the upstream it replaces left off,
	// then owned by the controller.
	judge *canary.Judge
}

// FirstSetWait bounds how long a call made before its upstream has nodes
// to serve (the application's first request as the pod starts) waits for
// them; it never waits past the initial-sync timeout.
const FirstSetWait = time.Second

// firstSet is closed once an upstream has nodes to serve (its first set,
// or its on-disk snapshot), or when its on-disk snapshot was due and could
// not be served.
type firstSet struct {
	ch   chan struct{}
	once sync.Once
}

func (f *firstSet) settle() { f.once.Do(func() { close(f.ch) }) }

// awaitFirstSet waits, within FirstSetWait and while client lasts, for
// the first set of an upstream that has none yet, and returns the
// snapshot then current. It is off the request path's fast branch: only
// calls that found no set get here.
func (u *Upstream) awaitFirstSet(client context.Context) *Snapshot {
	if u.cfg.Now().Sub(u.started) < u.cfg.InitialSyncTimeout {
		t := time.NewTimer(FirstSetWait)
		select {
		case <-u.first.ch:
		case <-client.Done():
		case <-t.C:
		}
		t.Stop()
	}
	return u.snap.Load()
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
	u := &Upstream{cfg: cfg, detector: health.NewDetector(cfg.Health), kick: make(chan struct{}, 1), started: cfg.Now(),
		first: &firstSet{ch: make(chan struct{})}}
	u.limiter = limiterFor(cfg.Policy.RateLimit, cfg.Previous)
	u.admission = new(admission)
	b := cfg.Balancer
	if b == nil {
		b = defaultBuilder()
	}
	u.builder.Store(&builderBox{b})
	u.snap.Store(&Snapshot{Name: cfg.Name, Picker: balancer.Empty})
	u.canaryStats, u.metrics = new(canary.Stats), new(Metrics)
	var prevJudge *canary.Judge
	if prev := cfg.Previous; prev != nil {
		u.canaryStats, u.metrics, u.admission = prev.canaryStats, prev.metrics, prev.admission
		u.rollback.Store(prev.rollback.Load())
		u.started, u.first = prev.started, prev.first
		prevJudge = prev.judge // its controller has stopped
		old := *prev.Snapshot()
		old.Name = cfg.Name
		if cfg.Health.Active == nil {
			for _, n := range old.Nodes {
				n.Stats.Health.ForgetProbes()
			}
		}
		u.snap.Store(&old) // republished with this upstream's picker by Run
	}
	u.judge = canary.NewJudge(cfg.Canary, u.canaryStats, prevJudge)
	return u
}

// limiterFor returns the limiter of rl, nil without one: prev's when prev
// (the upstream a reload replaces; may be nil) had the same rate_limit, so
// that a reload is no fresh burst, else a new one.
func limiterFor(rl *RateLimit, prev *Upstream) *Limiter {
	switch {
	case rl == nil:
		return nil
	case prev != nil && prev.cfg.Policy.RateLimit != nil && *prev.cfg.Policy.RateLimit == *rl:
		return prev.limiter
	}
	return NewLimiter(*rl)
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

// rollbackState is an automatic canary rollback: why, when, and the canary
// rule's Fingerprint of the canary instances when it tripped (a re-label
// clears it).
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
