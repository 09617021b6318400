package consul

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
)

// A registration withdrawn while the agent is down (a reload that removes
// or replaces register:, a drain) must not come back with the agent: the
// agent keeps its services in its data directory and restores them, the
// TTL check with its last state (passing) until the TTL runs out, and the
// service itself until it has been critical for a minute. Deregister
// returns at once with the error, and the withdrawal is carried out once
// the agent answers, unless the same ID is registered again meanwhile.
func TestDeregisterDuringOutageIsCarriedOutOnceBack(t *testing.T) {
	a := consultest.Start(t, consultest.Config{Name: "withdraw"})
	c := a.Client(t)
	reg := open(t, a, "")
	defer reg.Close()
	reg.(*registry).regRefresh = convergeRefresh
	const svc = "withdrawn"
	want := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8082, Weight: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "registered", func() bool { ok, _ := agentHolds(c, want, svc); return ok })

	if err := a.Stop(); err != nil {
		t.Logf("stopping the agent: %v", err)
	}
	start := time.Now()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	derr := g.Deregister(dctx)
	dcancel()
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Fatalf("Deregister with the agent down took %v", d)
	}
	t.Logf("Deregister with the agent down: %v", derr)

	a.Restart(t)
	listed := func() bool {
		svcs, err := c.Agent().Services()
		return err != nil || svcs[consultest.ServiceID(svc, want.ID)] != nil
	}
	took := pollFor(t, 3*time.Second, "the service withdrawn once the agent is back", func() bool { return !listed() })
	t.Logf("withdrawn %v after the agent was back", took.Round(time.Millisecond))
	time.Sleep(time.Second)
	if listed() {
		t.Fatal("listed again after it was withdrawn")
	}

	// Registered again (the same ID) while a withdrawal is pending: the
	// new registration wins.
	g, err = registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "registered again", func() bool { ok, _ := agentHolds(c, want, svc); return ok })
	if err := a.Stop(); err != nil {
		t.Logf("stopping the agent: %v", err)
	}
	dctx, dcancel = context.WithTimeout(context.Background(), 2*time.Second)
	_ = g.Deregister(dctx)
	dcancel()
	want.Port++
	g, err = registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	a.Restart(t)
	pollFor(t, 5*time.Second, "the new registration held once the agent is back", func() bool { ok, _ := agentHolds(c, want, svc); return ok })
	time.Sleep(time.Second)
	if ok, why := agentHolds(c, want, svc); !ok {
		t.Fatalf("the new registration, a second later: %s", why)
	}
}
