package consul

import (
	"context"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
)

// countingAgent counts the registrations the reconciler makes.
type countingAgent struct {
	agentClient
	registers atomic.Int64
}

func (c *countingAgent) ServiceRegisterOpts(s *api.AgentServiceRegistration, o api.ServiceRegisterOpts) error {
	c.registers.Add(1)
	return c.agentClient.ServiceRegisterOpts(s, o)
}

// serviceIndexes returns the index of the service's health answer and of
// its catalog answer: what wakes the blocking queries of its consumers.
func serviceIndexes(t *testing.T, c *api.Client, service string) (health, catalog uint64) {
	t.Helper()
	_, hm, err := c.Health().Service(service, "", false, &api.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, cm, err := c.Catalog().Service(service, "", &api.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return hm.LastIndex, cm.LastIndex
}

// Someone else registers the service again with the same fields but a
// check with another TTL and no DeregisterCriticalServiceAfter, which the
// agent does not show (a TTL check's definition reads back empty), so the
// read-back cannot see it. The registration renews itself once per TTL,
// so within renewBound the check is Remora's again: once Remora is gone
// (stopped without deregistering, as a SIGKILL leaves it) it goes critical
// within the TTL, not the hour the other check had. The renewals of an
// unchanged registration do not change the service's index, so the
// consumers' blocking queries are not woken by them.
func TestRegistrationRenewsAChangeTheReadBackCannotSee(t *testing.T) {
	const (
		ttl = 2 * time.Second
		// A renewal is due a TTL after the last one and made at the next
		// refresh; one refresh more for slack.
		renewBound = ttl + 2*convergeRefresh
		// The agent marks the check critical a TTL after the last pass.
		criticalBound = ttl + time.Second
	)
	a := mainAgent(t)
	c := a.Client(t)
	reg := open(t, a, "")
	defer reg.Close()
	r := reg.(*registry)
	r.regTTL, r.regRefresh = ttl, convergeRefresh
	counted := &countingAgent{agentClient: r.agent}
	r.agent = counted
	const svc = "renewed"
	want := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8084, Weight: 3, Metadata: map[string]string{"version": "v2"}}
	id := consultest.ServiceID(svc, want.ID)
	t.Cleanup(func() { _ = c.Agent().ServiceDeregister(id) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	holds := func() bool { ok, _ := agentHolds(c, want, svc); return ok }
	pollFor(t, 5*time.Second, "registered", holds)
	checkStatus := func() string {
		checks, err := c.Agent().Checks()
		if err != nil || checks["service:"+id] == nil {
			return ""
		}
		return checks["service:"+id].Status
	}

	// Steady state: renewals, and no index change.
	time.Sleep(convergeRefresh) // the first pass is made
	health, catalog := serviceIndexes(t, c, svc)
	before := counted.registers.Load()
	time.Sleep(3 * ttl)
	if n := counted.registers.Load() - before; n < 2 {
		t.Fatalf("%d registrations in %v; want a renewal every TTL (%v)", n, 3*ttl, ttl)
	}
	if h, cat := serviceIndexes(t, c, svc); h != health || cat != catalog {
		t.Fatalf("the renewals changed the service's indexes: health %d -> %d, catalog %d -> %d", health, h, catalog, cat)
	}
	if st := regStatus(t, g); !st.Up || st.Reregistrations != 0 {
		t.Fatalf("status after renewals: %+v; want up, never re-registered", st)
	}

	// Someone else's check: TTL an hour, never reaped.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: svc, Address: want.Address, Port: want.Port,
		Meta: maps.Clone(want.Metadata), Tags: []string{"version=v2"}, Weights: &api.AgentWeights{Passing: int(want.Weight), Warning: 1},
		Check: &api.AgentServiceCheck{CheckID: "service:" + id, TTL: "1h", Status: api.HealthPassing}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(renewBound)

	// Remora dies without deregistering: the check must lapse with
	// Remora's TTL.
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if !holds() {
		_, why := agentHolds(c, want, svc)
		t.Fatalf("before the check's TTL ran out: %s", why)
	}
	took := pollFor(t, criticalBound, "the check critical after Remora stopped", func() bool { return checkStatus() == api.HealthCritical })
	t.Logf("the check went critical %v after Remora stopped", took.Round(time.Millisecond))
}
