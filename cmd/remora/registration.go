package main

import (
	"context"
	"sync"

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
