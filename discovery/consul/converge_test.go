package consul

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
)

// convergeBound is how long the registration may take to converge back
// after someone else changed it, with the refresh interval of these
// tests (convergeRefresh): a few refreshes.
const (
	convergeRefresh = 200 * time.Millisecond
	convergeBound   = 3 * time.Second
)

// agentHolds reports whether the agent holds exactly want: the service
// with its address, port, labels (Meta and tags) and passing weight, and
// one check, the registration's TTL check, passing.
func agentHolds(c *api.Client, want discovery.Instance, service string) (bool, string) {
	id := consultest.ServiceID(service, want.ID)
	_, info, err := c.Agent().AgentHealthServiceByID(id)
	switch {
	case err != nil:
		return false, err.Error()
	case info == nil || info.Service == nil:
		return false, "no service " + id
	}
	s := info.Service
	var tags []string
	for k, v := range want.Metadata {
		tags = append(tags, k+"="+v)
	}
	slices.Sort(tags)
	got := slices.Clone(s.Tags)
	slices.Sort(got)
	switch {
	case s.Service != service || s.Address != want.Address || s.Port != want.Port:
		return false, "service " + s.Service + " at " + s.Address
	case !maps.Equal(s.Meta, want.Metadata) || !slices.Equal(got, tags):
		return false, "labels changed"
	case s.Weights.Passing != int(want.Weight):
		return false, "weight changed"
	case len(info.Checks) != 1:
		return false, "not one check"
	}
	ck := info.Checks[0]
	checks, err := c.Agent().Checks()
	if err != nil {
		return false, err.Error()
	}
	if ac := checks[ck.CheckID]; ck.CheckID != "service:"+id || ac == nil || ac.Type != "ttl" || ck.Status != api.HealthPassing {
		return false, fmt.Sprintf("check %s %+v", ck.CheckID, ac)
	}
	return true, ""
}

// Someone else (an operator, a script) deregisters the service, or
// registers it again under the same ID with other values (labels, tags,
// weight, address, port) or another check, while the agent stays up: the
// registration converges back on what Remora registered within a few
// refresh intervals.
func TestRegistrationConvergesAfterSomeoneElseChangesIt(t *testing.T) {
	a := mainAgent(t)
	c := a.Client(t)
	reg := open(t, a, "")
	defer reg.Close()
	reg.(*registry).regRefresh = convergeRefresh
	svc := "converge"
	want := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 7, Metadata: map[string]string{"canary": "true", "version": "v2"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, svc, want)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	pollFor(t, 5*time.Second, "registered", func() bool { ok, _ := agentHolds(c, want, svc); return ok })
	id := consultest.ServiceID(svc, want.ID)
	ttlCheck := &api.AgentServiceCheck{CheckID: "service:" + id, TTL: "10s", Status: api.HealthPassing}
	other := func(mod func(*api.AgentServiceRegistration)) func(t *testing.T) {
		return func(t *testing.T) {
			r := &api.AgentServiceRegistration{ID: id, Name: svc, Address: want.Address, Port: want.Port,
				Meta: maps.Clone(want.Metadata), Tags: []string{"canary=true", "version=v2"},
				Weights: &api.AgentWeights{Passing: int(want.Weight), Warning: 1}, Check: ttlCheck}
			mod(r)
			if err := c.Agent().ServiceRegister(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T)
	}{
		{"deregistered", func(t *testing.T) {
			if err := c.Agent().ServiceDeregister(id); err != nil {
				t.Fatal(err)
			}
		}},
		{"metadata", other(func(r *api.AgentServiceRegistration) { r.Meta = map[string]string{"canary": "false"} })},
		{"tags", other(func(r *api.AgentServiceRegistration) { r.Tags = []string{"version=v1"} })},
		{"weight", other(func(r *api.AgentServiceRegistration) { r.Weights = &api.AgentWeights{Passing: 1000, Warning: 1} })},
		{"address", other(func(r *api.AgentServiceRegistration) { r.Address = "127.0.0.9" })},
		{"port", other(func(r *api.AgentServiceRegistration) { r.Port = 9090 })},
		{"check removed", func(t *testing.T) {
			if err := c.Agent().CheckDeregister("service:" + id); err != nil {
				t.Fatal(err)
			}
		}},
		{"check replaced", other(func(r *api.AgentServiceRegistration) {
			r.Check = &api.AgentServiceCheck{CheckID: "service:" + id, TCP: "127.0.0.1:1", Interval: "10s"}
		})},
		{"check added", other(func(r *api.AgentServiceRegistration) {
			r.Checks = api.AgentServiceChecks{ttlCheck, {CheckID: "extra:" + id, TTL: "10s", Status: api.HealthCritical}}
			r.Check = nil
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := regStatus(t, g).Reregistrations
			tc.change(t) // the re-registration counted below shows it took
			t.Cleanup(func() {
				if _, why := agentHolds(c, want, svc); t.Failed() {
					t.Logf("the agent holds: %s", why)
				}
			})
			took := pollFor(t, convergeBound, "converged back", func() bool { ok, _ := agentHolds(c, want, svc); return ok })
			t.Logf("converged back %v after the change", took.Round(time.Millisecond))
			pollFor(t, convergeBound, "status up with a re-registration", func() bool {
				st := regStatus(t, g)
				return st.Up && st.Reregistrations > before
			})
		})
	}
}

// With a token that may write its own service and nothing else (no node
// read), the read-back must not take what the token cannot see for a
// change: no re-registrations while nobody touches the service.
func TestRegistrationReadBackWithAServiceToken(t *testing.T) {
	a := aclAgent(t)
	acl := a.Client(t).ACL()
	const svc = "scoped"
	policy, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: "write-" + svc, Rules: `service "` + svc + `" { policy = "write" }`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := open(t, a, "token: "+tok.SecretID)
	defer reg.Close()
	reg.(*registry).regRefresh = convergeRefresh
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, svc, discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8083, Weight: 1, Metadata: map[string]string{"v": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	pollFor(t, 5*time.Second, "up", func() bool { return regStatus(t, g).Up })
	time.Sleep(10 * convergeRefresh)
	if st := regStatus(t, g); !st.Up || st.Reregistrations != 0 {
		t.Fatalf("status after %v untouched: %+v; want up, never re-registered", 10*convergeRefresh, st)
	}
}
