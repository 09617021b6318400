package consul

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// A partition longer than the check's TTL while the agent stays up: the
// agent marks the TTL check critical (consumers stop seeing the instance
// as passing); Remora, cut off, cannot pass it. Once the partition ends
// the check must be passing again, with the service as registered, within
// partitionBound.
func TestRegistrationSurvivesPartitionLongerThanTTL(t *testing.T) {
	const ttl = 2 * time.Second
	// A request on the cut connection ends with it (Heal closes it); then
	// the reconciler's backoff (at most 1 s) and one refresh.
	const partitionBound = 3 * time.Second
	a := mainAgent(t)
	c := a.Client(t)
	p := discoverytest.NewPartition(t, a.Addr())
	o, err := parseYAML(t, "address: "+p.Addr()+"\n")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := o.Open(discovery.Env{Name: "test", BaseDir: t.TempDir(), Log: testLog})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	r := reg.(*registry)
	r.regTTL, r.regRefresh = ttl, convergeRefresh
	const svc = "partitioned"
	want := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8081, Weight: 3, Metadata: map[string]string{"canary": "true"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	holds := func() bool { ok, _ := agentHolds(c, want, svc); return ok }
	pollFor(t, 5*time.Second, "registered", holds)
	checkStatus := func() string {
		checks, err := c.Agent().Checks()
		if err != nil || checks["service:"+consultest.ServiceID(svc, want.ID)] == nil {
			return ""
		}
		return checks["service:"+consultest.ServiceID(svc, want.ID)].Status
	}

	p.Cut()
	took := pollFor(t, 3*ttl, "the check critical during the partition", func() bool { return checkStatus() == api.HealthCritical })
	t.Logf("the check went critical %v into the partition", took.Round(time.Millisecond))
	pollFor(t, 2*regOpTimeout, "status down during the partition", func() bool { st := regStatus(t, g); return !st.Up && st.LastError != "" })
	time.Sleep(ttl) // the partition goes on a while
	if s := checkStatus(); s != api.HealthCritical {
		t.Fatalf("the check is %q during the partition", s)
	}

	p.Heal()
	took = pollFor(t, partitionBound, "registered and passing again after the partition", holds)
	t.Logf("passing again %v after the partition ended", took.Round(time.Millisecond))
	pollFor(t, 2*time.Second, "status up, re-registered", func() bool {
		st := regStatus(t, g)
		return st.Up && st.Reregistrations >= 1
	})
	time.Sleep(2 * ttl) // a check nobody passes would go critical meanwhile
	if !holds() {
		_, why := agentHolds(c, want, svc)
		t.Fatalf("%v after the partition: %s", 2*ttl, why)
	}
}
