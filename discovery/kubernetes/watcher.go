package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
)

// Sources of a watcher's data, for its error bookkeeping.
const (
	sourceSlices = "EndpointSlices"
	sourcePods   = "pods"
)

// watcher follows one service: an EndpointSlice informer filtered by the
// service's name label, and the namespace's pods informer when the
// registry reads pods.
//
// The informers' handlers, the list/watch results and the first sync all
// call recompute, which builds the complete set from the informers' caches
// and publishes it through Latest (a coalescing, level-triggered hand-off
// to Next). mu serializes recompute and guards synced, stopped, failing and
// lastMapErr. refs, the pods the slices target, is written under mu and
// read by the pods informer's handler without it. svc, port, pods, log and
// informer are immutable after newWatcher.
type watcher struct {
	*discovery.Latest
	reg  *Registry
	svc  Service // namespace filled in
	port portSelector
	pods *podCache // nil without pods: true
	log  *logrus.Entry

	ctx      context.Context // cancelled by Stop
	cancel   context.CancelFunc
	informer cache.SharedIndexInformer
	handle   cache.ResourceEventHandlerRegistration
	refs     atomic.Pointer[map[string]struct{}]
	stopOnce sync.Once

	mu         sync.Mutex
	synced     bool             // both informers have synced
	stopped    bool             // Stop was called
	failing    map[string]error // by source: the last call failed
	lastMapErr string           // the mapping's last error, logged once

	panics   panics.Log  // recompute's
	retrying atomic.Bool // recompute panicked and is tried again soon
}

func newWatcher(r *Registry, svc Service, port portSelector, pc *podCache) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		Latest: discovery.NewLatest(),
		reg:    r, svc: svc, port: port, pods: pc,
		log:     r.log.WithField("service", svc.String()),
		ctx:     ctx,
		cancel:  cancel,
		failing: map[string]error{},
	}
	ns, selector := svc.Namespace, discoveryv1.LabelServiceName+"="+svc.Name
	lw := &listWatch{
		reg: r,
		list: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return r.client.ListEndpointSlices(ctx, ns, o)
		},
		watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return r.client.WatchEndpointSlices(ctx, ns, o)
		},
		result:      func(err error) { w.result(sourceSlices, err) },
		noWatchList: watchlist.DoesClientNotSupportWatchListSemantics(r.client),
	}
	w.informer = cache.NewSharedIndexInformerWithOptions(lw, &discoveryv1.EndpointSlice{},
		cache.SharedIndexInformerOptions{ObjectDescription: "EndpointSlices of " + svc.String()})
	_ = w.informer.SetTransform(stripManagedFields)
	_ = w.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		watchEnded(w.log, sourceSlices, err)
	})
	w.handle, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.recompute() },
		UpdateFunc: func(any, any) { w.recompute() },
		DeleteFunc: func(any) { w.recompute() },
	})
	if pc != nil {
		pc.subscribe(w)
	}
	return w
}

// start runs the informer and, once it (and the pods informer) synced,
// publishes the first set.
func (w *watcher) start() {
	w.reg.goFunc(func() { w.informer.RunWithContext(w.ctx) })
	w.reg.goFunc(func() {
		synced := []cache.InformerSynced{w.handle.HasSynced}
		if w.pods != nil {
			synced = append(synced, w.pods.handle.HasSynced)
		}
		if !cache.WaitForCacheSync(w.ctx.Done(), synced...) {
			return // stopped
		}
		w.mu.Lock()
		w.synced = true
		w.mu.Unlock()
		w.recompute()
	})
}

// Stop implements discovery.Watcher: it stops the informer (Registry.Close
// waits for its goroutines) and unblocks Next.
func (w *watcher) Stop() error {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopped = true
		w.mu.Unlock()
		w.cancel()
		_ = w.Latest.Stop()
		w.reg.forget(w)
	})
	return nil
}

// recompute is compute with a panic (the mapping of objects no test
// foresaw) contained: it is called by the informers' handlers, on
// client-go's goroutines, whose own recovery ends the process. The panic
// is logged with its stack (once a minute at most) and returned by Next
// as an error (the last set stays, marked stale), and recompute is tried
// again after discovery.PanicPause, should no event come first.
func (w *watcher) recompute() {
	p := panics.Catch(w.compute)
	if p == nil {
		return
	}
	w.panics.Log(w.log, p, "kubernetes: building the service's set panicked; keeping the last set and trying again after a pause")
	w.Latest.Fail(fmt.Errorf("kubernetes: service %s: %w", w.svc, p))
	if w.ctx.Err() != nil || !w.retrying.CompareAndSwap(false, true) {
		return // stopped, or tried again soon already
	}
	w.reg.goFunc(func() {
		t := time.NewTimer(discovery.PanicPause)
		defer t.Stop()
		select {
		case <-t.C:
			w.retrying.Store(false)
			w.recompute()
		case <-w.ctx.Done():
		}
	})
}

// toInstances is instances; tests replace it.
var toInstances = instances

// compute builds the set from the caches and publishes it, or reports why
// it cannot (a port that is not there).
func (w *watcher) compute() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.synced || w.stopped {
		return
	}
	objs := w.informer.GetStore().List()
	ss := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	refs := map[string]struct{}{}
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		ss = append(ss, s)
		for i := range s.Endpoints {
			if ref := s.Endpoints[i].TargetRef; ref != nil && (ref.Kind == "Pod" || ref.Kind == "") {
				refs[ref.Name] = struct{}{}
			}
		}
	}
	w.refs.Store(&refs)
	var lookup podLookup
	unknown := 0 // endpoints left out because their pod is not known
	if w.pods != nil {
		lookup = func(name string) (podMeta, bool) {
			pm, ok := w.pods.lookup(name)
			if !ok {
				unknown++
			}
			return pm, ok
		}
	}
	set, err := toInstances(ss, w.port, w.reg.cfg.AddressType, lookup)
	if err != nil {
		if msg := err.Error(); msg != w.lastMapErr {
			w.lastMapErr = msg
			w.log.WithError(err).Warn("kubernetes: cannot map the service's endpoints; keeping the last set")
		}
		w.Latest.Fail(fmt.Errorf("kubernetes: service %s: %w", w.svc, err))
		return
	}
	if w.lastMapErr != "" {
		w.lastMapErr = ""
		w.log.Info("kubernetes: the service's endpoints map again")
	}
	if err := w.failing[sourcePods]; err != nil && unknown > 0 {
		// The pods cannot be read, so endpoints whose pods are not known
		// yet are missing for that alone: a partial set. The last set
		// stays until the pods can be read (result recomputes then).
		w.Latest.Fail(fmt.Errorf("kubernetes: service %s: %d endpoints' pods are not known while the pods cannot be read: %w", w.svc, unknown, err))
		return
	}
	w.Latest.Publish(set)
	// Publishing clears a reported failure; while a source still fails,
	// the set is followed by its error again, so the upstream stays stale.
	for _, source := range [...]string{sourceSlices, sourcePods} {
		if err := w.failing[source]; err != nil {
			w.Latest.Fail(fmt.Errorf("kubernetes: reading %s of %s: %w", source, w.svc, err))
			break
		}
	}
}

// references reports whether the service's slices target pod name.
func (w *watcher) references(name string) bool {
	refs := w.refs.Load()
	if refs == nil {
		return false
	}
	_, ok := (*refs)[name]
	return ok
}

// result records the outcome of a list or watch call of source: a failure
// makes Next report the watcher stale; the first success after failures
// publishes the current set again, once no source fails.
func (w *watcher) result(source string, err error) {
	if err != nil && (w.ctx.Err() != nil || expired(err)) {
		return // stopping; or the reflector lists again at once
	}
	w.mu.Lock()
	_, was := w.failing[source]
	if err != nil {
		w.failing[source] = err
	} else {
		delete(w.failing, source)
	}
	healthy := len(w.failing) == 0
	w.mu.Unlock()
	switch {
	case err != nil:
		// Warn once per outage: the errors of retries differ only in
		// their URLs' timeouts.
		entry := w.log.WithError(err).WithField("source", source)
		if !was {
			entry.Warn("kubernetes: cannot read from the API server; keeping the last set")
		} else {
			entry.Debug("kubernetes: cannot read from the API server; keeping the last set")
		}
		w.Latest.Fail(fmt.Errorf("kubernetes: reading %s of %s: %w", source, w.svc, err))
	case was:
		w.log.WithField("source", source).Info("kubernetes: the API server answers again")
		if healthy {
			w.recompute()
		}
	}
}

// expired reports whether err says a resourceVersion is too old (410
// Gone): the reflector lists again, which is no outage.
func expired(err error) bool { return apierrors.IsResourceExpired(err) || apierrors.IsGone(err) }

// watchEnded logs why an informer's watch ended; the list or watch call
// that follows reports an outage if there is one.
func watchEnded(log *logrus.Entry, source string, err error) {
	entry := log.WithError(err).WithField("source", source)
	if expired(err) {
		entry.Debug("kubernetes: resourceVersion too old; listing again")
		return
	}
	entry.Debug("kubernetes: watch ended")
}

// listWatch is the informers' ListerWatcher: list and watch through the
// registry's Client, with the registry's watch timeout, reporting each
// call's outcome to result.
//
// A call refused at connect (nothing listens: the API server is down or
// restarting) is retried here, after 200 ms doubling to ReconnectMax with
// jitter, until it goes through or the informer stops; each failure is
// reported. The reflector would otherwise back off up to 30 s (60 s with
// its jitter) and keep the watcher stale that long after the server is
// back. Every other error goes to the reflector, which backs off as
// client-go does.
type listWatch struct {
	reg         *Registry
	list        func(context.Context, metav1.ListOptions) (runtime.Object, error)
	watch       func(context.Context, metav1.ListOptions) (watch.Interface, error)
	result      func(error)
	noWatchList bool
	panics      panics.Log // the calls'
}

var (
	_ cache.ListerWatcher            = (*listWatch)(nil)
	_ cache.ListerWatcherWithContext = (*listWatch)(nil)
)

func (l *listWatch) List(o metav1.ListOptions) (runtime.Object, error) {
	return l.ListWithContext(context.Background(), o)
}

func (l *listWatch) ListWithContext(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
	return retryRefused(ctx, l, func() (runtime.Object, error) { return l.list(ctx, o) })
}

func (l *listWatch) Watch(o metav1.ListOptions) (watch.Interface, error) {
	return l.WatchWithContext(context.Background(), o)
}

func (l *listWatch) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	if d := l.reg.WatchTimeout; d > 0 {
		secs := int64(math.Ceil(d.Seconds()))
		o.TimeoutSeconds = &secs
	}
	return retryRefused(ctx, l, func() (watch.Interface, error) { return l.watch(ctx, o) })
}

// retryRefused calls call until it is not refused at connect or ctx ends,
// reporting every outcome. A call that panics (the client, an answer no
// test foresaw) fails with the panic as its error, after it is logged
// with its stack (once a minute at most): the reflector, on whose
// goroutine it runs, retries it as any failed call, and the watchers are
// stale meanwhile.
func retryRefused[T any](ctx context.Context, l *listWatch, call func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		var v T
		var err error
		if p := panics.Catch(func() { v, err = call() }); p != nil {
			l.panics.Log(l.reg.log, p, "kubernetes: a list or watch call panicked; retrying it as a failed call")
			var zero T
			v, err = zero, p
		}
		l.result(err)
		if err == nil || !utilnet.IsConnectionRefused(err) {
			return v, err
		}
		if !retry.Sleep(ctx, retry.Backoff(attempt, reconnectBase, l.reg.reconnectMax(), rand.Float64)) {
			return v, err
		}
	}
}

// Reconnect backoff after a refused connection.
const (
	reconnectBase = 200 * time.Millisecond
	// DefaultReconnectMax caps it: a restarted API server is seen within
	// a few seconds, and the watchers of many sidecars spread out.
	DefaultReconnectMax = 4 * time.Second
)

// IsWatchListSemanticsUnSupported tells the reflector whether the client
// can stream the initial list as watch events (a real API server can; the
// unit tests' fake cannot).
func (l *listWatch) IsWatchListSemanticsUnSupported() bool { return l.noWatchList }

// stripManagedFields drops what the adapter never reads and the informer
// would otherwise keep in memory.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// podCache is a namespace's metadata-only pods informer, shared by the
// registry's watchers of that namespace. refs is guarded by Registry.mu;
// mu guards subs. A pod event makes every subscriber that targets the pod
// recompute its set.
type podCache struct {
	reg      *Registry
	ns       string
	ctx      context.Context
	cancel   context.CancelFunc
	informer cache.SharedIndexInformer
	handle   cache.ResourceEventHandlerRegistration
	refs     int

	mu   sync.Mutex
	subs map[*watcher]struct{}

	panics panics.Log // the event handlers'
}

func newPodCache(r *Registry, ns string) *podCache {
	ctx, cancel := context.WithCancel(context.Background())
	pc := &podCache{reg: r, ns: ns, ctx: ctx, cancel: cancel, subs: map[*watcher]struct{}{}}
	log := r.log.WithField("namespace", ns)
	lw := &listWatch{
		reg: r,
		list: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return r.client.ListPods(ctx, ns, o)
		},
		watch: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return r.client.WatchPods(ctx, ns, o)
		},
		result: func(err error) {
			if err != nil && (ctx.Err() != nil || expired(err)) {
				return
			}
			for _, w := range pc.subscribers() {
				w.result(sourcePods, err)
			}
		},
		noWatchList: watchlist.DoesClientNotSupportWatchListSemantics(r.client),
	}
	pc.informer = cache.NewSharedIndexInformerWithOptions(lw, &metav1.PartialObjectMetadata{},
		cache.SharedIndexInformerOptions{ObjectDescription: "pods of namespace " + ns})
	_ = pc.informer.SetTransform(slimPod)
	_ = pc.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		watchEnded(log, sourcePods, err)
	})
	pc.handle, _ = pc.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			pc.guard(log, func() {
				if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
					checkWeight(log, m)
					pc.notify(m.Name)
				}
			})
		},
		UpdateFunc: func(oldObj, newObj any) {
			pc.guard(log, func() {
				o, ok1 := oldObj.(*metav1.PartialObjectMetadata)
				n, ok2 := newObj.(*metav1.PartialObjectMetadata)
				if !ok1 || !ok2 || maps.Equal(o.Labels, n.Labels) && maps.Equal(o.Annotations, n.Annotations) {
					return // a status update: nothing the adapter reads
				}
				checkWeight(log, n)
				pc.notify(n.Name)
			})
		},
		DeleteFunc: func(obj any) {
			pc.guard(log, func() {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
					pc.notify(m.Name)
				}
			})
		},
	})
	return pc
}

// guard runs handle, a pods event's handler, on the informer's goroutine,
// whose own recovery ends the process: a panic in it is logged with its
// stack (once a minute at most), and since the pod it was about is not
// known, every subscriber recomputes its set.
func (pc *podCache) guard(log *logrus.Entry, handle func()) {
	p := panics.Catch(handle)
	if p == nil {
		return
	}
	pc.panics.Log(log, p, "kubernetes: handling a pod event panicked; recomputing every set of the namespace")
	for _, w := range pc.subscribers() {
		w.recompute()
	}
}

func (pc *podCache) start() { pc.reg.goFunc(func() { pc.informer.RunWithContext(pc.ctx) }) }

func (pc *podCache) stop() { pc.cancel() }

func (pc *podCache) subscribe(w *watcher) {
	pc.mu.Lock()
	pc.subs[w] = struct{}{}
	pc.mu.Unlock()
}

func (pc *podCache) unsubscribe(w *watcher) {
	pc.mu.Lock()
	delete(pc.subs, w)
	pc.mu.Unlock()
}

func (pc *podCache) subscribers() []*watcher {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]*watcher, 0, len(pc.subs))
	for w := range pc.subs {
		out = append(out, w)
	}
	return out
}

// notify makes the subscribers that target pod name recompute.
func (pc *podCache) notify(name string) {
	for _, w := range pc.subscribers() {
		if w.references(name) {
			w.recompute()
		}
	}
}

// lookup implements podLookup over the informer's cache.
func (pc *podCache) lookup(name string) (podMeta, bool) {
	obj, ok, err := pc.informer.GetStore().GetByKey(pc.ns + "/" + name)
	if err != nil || !ok {
		return podMeta{}, false
	}
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return podMeta{}, false
	}
	pm := podMeta{labels: m.Labels}
	if v, ok := m.Annotations[WeightAnnotation]; ok {
		if w, err := parseWeight(v); err == nil {
			pm.weight, pm.hasWeight = w, true
		}
	}
	return pm, true
}

// slimPod keeps of a pod's metadata what the adapter reads (its name,
// labels and weight annotation) and what the informer needs.
func slimPod(obj any) (any, error) {
	m, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	slim := &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Labels: m.Labels,
	}}
	if v, ok := m.Annotations[WeightAnnotation]; ok {
		slim.Annotations = map[string]string{WeightAnnotation: v}
	}
	return slim, nil
}

// checkWeight logs a pod's weight annotation that is not a weight (the
// pod then has weight 1).
func checkWeight(log *logrus.Entry, m *metav1.PartialObjectMetadata) {
	if v, ok := m.Annotations[WeightAnnotation]; ok {
		if _, err := parseWeight(v); err != nil {
			log.WithField("pod", m.Name).WithError(err).Warn("kubernetes: ignoring the pod's weight annotation; its weight is 1")
		}
	}
}
