package nacos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
)

// Registration: Remora announces the application it runs beside (see
// pkg/register) as an ephemeral Nacos instance of the registry's SDK
// client. An ephemeral instance lives as long as the client's connection:
// the server removes it when the connection closes, so nothing but the
// connection has to be kept alive.
//
// The adapter replaces its client when the connection is lost (see
// supervise), and the server forgets the old connection's instances, so the
// registry keeps the set of live registrations and announces each of them
// again on every new client (keepRegistered). While there is no client a
// registration is kept and announced once one connects, and a
// deregistration is made once one connects (a server that crashed keeps
// the instances of the connections it lost in its store).
//
// The server can also drop the instance while the connection stays up:
// Polaris keys an instance by service, cluster, address and port, not by
// connection, so another client that registered the same address and port
// (the previous Remora process of a restart that overlaps with this one,
// or one that was hung when this one started) takes this instance with it
// when it deregisters or its connection closes. So each registration
// follows its own service (a watch of it, sharing the one subscription of
// the service with any upstream's) and, every readBack, looks for itself in
// the list the server last pushed; if the server no longer lists it, or
// lists it with another weight or other metadata (another client
// registered its address and port with other values), it is announced
// again (verify, then restore). A panic in either is contained to
// its registration (see step).

// maxNacosWeight is the largest weight a Nacos server accepts.
const maxNacosWeight = 10000

// Retries of one registration request refused by the server: Polaris
// refuses the second of two concurrent requests for one instance (the
// SDK's own re-registration on reconnecting can be the first).
const (
	callAttempts = 3
	callPause    = 50 * time.Millisecond
)

var (
	_ discovery.Registrar      = (*registry)(nil)
	_ discovery.Registration   = (*registration)(nil)
	_ discovery.StatusReporter = (*registration)(nil)
)

// registration is one instance announced through Register.
//
// Its SDK calls (Register, Update, Deregister, keepRegistered's
// re-registration and Close's withdrawal) are serialised by callMu, which
// is held for the whole of each call, so they never overlap or overtake
// one another; param, gen and gone are guarded by callMu. The client used
// is read under callMu (and the registry's mu), so that supervise, once it
// has cleared the client, can wait for the calls on the old one to end
// (fenceRegistrations) before closing it. Lock order: callMu, then the
// registry's mu; no SDK call is made while holding mu. follow and
// announcedAt are guarded by callMu too. reg, key, cluster and status are
// immutable (status records its own changes); panicked is safe for
// concurrent use.
type registration struct {
	reg     *registry
	key     serviceKey // Clusters unused: see cluster
	cluster string     // "" registers without a cluster (Nacos' DEFAULT)
	// status is Up while the server holds the instance: from an
	// announcement until the connection is lost (the server drops an
	// ephemeral instance with it) or an announcement fails.
	status *discovery.StatusRecorder

	callMu    sync.Mutex
	param     vo.RegisterInstanceParam // what is announced
	gen       int                      // generation of the client it is announced on; 0: none
	announced bool                     // announced once: announcing again is a re-registration
	gone      bool                     // deregistered, or the registry closed
	// follow watches the service, for verify; nil when the registry's
	// readBack is 0 (or it closed before the watch could be made).
	follow      *watcher
	announcedAt time.Time // of the last successful announcement

	panicked panics.Log // keepRegistered's panics in verify and restore (see step)
}

// Status implements discovery.StatusReporter.
func (g *registration) Status() discovery.RegistrationStatus { return g.status.Status() }

// Register implements discovery.Registrar: inst becomes an ephemeral
// instance of service (a plain name, group@@name or group@@name@@cluster)
// in the registry's group and, unless the service names one, the first of
// the registry's clusters (else none, which Nacos calls DEFAULT). Nacos
// knows an instance by cluster, IP and port: inst.ID is not sent. Weight
// is inst.Weight / weight_scale, Healthy inst.Healthy, enabled, and the
// metadata inst.Metadata.
//
// One instance per service can be registered at a time (a Nacos client
// connection holds one instance per service). If the registry has no
// connection, the instance is kept and registered as soon as it connects
// (nil is returned); an error means nothing is registered or kept. ctx is
// checked between requests; each request is bounded by the timeout
// option.
func (r *registry) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	key, err := registrationKey(service, r.group)
	if err != nil {
		return nil, fmt.Errorf("nacos: register: %w", err)
	}
	g := &registration{reg: r, key: key, status: discovery.NewStatusRecorder()}
	switch {
	case len(key.Clusters) == 1:
		g.cluster = key.Clusters[0]
	case len(r.clusters) > 0:
		g.cluster = r.clusters[0]
	}
	if g.param, err = g.paramFor(inst); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	g.callMu.Lock()
	defer g.callMu.Unlock()
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return nil, fmt.Errorf("nacos: register %s: registry closed", key)
	case r.regs[key.subKey()] != nil:
		r.mu.Unlock()
		return nil, fmt.Errorf("nacos: register %s: an instance of this service is registered already; deregister it first", key.subKey())
	}
	r.regs[key.subKey()] = g
	delete(r.withdrawals, withdrawalKey(key, g.param.Ip, g.param.Port))
	c, gen, down := r.client, r.gen, r.downErr
	if r.readBack > 0 {
		g.follow = r.watchLocked(serviceKey{Group: key.Group, Service: key.Service})
	}
	r.mu.Unlock()
	if c == nil {
		r.log.WithField("service", key.subKey()).Info("nacos: no connection to the server yet; registering the instance once connected")
		if down != nil {
			// Why, as the registrations made before were told (setDown
			// tells them only of a new reason).
			g.status.Down(down)
		}
		return g, nil
	}
	if err := g.announce(ctx, c); err != nil {
		g.gone = true
		g.stopFollowing()
		// The SDK keeps even a failed registration for its own redo on
		// reconnecting; remove it.
		_, _ = c.DeregisterInstance(g.deregisterParam())
		r.forget(g)
		return nil, err
	}
	g.gen, g.announced, g.announcedAt = gen, true, time.Now()
	g.status.Up(false)
	return g, nil
}

// stopFollowing stops the watch of the service; callMu must be held.
func (g *registration) stopFollowing() {
	if g.follow != nil {
		_ = g.follow.Stop()
		g.follow = nil
	}
}

// paramFor maps inst to the SDK's registration request.
func (g *registration) paramFor(inst discovery.Instance) (vo.RegisterInstanceParam, error) {
	if err := checkWeight(inst.Weight, g.reg.scale); err != nil {
		return vo.RegisterInstanceParam{}, fmt.Errorf("nacos: register %s: weight %w", g.key.subKey(), err)
	}
	w := float64(inst.Weight) / float64(g.reg.scale)
	if inst.Address == "" || inst.Port < 1 || inst.Port > 65535 {
		return vo.RegisterInstanceParam{}, fmt.Errorf("nacos: register %s: address %q port %d; want an address and a port 1..65535",
			g.key.subKey(), inst.Address, inst.Port)
	}
	meta := maps.Clone(inst.Metadata)
	if meta == nil {
		meta = map[string]string{} // Polaris refuses a registration without metadata
	}
	return vo.RegisterInstanceParam{
		Ip: inst.Address, Port: uint64(inst.Port), Weight: w, Enable: true, Healthy: inst.Healthy,
		Metadata: meta, ClusterName: g.cluster, ServiceName: g.key.Service, GroupName: g.key.Group, Ephemeral: true,
	}, nil
}

func (g *registration) deregisterParam() vo.DeregisterInstanceParam {
	return vo.DeregisterInstanceParam{
		Ip: g.param.Ip, Port: g.param.Port, Cluster: g.param.ClusterName,
		ServiceName: g.param.ServiceName, GroupName: g.param.GroupName, Ephemeral: true,
	}
}

// describe names the instance in an error.
func (g *registration) describe(verb string, err error) error {
	return fmt.Errorf("nacos: %s %s in %s: %w", verb, hostPort(g.param.Ip, g.param.Port), g.key.subKey(), err)
}

// announce registers param on c; callMu must be held.
func (g *registration) announce(ctx context.Context, c namingClient) error {
	p := g.param
	return call(ctx, func() (bool, error) { return c.RegisterInstance(p) }, func(err error) error {
		return g.describe("register", err)
	})
}

// call makes an SDK request, again after a short pause if the server
// refuses it, up to callAttempts times while ctx lasts.
func call(ctx context.Context, f func() (bool, error), wrap func(error) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		var ok bool
		ok, err = f()
		if ok && err == nil {
			return nil
		}
		if err == nil {
			err = errors.New("refused by the server")
		}
		if attempt == callAttempts || !retry.Sleep(ctx, callPause) {
			return wrap(err)
		}
	}
}

// clientGen returns the current client (nil if none) and its generation.
func (r *registry) clientGen() (namingClient, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.client, r.gen
}

// Update implements discovery.Registration: it registers the instance again
// with inst's weight, health and metadata (same address and port). Without
// a connection the new values are kept and registered once connected; a
// failed request is retried in the background as well as reported.
func (g *registration) Update(ctx context.Context, inst discovery.Instance) error {
	p, err := g.paramFor(inst)
	if err != nil {
		return err
	}
	g.callMu.Lock()
	defer g.callMu.Unlock()
	if g.gone {
		return g.describe("update", errors.New("deregistered"))
	}
	if p.Ip != g.param.Ip || p.Port != g.param.Port {
		return fmt.Errorf("nacos: update %s in %s: the address changed to %s; deregister and register instead",
			hostPort(g.param.Ip, g.param.Port), g.key.subKey(), hostPort(p.Ip, p.Port))
	}
	g.param = p
	c, gen := g.reg.clientGen()
	if c == nil {
		g.gen = 0 // announced with the new values once connected
		return nil
	}
	if err := g.announce(ctx, c); err != nil {
		g.gen = 0
		g.status.Down(err)
		signal(g.reg.regWake) // keepRegistered tries again
		return err
	}
	g.gen, g.announcedAt = gen, time.Now()
	g.status.Up(false)
	return nil
}

// Deregister implements discovery.Registration: the instance stops being
// kept and is deregistered from the server. Without a connection, or if
// the server does not take it, the deregistration is made on the next
// connection (withdrawLater): a server that stopped gracefully removed the
// ephemeral instance with its connection, but one that crashed keeps it.
// It is idempotent.
func (g *registration) Deregister(ctx context.Context) error {
	g.callMu.Lock()
	defer g.callMu.Unlock()
	return g.withdraw(ctx)
}

// withdraw is Deregister with callMu held.
func (g *registration) withdraw(ctx context.Context) error {
	if g.gone {
		return nil
	}
	g.gone = true
	g.stopFollowing()
	r := g.reg
	// g stays in the set until the request is done (fenceRegistrations).
	defer r.forget(g)
	c, _ := r.clientGen()
	p := g.deregisterParam()
	if c == nil {
		// A server that stopped gracefully dropped the instance with the
		// connection; one that crashed keeps it in its store and lists
		// it when it is back: deregister it on the next connection.
		r.withdrawLater(g.key, p)
		return nil
	}
	err := call(ctx, func() (bool, error) { return c.DeregisterInstance(p) }, func(err error) error {
		return g.describe("deregister", err)
	})
	if err != nil {
		r.withdrawLater(g.key, p)
	}
	return err
}

// withdrawalKey identifies a withdrawn instance: its service and address.
func withdrawalKey(key serviceKey, ip string, port uint64) string {
	return key.subKey() + sep + hostPort(ip, port)
}

// withdrawLater records a deregistration the server may not have had, for
// keepRegistered to make on the next connection (flushWithdrawals). A
// registration of the same service and address made meanwhile cancels it
// (Register).
func (r *registry) withdrawLater(key serviceKey, p vo.DeregisterInstanceParam) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.withdrawals[withdrawalKey(key, p.Ip, p.Port)] = p
	signal(r.regWake)
}

// flushWithdrawals makes the deregistrations withdrawLater recorded on the
// current client; false if one failed (keepRegistered tries again after
// its backoff). withdrawMu is held for the calls, so that
// fenceRegistrations waits for them before a client is closed.
func (r *registry) flushWithdrawals() bool {
	r.withdrawMu.Lock()
	defer r.withdrawMu.Unlock()
	r.mu.Lock()
	c, pending := r.client, maps.Clone(r.withdrawals)
	r.mu.Unlock()
	if c == nil || len(pending) == 0 {
		return true
	}
	ok := true
	for k, p := range pending {
		ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
		err := call(ctx, func() (bool, error) { return c.DeregisterInstance(p) }, func(err error) error { return err })
		cancel()
		log := r.log.WithFields(map[string]any{"service": p.GroupName + sep + p.ServiceName, "address": hostPort(p.Ip, p.Port)})
		if err != nil {
			log.WithError(err).Warn("nacos: deregistering an instance withdrawn while the server was unreachable failed; retrying")
			ok = false
			continue
		}
		r.mu.Lock()
		if q, still := r.withdrawals[k]; still && q == p {
			delete(r.withdrawals, k)
		}
		r.mu.Unlock()
		log.Info("nacos: instance withdrawn while the server was unreachable deregistered")
	}
	return ok
}

// forget removes g from the live registrations.
func (r *registry) forget(g *registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regs[g.key.subKey()] == g {
		delete(r.regs, g.key.subKey())
	}
}

// restore registers g on the current client if it is not announced there
// yet; false if that failed.
func (g *registration) restore() bool {
	g.callMu.Lock()
	defer g.callMu.Unlock()
	r := g.reg
	if g.gone {
		return true
	}
	c, gen := r.clientGen()
	if c == nil || g.gen == gen {
		return true // nothing to do until a client connects (setClient wakes keepRegistered)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	log := r.log.WithField("service", g.key.subKey())
	if err := g.announce(ctx, c); err != nil {
		log.WithError(err).Warn("nacos: registering the local instance on the new connection failed; retrying")
		g.status.Down(err)
		return false
	}
	g.status.Up(g.announced)
	g.gen, g.announced, g.announcedAt = gen, true, time.Now()
	log.WithField("address", hostPort(g.param.Ip, g.param.Port)).Info("nacos: local instance registered")
	return true
}

// verify looks for the instance announced on the current client in the
// list of its service that the server last pushed (follow's subscription)
// and, if the server no longer lists it or lists it with values other than
// those announced (differs), marks it not announced, so that restore
// announces it again, and reports true. It looks only once the
// server has had readBackGrace to push the announcement, and only in a
// list that is the server's current word (see subscription.current); a
// registration without follow is not looked for. A disabled instance is
// left out of the server's pushes, so one disabled on the server (the
// console's "offline") is announced again, enabled: POST /drain is the way
// to take the application out.
func (g *registration) verify() (lost bool) {
	g.callMu.Lock()
	defer g.callMu.Unlock()
	r := g.reg
	if g.gone || g.follow == nil || g.gen == 0 || time.Since(g.announcedAt) < r.readBackGrace {
		return false
	}
	if c, gen := r.clientGen(); c == nil || gen != g.gen {
		return false // restore announces it on the next client
	}
	hosts, current := g.follow.sub.current()
	if !current {
		return false
	}
	cluster := cmp.Or(g.cluster, DefaultCluster)
	why := errors.New("the server no longer lists it (another client that registered this address and port deregistered it, or its connection closed)")
	msg := "nacos: the local instance is gone from the server; registering it again"
	for i := range hosts {
		if h := &hosts[i]; h.Ip == g.param.Ip && h.Port == g.param.Port && clusterOf(h) == cluster {
			diff := g.differs(h)
			if diff == "" {
				return false
			}
			why = fmt.Errorf("the server lists it with another %s (someone else changed it, or registered this address and port with other values)", diff)
			msg = "nacos: the local instance was changed on the server; registering it again"
			break
		}
	}
	err := g.describe("keep", why)
	r.log.WithField("service", g.key.subKey()).WithError(err).Warn(msg)
	g.status.Down(err)
	g.gen = 0
	return true
}

// differs says which of the values announced (weight, metadata) the
// server lists h with otherwise ("" if none); callMu must be held. A
// weight the server truncated to an integer (Polaris keeps integers) is
// the same, and so is metadata the server adds for its own bookkeeping
// (InternalMetadataPrefix).
func (g *registration) differs(h *model.Instance) string {
	var diffs []string
	if w := g.param.Weight; h.Weight != w && h.Weight != math.Trunc(w) {
		diffs = append(diffs, "weight")
	}
	if !maps.Equal(labels(h.Metadata), g.param.Metadata) {
		diffs = append(diffs, "metadata")
	}
	return strings.Join(diffs, " and ")
}

// liveRegistrations lists the registrations kept.
func (r *registry) liveRegistrations() []*registration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Collect(maps.Values(r.regs))
}

// keepRegistered is the goroutine that announces the live registrations on
// each new client (woken by setClient), every readBack announces again
// those the server no longer lists (verify), and retries failed
// announcements with backoff, until the registry closes. A panic in one
// registration's verify or restore is contained to it (see step).
func (r *registry) keepRegistered() {
	defer r.regWG.Done()
	var failures int
	var retry <-chan time.Time
	var readBack <-chan time.Time
	if r.readBack > 0 {
		t := time.NewTicker(r.readBack)
		defer t.Stop()
		readBack = t.C
	}
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.regWake:
		case <-retry:
		case <-readBack:
			lost := false
			for _, g := range r.liveRegistrations() {
				if g.step(g.verify, true) {
					lost = true
				}
			}
			if !lost {
				continue
			}
		}
		retry = nil
		ok := true
		if p := panics.Catch(func() { ok = r.flushWithdrawals() }); p != nil {
			r.log.WithError(p).Error("nacos: deregistering withdrawn instances panicked; retrying")
			ok = false
		}
		for _, g := range r.liveRegistrations() {
			if !g.step(g.restore, false) {
				ok = false
			}
		}
		if ok {
			failures = 0
			continue
		}
		failures++
		retry = time.After(r.backoff(failures))
	}
}

// step calls f, g's verify or restore for keepRegistered, and returns its
// result. A panic in it (the SDK, a list no test foresaw) is contained to
// g: it is logged with its stack (once a minute at most), g's status goes
// Down with it (a *panics.Error), and g is taken as not announced on the
// current client, so that restore announces it again there; step then
// returns onPanic (verify: lost, so restore runs at once; restore:
// failed, so it runs again after keepRegistered's backoff). callMu, which
// verify and restore hold while they run, is released as the panic
// unwinds them, so Update and Deregister are not blocked.
func (g *registration) step(f func() bool, onPanic bool) bool {
	var result bool
	p := panics.Catch(func() { result = f() })
	if p == nil {
		return result
	}
	g.callMu.Lock()
	defer g.callMu.Unlock()
	log := g.reg.log.WithField("service", g.key.subKey())
	g.panicked.Log(log, p, "nacos: keeping the local instance registered panicked; it is down, and registered again on the current connection")
	if !g.gone {
		g.status.Down(g.describe("keep", p))
		g.gen = 0
	}
	return onPanic
}

// fenceRegistrations waits for every SDK call a registration is making to
// end. supervise calls it after clearing the client and before closing it,
// so that no registration request runs on a closing client. A request on a
// lost connection fails fast; at worst this waits for the timeout option.
func (r *registry) fenceRegistrations() {
	r.withdrawMu.Lock()
	//lint:ignore SA2001 waiting for the lock is the point: nothing to do inside
	r.withdrawMu.Unlock()
	for _, g := range r.liveRegistrations() {
		g.callMu.Lock()
		//lint:ignore SA2001 waiting for the lock is the point: nothing to do inside
		g.callMu.Unlock()
	}
}

// withdrawAll deregisters every live registration (Close).
func (r *registry) withdrawAll() {
	for _, g := range r.liveRegistrations() {
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		g.callMu.Lock()
		if err := g.withdraw(ctx); err != nil {
			r.log.WithError(err).Warn("nacos: deregistering the local instance on close failed; the server removes it with the connection")
		}
		g.callMu.Unlock()
		cancel()
	}
}

// hostPort joins an instance's address and port for a message, with an
// IPv6 address in brackets.
func hostPort(ip string, port uint64) string {
	return net.JoinHostPort(ip, strconv.FormatUint(port, 10))
}
