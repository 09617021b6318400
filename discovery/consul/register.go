package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/retry"
)

// Registration is level-triggered, as watching is. Each registration has one
// reconciler goroutine (run), the only writer of its service, which holds
// the wanted registration (service, ID, address, port, weights, labels as
// Meta and tags, and a TTL check) and converges the agent on it:
//
//   - it registers the service with its check, passing;
//   - every refresh interval it passes the TTL check. Any failure (the
//     agent is unreachable, or answers "unknown check" because it
//     restarted without its state or reaped the service) means: register
//     the whole service again, then go on passing the check;
//   - after each check passed it reads the service back from the agent;
//     if someone else changed it (registered the same ID again with other
//     labels, tags, weights, address or port, or with another check, or
//     added a check to it), it registers the wanted service again and
//     removes the checks it did not define, so the agent converges back
//     within a refresh interval or two;
//   - what the read-back cannot see, the check's TTL and
//     DeregisterCriticalServiceAfter (the agent answers an empty
//     definition for a TTL check), it renews: once a TTL (RegistrationTTL)
//     it registers the wanted service again, whatever the read-back says.
//     Someone else's TTL check under the same ID (an hour, never reaped)
//     is thus Remora's again within a TTL and a refresh interval, so a
//     killed Remora's instance goes critical a TTL after its last pass
//     and is reaped about a minute later. A renewal is free for the
//     servers and for consumers: the agent keeps the check's status and
//     output across a registration of the same check, and does not sync
//     a service that did not change to the catalog, so neither the
//     service's health and catalog indexes nor the Raft index move
//     (measured on Consul 1.14); it costs the local agent a registration
//     (and its write of the definition to its data dir) every TTL. A
//     failed renewal is a failed pass (below);
//   - Update changes the wanted registration and wakes the reconciler,
//     which registers it; Deregister stops the reconciler and deregisters
//     the service. If the agent does not take the deregistration (it is
//     down or cut off), it is made again in the background until it does
//     (withdrawLater), so an agent that comes back with its data does not
//     keep the service.
//
// A failed step is retried after a backoff of 250 ms doubling to 1 s, with
// jitter, so a returning agent has the service again within about a second.
// A panic in the reconciler is contained to its registration, which is
// then down until it is registered again (see run).

// RegistrationTTL is the TTL of the check Remora keeps passing for a
// registered instance; Consul marks it critical when Remora stops.
const RegistrationTTL = 10 * time.Second

// Registration timing defaults.
const (
	// defaultTTLRefresh is how often the TTL check is passed. Passing an
	// unchanged check is a cheap call to the local agent (it is not synced
	// to the servers), and it is how a restarted agent that forgot the
	// service is noticed, so it is frequent.
	defaultTTLRefresh = time.Second
	// deregisterCriticalAfter: Consul removes a service whose check stayed
	// critical this long (Remora gone for good); the reconciler registers
	// it again if Remora was merely cut off.
	deregisterCriticalAfter = "1m"
	// regOpTimeout bounds one request of a reconciler.
	regOpTimeout = 5 * time.Second
)

// agentClient is the part of Consul's agent API that registration uses;
// *api.Agent implements it.
type agentClient interface {
	ServiceRegisterOpts(service *api.AgentServiceRegistration, opts api.ServiceRegisterOpts) error
	ServiceDeregisterOpts(serviceID string, q *api.QueryOptions) error
	UpdateTTLOpts(checkID, output, status string, q *api.QueryOptions) error
	AgentHealthServiceByIDOpts(serviceID string, q *api.QueryOptions) (string, *api.AgentServiceChecksInfo, error)
	ChecksWithFilterOpts(filter string, q *api.QueryOptions) (map[string]*api.AgentCheck, error)
	CheckDeregisterOpts(checkID string, q *api.QueryOptions) error
}

var (
	_ discovery.Registrar      = (*registry)(nil)
	_ discovery.Registration   = (*registration)(nil)
	_ discovery.StatusReporter = (*registration)(nil)
	_ agentClient              = (*api.Agent)(nil)
)

// Register implements discovery.Registrar: an agent service with the ID
// "<service>-<inst.ID>" and a TTL check that the registration's reconciler
// keeps passing, and registers again whenever the agent has lost it, until
// Deregister or Close. Labels become Meta and "key=value" tags.
//
// Register returns once the first registration has been tried, or when ctx
// ends. The registration is kept and converged either way: if the agent is
// unreachable or refuses it, it is registered as soon as the agent accepts
// it, and Status says so meanwhile. An error means nothing is kept: a
// registry that cannot register, is closed, or has this service ID
// registered already.
func (r *registry) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	if r.agent == nil {
		return nil, fmt.Errorf("consul: this registry cannot register instances")
	}
	if service == "" || inst.ID == "" {
		return nil, fmt.Errorf("consul: register: service %q, instance id %q: both are required", service, inst.ID)
	}
	if err := checkRegistration(inst); err != nil {
		return nil, fmt.Errorf("consul: register %s: %w", service, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := service + "-" + inst.ID
	// A withdrawal of this ID still pending must not take the new
	// registration with it.
	r.cancelWithdrawal(id)
	gctx, cancel := context.WithCancel(context.Background())
	g := &registration{
		reg: r, service: service, id: id, checkID: "service:" + id,
		log:    r.log.WithFields(logrus.Fields{"service": service, "node": inst.ID}),
		status: discovery.NewStatusRecorder(), ctx: gctx, cancel: cancel,
		wake: make(chan struct{}, 1), exited: make(chan struct{}),
		want: r.serviceRegistration(service, id, inst), version: 1, attempted: make(chan struct{}),
	}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("consul: register %s: registry closed", id)
	case r.regs[id] != nil:
		r.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("consul: register %s: registered already; deregister it first", id)
	}
	r.regs[id] = g
	r.regWG.Add(1)
	r.mu.Unlock()
	go g.run()

	_ = g.wait(ctx, 1) // a failure is logged by run and shown by Status
	return g, nil
}

// serviceRegistration is the agent registration of inst under the service
// ID id.
func (r *registry) serviceRegistration(service, id string, inst discovery.Instance) *api.AgentServiceRegistration {
	meta := maps.Clone(inst.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	tags := make([]string, 0, len(meta)+1)
	for k, v := range meta {
		tags = append(tags, k+"="+v)
	}
	if r.tag != "" && !slices.Contains(tags, r.tag) {
		// The registry's watches take only instances with its tag: so
		// does the instance it registers.
		tags = append(tags, r.tag)
	}
	sort.Strings(tags)
	w := int(inst.Weight)
	return &api.AgentServiceRegistration{
		ID: id, Name: service, Address: inst.Address, Port: inst.Port, Meta: meta, Tags: tags,
		Weights: &api.AgentWeights{Passing: max(w, 1), Warning: 1},
		Check: &api.AgentServiceCheck{
			CheckID: "service:" + id, TTL: r.regTTL.String(), Status: api.HealthPassing,
			DeregisterCriticalServiceAfter: deregisterCriticalAfter,
		},
	}
}

// registration is one registered instance.
//
// reg, service, id, checkID, log, status, ctx, cancel, wake and exited are
// immutable. mu guards want, version, done, doneErr, attempted and gone:
// the wanted registration (never modified once stored) and the outcome of
// the reconciler's last attempt, which Register and Update wait for.
// Update and Deregister are called by one goroutine at a time; Status by
// any.
type registration struct {
	reg     *registry
	service string
	id      string // the Consul service ID
	checkID string
	log     *logrus.Entry
	status  *discovery.StatusRecorder
	ctx     context.Context // ends the reconciler and its requests
	cancel  context.CancelFunc
	wake    chan struct{} // capacity 1: the wanted registration changed
	exited  chan struct{} // closed when run returns

	mu        sync.Mutex
	want      *api.AgentServiceRegistration
	version   uint64 // of want, from 1
	done      uint64 // the version of the last attempt
	doneErr   error  // its outcome
	attempted chan struct{}
	gone      bool // Deregister was called
}

// Status implements discovery.StatusReporter.
func (g *registration) Status() discovery.RegistrationStatus { return g.status.Status() }

func (g *registration) wanted() (*api.AgentServiceRegistration, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.want, g.version
}

// finish records the outcome of an attempt to register version v.
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
			return fmt.Errorf("consul: %s not registered yet: %w", g.id, ctx.Err())
		case <-g.exited:
			return fmt.Errorf("consul: %s: registration stopped", g.id)
		}
	}
}

// run is the reconciler: see the comment at the top of this file.
//
// A panic in reconcile (the agent client, an answer no test foresaw) is
// contained to the registration: it is logged with its stack (once a
// minute at most), the status goes Down with it (a *panics.Error), which is
// also the outcome Register or Update is waiting for, and reconcile starts
// again after discovery.PanicPause (or at once on Update). Whether the
// agent took the step the panic cut short is not known, so reconcile
// registers the whole service again, its TTL check passing: within the
// pause, well inside the check's TTL, so the check does not go critical.
func (g *registration) run() {
	defer g.reg.regWG.Done()
	defer close(g.exited)
	var logged panics.Log
	for {
		p := panics.Catch(g.reconcile)
		if p == nil {
			return
		}
		logged.Log(g.log.WithField("id", g.id), p, "consul: the registration's reconciler panicked; it is down, and registered again after a pause")
		err := fmt.Errorf("consul: registering %s: %w", g.id, p)
		g.status.Down(err)
		_, version := g.wanted()
		g.finish(version, err)
		if !g.sleep(discovery.PanicPause) {
			return
		}
	}
}

// reconcile is run's loop; it returns when the registration stops.
func (g *registration) reconcile() {
	refresh := time.NewTicker(g.reg.regRefresh)
	defer refresh.Stop()
	var (
		applied  uint64 // version registered with the agent; 0: not (known to be) registered
		failures int
		lost     bool // registered and then lost: the next registration is a re-registration
		lastMsg  string
		renewed  time.Time // when want was last registered
	)
	for {
		want, version := g.wanted()
		if applied != version {
			err := g.register(want)
			if g.ctx.Err() != nil {
				g.finish(version, fmt.Errorf("consul: %s: registration stopped", g.id))
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
					g.log.WithError(err).Warn("consul: service not registered; retrying")
				}
				if !g.sleep(retry.Backoff(failures, g.reg.backoffBase, g.reg.backoffMax, g.reg.rand)) {
					return
				}
				continue
			}
			if g.status.Up(lost) && (lost || failures > 0) {
				g.log.WithFields(logrus.Fields{"id": g.id, "reregistered": lost}).Info("consul: service registered")
			}
			g.finish(version, nil)
			applied, failures, lost, lastMsg, renewed = version, 0, false, "", time.Now()
			continue
		}
		select {
		case <-g.ctx.Done():
			return
		case <-g.wake:
		case <-refresh.C:
			err := g.renew(want, &renewed)
			if err == nil {
				err = g.pass()
			}
			if err != nil {
				if g.ctx.Err() != nil {
					return
				}
				// Whatever the cause, the agent may have lost the
				// service: register it again (at once; backoff if that
				// fails too).
				g.log.WithError(err).Warn("consul: passing the TTL check (or renewing the registration) failed; registering the service again")
				g.status.Down(err)
				applied, lost, lastMsg = 0, true, err.Error()
				continue
			}
			drift, foreign := g.readBack(want)
			if drift == "" {
				g.status.Up(false)
				continue
			}
			err = fmt.Errorf("consul: %s was changed by someone else (%s)", g.id, drift)
			g.log.Warn(err.Error() + "; registering it again")
			g.status.Down(err)
			g.removeChecks(foreign)
			applied, lost, lastMsg = 0, true, err.Error()
		}
	}
}

// readBack reads the service back from the agent and compares it with
// want: drift says what differs ("" if nothing does, or if the agent did
// not answer: the next pass finds out), foreign lists the checks of the
// service that want does not define.
func (g *registration) readBack(want *api.AgentServiceRegistration) (drift string, foreign []string) {
	ctx, cancel := context.WithTimeout(g.ctx, regOpTimeout)
	defer cancel()
	_, info, err := g.reg.agent.AgentHealthServiceByIDOpts(g.id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", nil
	}
	if info == nil || info.Service == nil {
		return "the service is gone", nil
	}
	var diffs []string
	s := info.Service
	if s.Service != want.Name || s.Address != want.Address || s.Port != want.Port {
		diffs = append(diffs, "address")
	}
	if !maps.Equal(s.Meta, want.Meta) {
		diffs = append(diffs, "meta")
	}
	tags := slices.Clone(s.Tags)
	sort.Strings(tags)
	if !slices.Equal(tags, want.Tags) {
		diffs = append(diffs, "tags")
	}
	if want.Weights != nil && s.Weights != *want.Weights {
		diffs = append(diffs, "weights")
	}
	if s.EnableTagOverride {
		diffs = append(diffs, "tag override")
	}
	// The agent's own check list has each check's type (its health
	// answer above has none).
	checks, err := g.reg.agent.ChecksWithFilterOpts(fmt.Sprintf("ServiceID == %q", g.id), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", nil
	}
	own := false
	for id, c := range checks {
		if id != g.checkID {
			foreign = append(foreign, id)
			continue
		}
		own = true
		if c.Type != "ttl" {
			diffs = append(diffs, "check type "+c.Type)
		}
	}
	switch {
	case !own:
		// The check was just passed, so the agent has it: a list
		// without it is one the token may not see whole. Left to pass.
		foreign = nil
	case len(foreign) > 0:
		sort.Strings(foreign)
		diffs = append(diffs, "checks added")
	}
	return strings.Join(diffs, ", "), foreign
}

// removeChecks deregisters checks someone else added to the service; an
// error is left to the next read-back.
func (g *registration) removeChecks(ids []string) {
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(g.ctx, regOpTimeout)
		if err := g.reg.agent.CheckDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
			g.log.WithError(err).WithField("check", id).Warn("consul: removing a check someone else added to the service failed")
		}
		cancel()
	}
}

// register registers want with the agent.
func (g *registration) register(want *api.AgentServiceRegistration) error {
	ctx, cancel := context.WithTimeout(g.ctx, regOpTimeout)
	defer cancel()
	if err := g.reg.agent.ServiceRegisterOpts(want, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: register %s: %w", g.id, err)
	}
	return nil
}

// renew registers want again if it was last registered a TTL ago or
// more, and then records the time in *renewed: see the comment at the top
// of this file.
func (g *registration) renew(want *api.AgentServiceRegistration, renewed *time.Time) error {
	if time.Since(*renewed) < g.reg.regTTL {
		return nil
	}
	if err := g.register(want); err != nil {
		return err
	}
	*renewed = time.Now()
	return nil
}

// pass passes the TTL check.
func (g *registration) pass() error {
	ctx, cancel := context.WithTimeout(g.ctx, regOpTimeout)
	defer cancel()
	if err := g.reg.agent.UpdateTTLOpts(g.checkID, "remora: application healthy", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: passing check %s: %w", g.checkID, err)
	}
	return nil
}

// sleep waits d, or until woken by Update; false when the registration
// stops.
func (g *registration) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.wake:
	case <-g.ctx.Done():
		return false
	}
	return true
}

// Update implements discovery.Registration: inst (same ID) becomes the
// wanted registration. It returns the outcome of the reconciler's attempt
// to register it, or ctx's error if that takes longer; either way it is
// kept and registered as soon as the agent accepts it.
func (g *registration) Update(ctx context.Context, inst discovery.Instance) error {
	if err := checkRegistration(inst); err != nil {
		// Refused before it replaces what is registered: the agent would
		// refuse it at every attempt, and the check would go critical.
		return fmt.Errorf("consul: update %s: %w", g.id, err)
	}
	want := g.reg.serviceRegistration(g.service, g.id, inst)
	g.mu.Lock()
	if g.gone {
		g.mu.Unlock()
		return fmt.Errorf("consul: update %s: deregistered", g.id)
	}
	g.want = want
	g.version++
	v := g.version
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return g.wait(ctx, v)
}

// Deregister implements discovery.Registration: it stops the reconciler and
// deregisters the service. If the agent cannot be reached the error is
// returned; the check then goes critical and Consul removes the service
// after a minute. It is idempotent.
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
	g.reg.forgetRegistration(g)
	g.status.Down(nil)
	err := g.reg.agent.ServiceDeregisterOpts(g.id, (&api.QueryOptions{}).WithContext(ctx))
	if err == nil || unknownService(err) {
		return nil
	}
	if g.reg.withdrawLater(g.id, g.log) {
		return fmt.Errorf("consul: deregister %s: %w (deregistering it again in the background until the agent answers)", g.id, err)
	}
	return fmt.Errorf("consul: deregister %s: %w", g.id, err)
}

// unknownService reports whether err is the agent's answer to the
// deregistration of a service it does not have: nothing left to withdraw.
func unknownService(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// withdrawal is a deregistration the agent did not take (it could not be
// reached, or failed), carried out in the background: an agent that keeps
// its data restores the service when it is back, passing until its TTL
// runs out and listed until it has been critical for a minute.
type withdrawal struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
}

// withdrawLater deregisters the service id in the background, again after
// a backoff until the agent takes it (or no longer has it), Register
// registers the same ID again, or the registry closes; false if the
// registry is closed.
func (r *registry) withdrawLater(id string, log *logrus.Entry) bool {
	ctx, cancel := context.WithCancel(context.Background())
	w := &withdrawal{cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		return false
	}
	old := r.withdrawals[id]
	r.withdrawals[id] = w
	r.regWG.Add(1)
	r.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	go func() {
		defer r.regWG.Done()
		defer close(w.done)
		defer cancel()
		defer func() {
			r.mu.Lock()
			if r.withdrawals[id] == w {
				delete(r.withdrawals, id)
			}
			r.mu.Unlock()
		}()
		if p := panics.Catch(func() { r.withdraw(ctx, id, log) }); p != nil {
			log.WithField("id", id).WithError(p).Error("consul: deregistering the service in the background panicked; it lapses with its check")
		}
	}()
	return true
}

// withdraw is withdrawLater's loop.
func (r *registry) withdraw(ctx context.Context, id string, log *logrus.Entry) {
	for failures := 1; r.sleep(ctx, retry.Backoff(failures, r.backoffBase, r.backoffMax, r.rand)); failures++ {
		rctx, cancel := context.WithTimeout(ctx, regOpTimeout)
		err := r.agent.ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(rctx))
		cancel()
		if err == nil || unknownService(err) {
			log.WithField("id", id).Info("consul: service deregistered, now that the agent answers")
			return
		}
	}
}

// cancelWithdrawal stops the background deregistration of id, if any, and
// waits for it to end: Register calls it before registering id again.
func (r *registry) cancelWithdrawal(id string) {
	r.mu.Lock()
	w := r.withdrawals[id]
	r.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

// forgetRegistration removes g from the live registrations.
func (r *registry) forgetRegistration(g *registration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regs[g.id] == g {
		delete(r.regs, g.id)
	}
}

// stopRegistrations stops every reconciler (Close) without deregistering
// (the checks go critical after the TTL), and every background
// deregistration.
func (r *registry) stopRegistrations() {
	r.mu.Lock()
	regs := make([]*registration, 0, len(r.regs))
	for _, g := range r.regs {
		regs = append(regs, g)
	}
	ws := slices.Collect(maps.Values(r.withdrawals))
	r.mu.Unlock()
	for _, g := range regs {
		g.cancel()
	}
	for _, w := range ws {
		w.cancel()
	}
	r.regWG.Wait()
}
