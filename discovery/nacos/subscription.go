package nacos

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// subscription is the one SDK subscription of a group and service, shared
// by every watcher of it (whatever their clusters).
//
// run is its only goroutine and the only caller of the SDK for it. The
// SDK's callback copies the list into pending (guarded by cbMu) and
// signals changed; run publishes it (see deliver). param is created once
// and given to both Subscribe and Unsubscribe (nacos-sdk-go#845). hosts,
// have, err and watchers are guarded by mu, which is never held during an
// SDK call; a watcher's Latest is only fed under mu, so a watcher added
// later sees the same sequence of states as the others. holdUntil, base,
// latest, held and holdC are owned by run.
type subscription struct {
	reg     *registry
	key     string // group@@service
	group   string
	service string
	param   *vo.SubscribeParam
	prev    *subscription // the retiring subscription of the same key, or nil

	changed chan struct{} // capacity 1: the SDK called back

	cbMu       sync.Mutex
	pending    []model.Instance // the list of the last callback, not yet published
	hasPending bool
	reread     bool // a callback panicked: its list is lost, read the SDK's copy

	panics panics.Log // the callback's, which the SDK may call on every push

	lost      chan struct{} // capacity 1: the registry closed the client
	done      chan struct{} // closed by stop
	stopOnce  sync.Once
	exited    chan struct{} // closed when run returns
	callbacks atomic.Int64  // SDK callbacks received, for tests

	mu       sync.Mutex
	watchers map[*watcher]struct{}
	hosts    []model.Instance // the last instance list read, all clusters
	have     bool             // hosts is set
	err      error            // the error since hosts, if any
	skipped  string           // the unusable hosts last logged

	holdUntil time.Time        // a list without every instance of base before then is suspicious (see deliver)
	base      []model.Instance // the instances when the subscription was made again
	latest    []model.Instance // the server's last list while held
	held      bool             // the server's list is being held
	holdC     <-chan time.Time // fires at holdUntil while held
}

func newSubscription(r *registry, group, service string, prev *subscription) *subscription {
	s := &subscription{
		reg: r, key: group + sep + service, group: group, service: service, prev: prev,
		changed:  make(chan struct{}, 1),
		lost:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		exited:   make(chan struct{}),
		watchers: map[*watcher]struct{}{},
	}
	s.param = &vo.SubscribeParam{
		ServiceName: service,
		GroupName:   group,
		// The callback is called by the SDK's push goroutine (and, for
		// the answer to Subscribe, by run's). It must not block, and it
		// must not panic: that would unwind the SDK's goroutine, and end
		// the process (see callbackPanicked).
		SubscribeCallback: func(hosts []model.Instance, _ error) {
			defer s.callbackPanicked()
			onPush(s, hosts)
		},
	}
	return s
}

// onPush is what the SDK's callback does (received); a variable so that
// a test can make it panic.
var onPush = (*subscription).received

// received takes a list the SDK pushed. It must copy it now: the slice is
// the SDK's cached copy, which the same goroutine sorts in place when the
// next push comes (naming_cache.isServiceInstanceChanged).
func (s *subscription) received(hosts []model.Instance) {
	cp := append(make([]model.Instance, 0, len(hosts)), hosts...)
	s.cbMu.Lock()
	s.pending, s.hasPending = cp, true
	s.cbMu.Unlock()
	s.callbacks.Add(1)
	signal(s.changed)
}

// callbackPanicked, deferred by the SDK's callback, contains a panic of
// the callback: it is logged with its stack (once a minute at most), the
// watchers report it (their sets stay, marked stale), and run reads the
// SDK's copy of the service in place of the list that was lost.
func (s *subscription) callbackPanicked() {
	v := recover()
	if v == nil {
		return
	}
	p := panics.New(v)
	s.panics.Log(s.reg.log.WithField("service", s.key), p,
		"nacos: the push callback panicked; keeping the last known instances and reading the SDK's copy")
	s.fail(s.describe(fmt.Errorf("the push callback: %w", p)))
	s.cbMu.Lock()
	s.reread = true
	s.cbMu.Unlock()
	signal(s.changed)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// add attaches w and hands it the current state, if there is one.
func (s *subscription) add(w *watcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers[w] = struct{}{}
	if s.have {
		w.Publish(s.setFor(w))
	}
	if s.err != nil {
		w.Fail(s.err)
	}
}

// remove detaches w; the last watcher out releases the subscription.
func (s *subscription) remove(w *watcher) {
	s.mu.Lock()
	delete(s.watchers, w)
	last := len(s.watchers) == 0
	s.mu.Unlock()
	if last {
		s.reg.release(s)
	}
}

func (s *subscription) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.watchers) == 0
}

// stop ends run, which then unsubscribes.
func (s *subscription) stop() { s.stopOnce.Do(func() { close(s.done) }) }

// stopAll stops every watcher and the subscription (registry Close).
func (s *subscription) stopAll() {
	s.mu.Lock()
	ws := slices.Collect(maps.Keys(s.watchers))
	s.mu.Unlock()
	for _, w := range ws {
		_ = w.Latest.Stop()
	}
	s.stop()
}

// setFor maps the current hosts for w's clusters; mu must be held.
func (s *subscription) setFor(w *watcher) []discovery.Instance {
	set, _ := toSet(s.hosts, w.key.Clusters, s.reg.scale)
	return set
}

// publish records a new instance list and hands every watcher its part.
func (s *subscription) publish(hosts []model.Instance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishLocked(hosts)
}

// publishLocked is publish with mu held.
func (s *subscription) publishLocked(hosts []model.Instance) {
	s.hosts, s.have, s.err = hosts, true, nil
	if _, skipped := toSet(hosts, nil, s.reg.scale); len(skipped) > 0 {
		if msg := errors.Join(skipped...).Error(); msg != s.skipped {
			s.reg.log.WithField("service", s.key).Warn(msg) // once per change
			s.skipped = msg
		}
	} else {
		s.skipped = ""
	}
	for w := range s.watchers {
		w.Publish(s.setFor(w))
	}
}

// fail reports err to every watcher; their last sets stay.
func (s *subscription) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
	for w := range s.watchers {
		w.Fail(err)
	}
}

// down is called when the registry has no client: without instances yet,
// the subscription serves the disk cache; every watcher gets err; and run
// forgets its client (never blocks).
func (s *subscription) down(err error) {
	s.coldStart()
	s.fail(fmt.Errorf("nacos: service %q: %w; keeping the last known instances", s.key, err))
	signal(s.lost)
}

// coldStart publishes the SDK's disk copy of the service, if the
// subscription has no instances yet and there is one that lists any: on a
// start while the server is down, the instances of the last run.
//
// It may be called by run and by the registry's supervise at once: the
// check and the publication are one step under mu, so the disk copy is
// published once.
func (s *subscription) coldStart() {
	s.mu.Lock()
	have := s.have
	s.mu.Unlock()
	if have || s.reg.diskCache == nil {
		return
	}
	hosts, ok := s.reg.diskCache(s.group, s.service) // file I/O: not under mu
	if !ok || len(hosts) == 0 {
		// Nothing to serve. Published, the empty list would replace what
		// the upstream serves meanwhile (its own on-disk snapshot, which
		// may be younger: the SDK writes its copy on every push, also one
		// that came as the last run stopped).
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.have {
		return
	}
	s.reg.log.WithField("service", s.key).WithField("instances", len(hosts)).
		Warn("nacos: serving the instances of the last run (the on-disk cache) until the server answers")
	s.publishLocked(hosts)
}

// run subscribes, follows the service and unsubscribes at the end. When
// the registry replaces its client (a lost connection), it subscribes on
// the new one.
//
// A panic in follow (the SDK, a list no test foresaw) is logged with its
// stack and reported to the watchers (their sets stay, marked stale);
// follow unsubscribes as it unwinds and starts again, subscribing afresh,
// after discovery.PanicPause.
func (s *subscription) run() {
	r := s.reg
	defer r.wg.Done()
	defer close(s.exited)
	defer r.retired(s)
	log := r.log.WithField("service", s.key)

	// Wait for a previous subscription of this service to have
	// unsubscribed, or its Unsubscribe could undo our Subscribe.
	if s.prev != nil {
		<-s.prev.exited
	}
	if err := r.downError(); err != nil {
		s.down(err) // a watch opened while the server is unreachable
	}
	discovery.Rerun(log, func(err error) { s.fail(s.describe(err)) }, s.pause, func() { s.follow(log) })
}

// pause waits for discovery.PanicPause; false if the subscription or the
// registry ended first.
func (s *subscription) pause() bool {
	t := time.NewTimer(discovery.PanicPause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
	case <-s.reg.ctx.Done():
	}
	return false
}

// follow is run's loop.
func (s *subscription) follow(log *logrus.Entry) {
	r := s.reg
	var (
		c          namingClient // the client subscribed on (or tried)
		gen        int          // its generation
		attempts   int          // Subscribe calls made on c
		subscribed bool         // the last Subscribe on c succeeded
		failures   int          // consecutive failed Subscribe calls
		retry      <-chan time.Time
	)
	defer func() {
		if attempts > 0 {
			if err := c.Unsubscribe(s.param); err != nil {
				log.WithError(err).Debug("nacos: unsubscribe failed (the server drops the subscription with the connection)")
			}
		}
	}()
	for {
		cur, g, ok := r.current(s.done)
		if !ok {
			return
		}
		if g != gen { // a new client: start over on it
			c, gen, attempts, subscribed, retry = cur, g, 0, false, nil
			s.cbMu.Lock()
			s.pending, s.hasPending, s.reread = nil, false, false // from the old client
			s.cbMu.Unlock()
			s.held, s.holdC, s.holdUntil, s.base, s.latest = false, nil, time.Time{}, nil, nil
		}
		if !subscribed && retry == nil {
			if attempts > 0 {
				// Undo the failed attempt, which left its callback and
				// its resubscription entry in the SDK.
				_ = c.Unsubscribe(s.param)
			}
			attempts++
			if err := c.Subscribe(s.param); err != nil {
				failures++
				err = s.describe(err)
				if failures == 1 {
					log.WithError(err).Warn("nacos: subscribe failed; keeping the last known instances and retrying")
				} else {
					log.WithError(err).WithField("attempt", failures).Debug("nacos: subscribe failed again")
				}
				s.fail(err)
				retry = time.After(r.backoff(failures))
			} else {
				if failures > 0 {
					log.WithField("attempts", failures+1).Info("nacos: subscribed")
				}
				subscribed, failures = true, 0
				if base := s.holdBase(); r.emptyGrace > 0 && (len(base) > 0 || !s.published() && r.startedDown()) {
					// Subscribed again (a new client, the disk cache
					// served first, or a start with a disk cache), or for
					// the first time after the server was down at the
					// start: see deliver.
					s.holdUntil, s.base = time.Now().Add(r.emptyGrace), base
				}
				if !s.publishPending() {
					// The SDK calls back with the answer to a first
					// Subscribe; should it not have, read its copy.
					s.refresh(c)
				}
			}
		}
		select {
		case <-s.done:
			return
		case <-r.ctx.Done():
			return
		case <-retry:
			retry = nil
		case <-s.changed:
			if subscribed {
				s.cbMu.Lock()
				reread := s.reread
				s.reread = false
				s.cbMu.Unlock()
				if !s.publishPending() && reread {
					s.refresh(c) // a callback panicked: its list is lost
				}
			}
		case <-s.lost:
			// The registry closed c: current() waits for the next client,
			// and a new generation starts over.
		case <-s.holdC:
			s.holdC = nil
			if s.held {
				log.WithFields(logrus.Fields{"held": r.emptyGrace, "instances": len(s.latest)}).
					Warn("nacos: the server still does not list every cluster's instances again; applying its list")
				latest := s.latest
				if latest == nil {
					latest = []model.Instance{}
				}
				s.held, s.holdUntil, s.base, s.latest = false, time.Time{}, nil, nil
				s.publish(latest)
			}
		}
	}
}

// publishPending delivers the list of the last callback, if there is one
// not delivered yet.
func (s *subscription) publishPending() bool {
	s.cbMu.Lock()
	hosts, ok := s.pending, s.hasPending
	s.pending, s.hasPending = nil, false
	s.cbMu.Unlock()
	if ok {
		s.deliver(hosts)
	}
	return ok
}

// refresh reads the SDK's copy of the service and delivers it.
func (s *subscription) refresh(c namingClient) {
	svc, err := c.GetService(vo.GetServiceParam{ServiceName: s.service, GroupName: s.group})
	if err != nil {
		s.fail(s.describe(err))
		return
	}
	s.deliver(svc.Hosts)
}

// errNotListedAgain is wrapped by the error watchers get while the
// server's list is held.
var errNotListedAgain = errors.New("the server lists no usable instance of a cluster right after the subscription was made again")

// deliver publishes a list read from the server, except a suspicious one.
// A server that restarted lists no ephemeral instances until their
// applications' clients have reconnected and registered them again
// (Polaris and Nacos keep ephemeral instances only with their
// connections), or lists them unhealthy until then. So in the first
// emptyGrace after subscribing again (on a new client, or after the disk
// cache was served), or for the first time with a disk cache of the last
// run (see holdBase), a list in which a cluster the subscription had usable
// instances of then (base) has none is held for that cluster: the
// watchers get the list with that cluster's last known instances in place
// of its listed ones, marked stale with errNotListedAgain, until the
// server lists usable instances of every such cluster or emptyGrace has
// passed, when
// the server's list is applied as it is. That is the whole list when the
// server lists nothing at all; per cluster, an upstream limited to some
// clusters keeps its nodes while another cluster's instances come back
// first. A first subscribe after the server was down at the start, with no
// base, holds a list without usable instances whole (nothing is published:
// the watchers keep what they serve). Outside that window an empty list is applied at once: the
// server states that the instances are gone. Only run calls it.
func (s *subscription) deliver(hosts []model.Instance) {
	if time.Now().Before(s.holdUntil) {
		merged, missing := withHeldClusters(hosts, s.base)
		// Nothing to compare with (a start while the server was down,
		// without a disk cache): a list with no usable instance is held
		// whole, and the watchers keep what they serve (the upstream's own
		// on-disk snapshot).
		unlisted := len(s.base) == 0 && len(usableClusters(hosts)) == 0
		if missing > 0 || unlisted {
			if !s.held {
				s.held = true
				s.holdC = time.After(time.Until(s.holdUntil))
				s.reg.log.WithFields(logrus.Fields{"service": s.key, "hold": s.reg.emptyGrace, "kept": missing}).
					Warn("nacos: the server lists no usable instance of a cluster right after reconnecting; keeping its last known ones while their applications register again")
			}
			s.latest = hosts
			if !unlisted && (len(hosts) > 0 || !s.published()) {
				// The rest of the list is news; or nothing was published
				// yet, and the watchers get the last run's instances.
				s.publish(merged)
			}
			s.fail(fmt.Errorf("nacos: service %q: %w; keeping its %d last known instances for up to %v", s.key, errNotListedAgain, missing, s.reg.emptyGrace))
			return
		}
		s.holdUntil, s.base = time.Time{}, nil // every cluster is back: no more holding
	}
	s.held, s.holdC, s.latest = false, nil, nil
	s.publish(hosts)
}

// withHeldClusters returns hosts in which every cluster that had a usable
// (healthy and enabled) instance in base but has none in hosts is replaced
// by its instances in base, and how many instances of base it kept. A
// restarted server may list an application's instance as unhealthy (from
// its store, before the application's client is back) as well as not at
// all: both are "not listed again" here.
func withHeldClusters(hosts, base []model.Instance) ([]model.Instance, int) {
	listed := usableClusters(hosts)
	var held map[string]bool
	for i := range base {
		if c := clusterOf(&base[i]); usable(&base[i]) && !listed[c] {
			if held == nil {
				held = make(map[string]bool)
			}
			held[c] = true
		}
	}
	if held == nil {
		return hosts, 0
	}
	out := make([]model.Instance, 0, len(hosts)+len(base))
	for i := range hosts {
		if !held[clusterOf(&hosts[i])] {
			out = append(out, hosts[i])
		}
	}
	kept := 0
	for i := range base {
		if held[clusterOf(&base[i])] {
			out = append(out, base[i])
			kept++
		}
	}
	return out, kept
}

// usableClusters returns the clusters with a usable instance in hosts.
func usableClusters(hosts []model.Instance) map[string]bool {
	out := make(map[string]bool)
	for i := range hosts {
		if usable(&hosts[i]) {
			out[clusterOf(&hosts[i])] = true
		}
	}
	return out
}

// usable reports whether Remora would route to h (see toInstance).
func usable(h *model.Instance) bool { return h.Healthy && h.Enable }

// holdBase is what the first list after a Subscribe is compared with (see
// deliver): the last list published or, before any, the last run's (the
// disk cache). A start need not have seen the server down to come right
// after its restart (a node that rebooted both, or a server that came back
// before Remora's first attempt failed), while the upstream serves its
// own on-disk snapshot of the same instances.
func (s *subscription) holdBase() []model.Instance {
	s.mu.Lock()
	hosts, have := s.hosts, s.have
	s.mu.Unlock()
	if have || s.reg.diskCache == nil {
		return hosts
	}
	hosts, _ = s.reg.diskCache(s.group, s.service) // file I/O: not under mu
	return hosts
}

// published reports whether a list was published (the server's or the
// disk cache's).
func (s *subscription) published() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.have
}

// current returns the last list published and whether it is the server's
// current word: false before the first list, and while the subscription
// reports an error (no connection, a failed subscribe, a list held after
// subscribing again, the disk cache served).
func (s *subscription) current() ([]model.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosts, s.have && s.err == nil
}

// describe wraps an SDK error with the service and, when the client has no
// connection, ErrUnreachable. (The SDK's error says "client not connected"
// before the health loop has noticed.)
func (s *subscription) describe(err error) error {
	if errors.Is(err, ErrUnreachable) {
		return err
	}
	if strings.Contains(err.Error(), "client not connected") {
		return fmt.Errorf("nacos: service %q: %w: %v", s.key, ErrUnreachable, err)
	}
	return fmt.Errorf("nacos: service %q: %w", s.key, err)
}

// watcher is one Watch of a service key. Its Latest is fed by the
// subscription under the subscription's mu; Next and Stop may be called
// from the consumer's goroutine. sub and key are immutable.
type watcher struct {
	*discovery.Latest
	sub  *subscription
	key  serviceKey
	once sync.Once
}

// Stop implements discovery.Watcher: it unblocks Next and detaches the
// watcher; the last watcher of a service ends the SDK subscription. It is
// idempotent and does not wait for the server.
func (w *watcher) Stop() error {
	w.once.Do(func() {
		_ = w.Latest.Stop()
		w.sub.remove(w)
	})
	return nil
}
