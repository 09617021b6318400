package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/register"
)

// liveAgent is the agent that registers the local application, with what
// the admin API shows beside its status. All fields are immutable.
type liveAgent struct {
	*register.Agent
	registry string        // the registry's name
	rereg    *reregCounter // of the registry and service registered in
}

// registrar returns the registry that rc registers in.
func registrar(regs map[string]*liveRegistry, rc *register.Config) (discovery.Registrar, error) {
	lr := regs[rc.Registry]
	if lr == nil {
		return nil, fmt.Errorf("register.registry: unknown registry %q", rc.Registry)
	}
	reg, ok := lr.reg.(discovery.Registrar)
	if !ok {
		return nil, fmt.Errorf("register.registry: registry %q of type %s cannot register instances", rc.Registry, lr.cfg.Type)
	}
	return reg, nil
}

// startAgent starts registering the local application in reg, the
// registry rc names. a.mu is held.
func (a *app) startAgent(rc register.Config, reg discovery.Registrar) {
	key := rc.Registry + "\x00" + rc.Service
	c := a.rereg[key]
	if c == nil {
		c = newReregCounter()
		a.rereg[key] = c
	}
	ag := register.NewAgent(rc, c.counting(reg), a.log.WithField("component", "register"))
	// A drain withdraws the registration (Drain, Undrain): an agent a
	// reload starts while drained starts withdrawn.
	a.drainMu.Lock()
	ag.SetWithdrawn(a.draining.Load())
	a.agent.Store(&liveAgent{Agent: ag, registry: rc.Registry, rereg: c})
	a.drainMu.Unlock()
	go ag.Run(context.Background())
}

// replaceTimeout bounds the withdrawal of a registration that a reload
// replaces or removes (the registry may be unreachable: the registration
// then lapses with its lease or TTL).
const replaceTimeout = 5 * time.Second

// stopAgent withdraws the local application's registration, if any, and
// forgets the agent (which GET /register shows until then). a.mu is held.
func (a *app) stopAgent(timeout time.Duration) {
	la := a.agent.Load()
	if la == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	la.Deregister(ctx)
	a.agent.Store(nil)
}

// Registration implements admin.RegistrationSource. It does not take a.mu,
// so it never waits for a reload.
func (a *app) Registration() (admin.Registration, bool) {
	la := a.agent.Load()
	if la == nil {
		return admin.Registration{}, false
	}
	return admin.Registration{Registry: la.registry, Status: la.Status(), Reregistrations: la.rereg.total()}, true
}

// reregCounter adds up the re-registrations (RegistrationStatus.
// Reregistrations) of every registration made through it, ended ones
// included, so that the total only grows though the agent makes a new
// registration after each withdrawal and a reload may replace the agent.
// Its methods are safe for concurrent use.
type reregCounter struct {
	mu    sync.Mutex
	ended uint64                            // of the registrations deregistered
	live  map[*countedRegistration]struct{} // those not deregistered yet
}

func newReregCounter() *reregCounter {
	return &reregCounter{live: map[*countedRegistration]struct{}{}}
}

// total returns the re-registrations so far.
func (c *reregCounter) total() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.ended
	for g := range c.live {
		n += g.Status().Reregistrations
	}
	return n
}

// counting returns reg with the registrations it makes counted by c.
func (c *reregCounter) counting(reg discovery.Registrar) discovery.Registrar {
	return countingRegistrar{reg: reg, c: c}
}

type countingRegistrar struct {
	reg discovery.Registrar
	c   *reregCounter
}

// Register implements discovery.Registrar. A registration whose adapter
// does not report its status is returned as it is (it has no count, and
// must not look as if it reported).
func (r countingRegistrar) Register(ctx context.Context, service string, inst discovery.Instance) (discovery.Registration, error) {
	g, err := r.reg.Register(ctx, service, inst)
	if err != nil {
		return nil, err
	}
	rep, ok := g.(discovery.StatusReporter)
	if !ok {
		return g, nil
	}
	cg := &countedRegistration{Registration: g, StatusReporter: rep, c: r.c}
	r.c.mu.Lock()
	r.c.live[cg] = struct{}{}
	r.c.mu.Unlock()
	return cg, nil
}

// countedRegistration is a registration whose re-registrations its counter
// adds up.
type countedRegistration struct {
	discovery.Registration
	discovery.StatusReporter
	c *reregCounter
}

// Deregister implements discovery.Registration: once it returns, the
// adapter's reconciler has stopped (whether or not the registry answered),
// so the count is final.
func (g *countedRegistration) Deregister(ctx context.Context) error {
	err := g.Registration.Deregister(ctx)
	c := g.c
	c.mu.Lock()
	if _, ok := c.live[g]; ok {
		delete(c.live, g)
		c.ended += g.Status().Reregistrations
	}
	c.mu.Unlock()
	return err
}

var (
	_ discovery.Registrar      = countingRegistrar{}
	_ discovery.StatusReporter = (*countedRegistration)(nil)
	_ admin.RegistrationSource = (*app)(nil)
)
