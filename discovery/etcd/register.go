package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
)

// Registration is level-triggered, as watching is. Each registration has one
// reconciler goroutine (run), the only writer of its key, which holds the
// wanted value and converges etcd on it whatever happened in between:
//
//   - no lease (the first write, or the lease was lost): grant one with the
//     registration TTL, keep it alive, and put the value under it;
//   - the keep-alive stream closed (clientv3 closes it when a TTL passes
//     without an answer, or when etcd says the lease is gone) or a put
//     answered "lease not found": the lease is lost; grant a new one and
//     put again (a re-registration);
//   - the key is watched from the revision of the reconciler's last put: a
//     deletion (by hand, by the previous Remora of an overlapping restart
//     deregistering the same instance, by the expiry of a lease someone
//     else put it under) or a put of another value or under another lease
//     (someone else overwrote it) puts it again at once;
//   - every TTL the key is read back; if it is missing or differs (deleted
//     unseen, overwritten), it is put again;
//   - Update changes the wanted value and wakes the reconciler, which puts
//     it; Deregister stops the reconciler, then deletes the key and revokes
//     the lease. A lease etcd could not be asked to revoke (it is down or
//     cut off) is revoked in the background once it answers (revokeLater):
//     an etcd that comes back with its data would keep the key a full TTL.
//
// A failed step is retried after a backoff of 100 ms doubling to 1 s, with
// jitter; a request waits for etcd up to opTimeout (clientv3 waits for a
// connection, so a request pending when etcd returns goes through at once).
// An old lease is revoked once the key is under a new one. A panic in the
// reconciler is contained to its registration, which is then down until it
// is written again (see run).

// opTimeout bounds one request of a reconciler.
const opTimeout = 5 * time.Second

var (
	_ discovery.Registrar      = (*Registry)(nil)
	_ discovery.Registration   = (*registration)(nil)
	_ discovery.StatusReporter = (*registration)(nil)
	_ leaser                   = (*clientv3.Client)(nil)
)

// leaser is what registration needs beyond Client; *clientv3.Client has it.
type leaser interface {
	Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error)
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
	Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error)
	Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error)
	KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error)
	Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error)
	Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan
}

var errCannotRegister = errors.New("etcd: this client cannot register instances")

// leaser returns the client as a leaser, or why there is none.
func (r *Registry) leaser() (leaser, error) {
	cli, err := r.client()
	if err != nil {
		return nil, err
	}
	l, ok := cli.(leaser)
	if !ok {
		return nil, errCannotRegister
	}
	return l, nil
}

// Register implements discovery.Registrar: inst is written under
// <prefix>/<service>/<inst.ID> as JSON (healthy: true), with a lease that
// the registration's reconciler keeps alive, and renews or replaces, until
// Deregister or Close.
//
// Register returns once the first write has been tried, or when ctx ends.
// The registration is kept and converged either way: if etcd is unreachable
// (or not connected yet) the key is written as soon as it answers, and
// Status says so meanwhile. An error means nothing is kept: a bad service
// name or ID, a registry that is closed, an instance of the same key
// registered already.
func (r *Registry) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	if err := checkService(service); err != nil {
		return nil, fmt.Errorf("etcd: register: service %w", err)
	}
	if err := checkID(inst.ID); err != nil {
		return nil, fmt.Errorf("etcd: register in %s: instance ID %w", service, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	value, err := encode(inst)
	if err != nil {
		return nil, err
	}
	key := r.prefix + "/" + service + "/" + inst.ID
	ttl := int64((r.RegistrationTTL + time.Second - 1) / time.Second)
	if ttl < 1 {
		ttl = int64(DefaultRegistrationTTL / time.Second)
	}
	gctx, cancel := context.WithCancel(r.ctx)
	g := &registration{
		reg: r, key: key, ttl: ttl, log: r.log.WithFields(logrus.Fields{"service": service, "node": inst.ID}),
		status: discovery.NewStatusRecorder(), ctx: gctx, cancel: cancel,
		value: value, version: 1, attempted: make(chan struct{}),
		wake: make(chan struct{}, 1), exited: make(chan struct{}),
	}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("etcd: register %s: registry closed", key)
	case r.regs[key] != nil:
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("etcd: register %s: registered already; deregister it first", key)
	case r.cli != nil:
		if _, ok := r.cli.(leaser); !ok {
			r.mu.Unlock()
			cancel()
			return nil, errCannotRegister
		}
	}
	r.regs[key] = g
	r.wg.Go(g.run)
	r.mu.Unlock()

	_ = g.wait(ctx, 1) // a failure is logged by run and shown by Status
	return g, nil
}

// encode is the JSON value of a registered instance.
func encode(inst discovery.Instance) (string, error) {
	w := int64(inst.Weight)
	healthy := true
	data, err := json.Marshal(Value{Address: inst.Address, Port: inst.Port, Weight: &w, Healthy: &healthy, Metadata: inst.Metadata})
	if err != nil {
		return "", fmt.Errorf("etcd: encoding instance %q: %w", inst.ID, err)
	}
	return string(data), nil
}

// registration is one registered instance.
//
// reg, key, ttl, log, status, ctx, cancel, wake and exited are immutable.
// mu guards value, version, done, doneErr, attempted and gone: the wanted
// state and the outcome of the reconciler's last attempt, which Update and
// Register wait for. The lease state (held) is owned by the run goroutine;
// Deregister reads the final leases after run has exited. Update and
// Deregister are called by one goroutine at a time; Status by any.
type registration struct {
	reg    *Registry
	key    string
	ttl    int64 // seconds
	log    *logrus.Entry
	status *discovery.StatusRecorder
	ctx    context.Context // ends the reconciler and its requests
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: the wanted value changed
	exited chan struct{} // closed when run returns

	mu        sync.Mutex
	value     string        // wanted value
	version   uint64        // of value, from 1
	done      uint64        // the version of the last attempt
	doneErr   error         // its outcome
	attempted chan struct{} // closed and replaced after each attempt
	gone      bool          // Deregister was called

	// final are the leases held when run returned (the current one, and a
	// replaced one not revoked yet; 0: none): Deregister revokes them.
	final [2]clientv3.LeaseID
}

// held is the lease a reconciler keeps, owned by its run goroutine.
type held struct {
	lease   clientv3.LeaseID // 0: none
	stopKA  context.CancelFunc
	ka      <-chan *clientv3.LeaseKeepAliveResponse
	applied uint64           // version written under lease; 0: none
	putRev  int64            // etcd's revision of that write
	old     clientv3.LeaseID // a replaced lease to revoke once the key has moved
}

// deletions watches a registration's key for its deletion, or a put by
// someone else, after the reconciler's last put; owned by the run
// goroutine.
type deletions struct {
	ch clientv3.WatchChan // nil: not watching
	// opening delivers ch once clientv3's Watch has returned; nil when no
	// watch is being opened. Watch waits for the client's watch stream,
	// which during a partition is reconnecting: called on the reconciler's
	// goroutine it held the loop (no lease loss seen, no status) until the
	// partition ended.
	opening chan opened
	stop    context.CancelFunc
	// retry is false after a watch ended on its own (etcd compacted the
	// revision, or the client closed), until the next read-back: the
	// read-backs cover the key meanwhile, and a client that ends every
	// watch at once is not asked again in a loop.
	retry bool
}

// start opens a watch of key from the revision after rev, unless watching
// (or opening) already or told not to retry yet. It does not wait: the
// watch channel comes on opening, for the reconciler to take.
func (d *deletions) start(ctx context.Context, cli leaser, key string, rev int64) {
	if d.ch != nil || d.opening != nil || !d.retry {
		return
	}
	wctx, stop := context.WithCancel(ctx)
	opening := make(chan opened, 1)
	go func() {
		var o opened
		o.panicked = panics.Catch(func() { o.ch = cli.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(rev+1)) })
		opening <- o
	}()
	d.opening, d.stop = opening, stop
}

// opened is what opening a watch gave: its channel, or the panic of
// clientv3's Watch, which the reconciler (see run), or the watcher's
// follow, raises again as its own.
type opened struct {
	ch       clientv3.WatchChan
	panicked *panics.Error
}

// take takes the watch start opened, or raises its panic.
func (d *deletions) take(o opened) {
	d.ch, d.opening = o.ch, nil
	if o.panicked != nil {
		panic(o.panicked)
	}
}

// end stops the watch (or its opening: Watch returns once its context
// ends); retry says whether start may make another at once.
func (d *deletions) end(retry bool) {
	if d.stop != nil {
		d.stop()
	}
	d.ch, d.opening, d.stop, d.retry = nil, nil, nil, retry
}

// drop forgets the lease (it is lost or refused), stopping its keep-alive.
func (h *held) drop() {
	if h.stopKA != nil {
		h.stopKA()
	}
	if h.lease != 0 {
		h.old = h.lease
	}
	h.lease, h.stopKA, h.ka, h.applied = 0, nil, nil, 0
}

// Status implements discovery.StatusReporter.
func (g *registration) Status() discovery.RegistrationStatus { return g.status.Status() }

// wanted returns the wanted value and its version.
func (g *registration) wanted() (string, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.value, g.version
}

// finish records the outcome of an attempt to write version v.
func (g *registration) finish(v uint64, err error) {
	g.mu.Lock()
	g.done, g.doneErr = v, err
	close(g.attempted)
	g.attempted = make(chan struct{})
	g.mu.Unlock()
}

// wait blocks until an attempt at version v (or a later one) has been made
// and returns its outcome, or until ctx ends or the reconciler stops.
func (g *registration) wait(ctx context.Context, v uint64) error {
	for {
		g.mu.Lock()
		done, err, ch := g.done, g.doneErr, g.attempted
		g.mu.Unlock()
		if done >= v {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("etcd: %s not written yet: %w", g.key, ctx.Err())
		case <-g.exited:
			return fmt.Errorf("etcd: %s: registration stopped", g.key)
		}
	}
}

// run is the reconciler: see the comment at the top of this file. It owns
// the lease (held) and the deletion watch (deletions) across reconcile's
// runs.
//
// A panic in reconcile (the client, an answer no test foresaw) is
// contained to the registration: it is logged with its stack (once a
// minute at most), the status goes Down with it (a *panics.Error), which is
// also the outcome Register or Update is waiting for; the deletion watch
// is ended, and reconcile starts again after discovery.PanicPause (or at
// once on Update) and writes the value again. The lease outlives the panic
// with its keep-alive, so the key stays meanwhile and is written again
// under the same lease; a lease whose keep-alive was not started (the
// panic came between Grant and KeepAlive's return) is dropped: its
// keep-alive stopped, it is revoked once the key is under a new one, or by
// Deregister.
func (g *registration) run() {
	var (
		h      held
		d      = deletions{retry: true}
		logged panics.Log
	)
	defer close(g.exited)
	defer func() {
		d.end(false)
		if h.stopKA != nil {
			h.stopKA()
		}
		g.final = [2]clientv3.LeaseID{h.lease, h.old}
	}()
	for {
		p := panics.Catch(func() { g.reconcile(&h, &d) })
		if p == nil {
			return
		}
		if inner, ok := p.Value.(*panics.Error); ok {
			p = inner // the deletion watch's, raised again: its own stack
		}
		logged.Log(g.log.WithField("key", g.key), p, "etcd: the registration's reconciler panicked; it is down, and written again after a pause")
		err := fmt.Errorf("etcd: registering %s: %w", g.key, p)
		g.status.Down(err)
		_, version := g.wanted()
		g.finish(version, err)
		d.end(true)
		if h.ka == nil {
			h.drop()
		}
		h.applied = 0
		if !g.sleep(discovery.PanicPause, nil) {
			return
		}
	}
}

// reconcile is run's loop; it returns when the registration stops.
func (g *registration) reconcile(h *held, d *deletions) {
	resync := time.NewTicker(time.Duration(g.ttl) * time.Second)
	defer resync.Stop()
	var (
		failures int
		lost     bool // the registration was held and then lost: the next write re-registers
		lastMsg  string
	)
	for {
		value, version := g.wanted()
		if h.lease == 0 || h.applied != version {
			d.end(true) // a watch from the write's revision follows it
			cli, err := g.reg.leaser()
			var ready <-chan struct{} // wakes the backoff when the client connects
			if err == nil {
				err = g.apply(cli, h, value, version)
			} else {
				ready = g.reg.ready
			}
			if g.ctx.Err() != nil {
				g.finish(version, fmt.Errorf("etcd: %s: registration stopped", g.key))
				return
			}
			// Status first: Register returns once finish is called, and
			// its caller may read Status at once.
			if err != nil {
				failures++
				g.status.Down(err)
				g.finish(version, err)
				if msg := err.Error(); msg != lastMsg {
					lastMsg = msg
					g.log.WithError(err).Warn("etcd: registration not written; retrying")
				}
				if !g.sleep(retry.Backoff(failures, backoffBase, backoffMax, rand.Float64), ready) {
					return
				}
				continue
			}
			if g.status.Up(lost) && (lost || failures > 0) {
				g.log.WithFields(logrus.Fields{"key": g.key, "reregistered": lost}).Info("etcd: registration written")
			}
			g.finish(version, nil)
			failures, lost, lastMsg = 0, false, ""
			continue
		}
		if cli, err := g.reg.leaser(); err == nil {
			d.start(g.ctx, cli, g.key, h.putRev)
		}
		select {
		case <-g.ctx.Done():
			return
		case <-g.wake:
		case _, ok := <-h.ka:
			if ok {
				// A keep-alive answer may have waited in the channel's
				// buffer: it says nothing about now, so Up is left to
				// writes and read-backs.
				continue
			}
			err := fmt.Errorf("etcd: lease of %s lost (no keep-alive answer for the %ds TTL, or etcd forgot it)", g.key, g.ttl)
			g.log.Warn(err.Error() + "; registering again")
			g.status.Down(err)
			h.drop()
			lost = true
		case o := <-d.opening:
			d.take(o)
		case resp, ok := <-d.ch:
			if !ok || resp.Canceled || resp.Err() != nil {
				d.end(false) // watched again after the next read-back
				continue
			}
			what := g.changedBy(resp.Events, h)
			if what == "" {
				continue // a progress notification, or the value as written
			}
			err := fmt.Errorf("etcd: %s was %s by someone else", g.key, what)
			g.log.Warn(err.Error() + "; writing it again")
			g.status.Down(err)
			h.applied, lost = 0, true
		case <-resync.C:
			d.retry = true
			if g.check(h) {
				lost = true
			}
		}
	}
}

// changedBy says what the watched events did to the key ("deleted",
// "overwritten"), or "" if they leave it as written under the held lease.
// The reconciler's own writes come before the watch's start revision.
func (g *registration) changedBy(events []*clientv3.Event, h *held) string {
	value, _ := g.wanted()
	what := ""
	for _, ev := range events {
		switch {
		case ev.Type == clientv3.EventTypeDelete:
			what = "deleted"
		case string(ev.Kv.Value) != value || clientv3.LeaseID(ev.Kv.Lease) != h.lease:
			what = "overwritten"
		default:
			what = ""
		}
	}
	return what
}

// apply writes value (version) under the held lease, granting one first if
// there is none. On success it revokes a replaced lease.
func (g *registration) apply(cli leaser, h *held, value string, version uint64) error {
	if h.lease == 0 {
		ctx, cancel := context.WithTimeout(g.ctx, opTimeout)
		resp, err := cli.Grant(ctx, g.ttl)
		cancel()
		if err != nil {
			return fmt.Errorf("etcd: granting a lease for %s: %w", g.key, err)
		}
		kaCtx, stopKA := context.WithCancel(g.ctx)
		// Held before KeepAlive: should that panic, run still has the
		// lease and its keep-alive to drop.
		h.lease, h.stopKA, h.ka, h.applied = resp.ID, stopKA, nil, 0
		ch, err := cli.KeepAlive(kaCtx, resp.ID)
		if err != nil {
			h.drop()
			return fmt.Errorf("etcd: keeping the lease of %s alive: %w", g.key, err)
		}
		h.ka = ch
	}
	ctx, cancel := context.WithTimeout(g.ctx, opTimeout)
	defer cancel()
	put, err := cli.Put(ctx, g.key, value, clientv3.WithLease(h.lease))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			h.drop()
		}
		return fmt.Errorf("etcd: put %s: %w", g.key, err)
	}
	h.applied, h.putRev = version, put.Header.Revision
	if h.old != 0 {
		// The key is under the new lease: revoking the old one deletes
		// nothing. An error is harmless (it expires).
		_, _ = cli.Revoke(ctx, h.old)
		h.old = 0
	}
	return nil
}

// check reads the key back; if it is missing or not what was written under
// the held lease, it marks the value unapplied so that run writes it again,
// and reports true. A failed read changes nothing but the status.
func (g *registration) check(h *held) (lost bool) {
	cli, err := g.reg.leaser()
	if err != nil || h.lease == 0 {
		return false
	}
	value, _ := g.wanted()
	ctx, cancel := context.WithTimeout(g.ctx, min(opTimeout, time.Duration(g.ttl)*time.Second))
	defer cancel()
	resp, err := cli.Get(ctx, g.key)
	switch {
	case err != nil:
		if g.ctx.Err() == nil {
			g.status.Down(fmt.Errorf("etcd: reading back %s: %w", g.key, err))
		}
		return false
	case len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == value && clientv3.LeaseID(resp.Kvs[0].Lease) == h.lease:
		g.status.Up(false)
		return false
	}
	err = fmt.Errorf("etcd: %s is missing or was changed by someone else", g.key)
	g.log.Warn(err.Error() + "; writing it again")
	g.status.Down(err)
	h.applied = 0
	return true
}

// sleep waits d, or until woken by Update or ready; false when the
// registration stops.
func (g *registration) sleep(d time.Duration, ready <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ready:
	case <-g.wake:
	case <-g.ctx.Done():
		return false
	}
	return true
}

// Update implements discovery.Registration: inst (same ID) becomes the
// wanted value. It returns the outcome of the reconciler's attempt to
// write it, or ctx's error if that takes longer; either way the value is
// kept and written as soon as etcd accepts it.
func (g *registration) Update(ctx context.Context, inst discovery.Instance) error {
	value, err := encode(inst)
	if err != nil {
		return err
	}
	g.mu.Lock()
	if g.gone {
		g.mu.Unlock()
		return fmt.Errorf("etcd: update %s: deregistered", g.key)
	}
	if value != g.value {
		g.value = value
		g.version++
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
	v := g.version
	g.mu.Unlock()
	return g.wait(ctx, v)
}

// Deregister implements discovery.Registration: it stops the reconciler,
// deletes the key and revokes the lease, and a replaced one not revoked yet
// (after a failed or panicked write). It waits for etcd until ctx ends, or
// unreachableTry after the client's connection is found not ready. If etcd
// could not be reached, the error is returned and the leases are revoked
// in the background once etcd answers (revokeLater), or the key expires
// with its lease. It is idempotent.
func (g *registration) Deregister(ctx context.Context) error {
	g.mu.Lock()
	already := g.gone
	g.gone = true
	g.mu.Unlock()
	g.cancel()
	<-g.exited
	if already {
		return nil
	}
	g.reg.forget(g)
	g.status.Down(nil)
	cli, err := g.reg.leaser()
	if err != nil {
		return nil // never connected: nothing was written
	}
	// clientv3 waits for a connection until ctx ends: a reload or a
	// shutdown would wait that long for an etcd that is down. A short
	// try once the connection is not ready, then the leases are revoked
	// in the background.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if conn := activeConn(cli); conn != nil {
		go giveUpUnready(ctx, conn, cancel)
	}
	_, err = cli.Delete(ctx, g.key)
	if err != nil && context.Cause(ctx) == errNotReady {
		err = fmt.Errorf("%w: %w", errNotReady, err)
	}
	var pending []clientv3.LeaseID
	for _, id := range g.final {
		if id == 0 {
			continue
		}
		if _, rerr := cli.Revoke(ctx, id); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			pending = append(pending, id)
		}
	}
	if len(pending) > 0 && g.reg.revokeLater(g.key, pending, g.log) && err != nil {
		return fmt.Errorf("etcd: deregister %s: %w (revoking its lease in the background until etcd answers)", g.key, err)
	}
	if err != nil {
		return fmt.Errorf("etcd: deregister %s: %w", g.key, err)
	}
	return nil
}

// unreachableTry bounds Deregister's requests once the client's connection
// to etcd is not ready.
const unreachableTry = 500 * time.Millisecond

// activeConn is cli's connection to etcd, nil if it has none it can tell
// (a client other than clientv3's).
func activeConn(cli leaser) *grpc.ClientConn {
	if c, ok := cli.(interface{ ActiveConnection() *grpc.ClientConn }); ok {
		return c.ActiveConnection()
	}
	return nil
}

var errNotReady = errors.New("no connection to etcd")

// giveUpUnready cancels ctx with errNotReady unreachableTry after conn is
// (or becomes) not ready, unless ctx ends first.
func giveUpUnready(ctx context.Context, conn *grpc.ClientConn, cancel context.CancelCauseFunc) {
	for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			return
		}
	}
	t := time.NewTimer(unreachableTry)
	defer t.Stop()
	select {
	case <-t.C:
		cancel(errNotReady)
	case <-ctx.Done():
	}
}

// revokeLater revokes the leases of a deregistered key in the background,
// again after a backoff until etcd takes it (or has forgotten them) or the
// registry closes: an etcd that comes back with its data restores the
// leases with a full TTL, and the key with them. Revoking deletes only
// what is under those leases, never a later registration of the key
// (which has a lease of its own). It reports false if the registry is
// closed.
func (r *Registry) revokeLater(key string, ids []clientv3.LeaseID, log *logrus.Entry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Go(func() {
		if p := panics.Catch(func() { r.revoke(key, ids, log) }); p != nil {
			log.WithField("key", key).WithError(p).Error("etcd: revoking a deregistered key's lease panicked; the key lapses with it")
		}
	})
	return true
}

// revoke is revokeLater's loop.
func (r *Registry) revoke(key string, ids []clientv3.LeaseID, log *logrus.Entry) {
	for failures := 1; retry.Sleep(r.ctx, retry.Backoff(failures, backoffBase, backoffMax, rand.Float64)); failures++ {
		cli, err := r.leaser()
		if err != nil {
			continue
		}
		left := ids[:0]
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(r.ctx, opTimeout)
			_, err := cli.Revoke(ctx, id)
			cancel()
			if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				left = append(left, id)
			}
		}
		if ids = left; len(ids) == 0 {
			log.WithField("key", key).Info("etcd: deregistered key's lease revoked, now that etcd answers")
			return
		}
	}
}

// forget removes g from the live registrations.
func (r *Registry) forget(g *registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regs[g.key] == g {
		delete(r.regs, g.key)
	}
}
