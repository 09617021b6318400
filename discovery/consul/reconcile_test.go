package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
)

// fakeAgent is an in-memory agentClient: it holds the registered services
// and fails calls while down, as an agent that is unreachable or restarted
// without its state would.
type fakeAgent struct {
	mu        sync.Mutex
	services  map[string]*api.AgentServiceRegistration
	down      bool
	registers int
	deregs    []string
}

var errAgentDown = errors.New("connection refused")

func (f *fakeAgent) ServiceRegisterOpts(s *api.AgentServiceRegistration, _ api.ServiceRegisterOpts) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errAgentDown
	}
	f.services[s.ID] = s
	f.registers++
	return nil
}

func (f *fakeAgent) ServiceDeregisterOpts(id string, _ *api.QueryOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.services, id)
	f.deregs = append(f.deregs, id)
	return nil
}

func (f *fakeAgent) UpdateTTLOpts(checkID, _, _ string, _ *api.QueryOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.down:
		return errAgentDown
	case f.services[checkID[len("service:"):]] == nil:
		return errors.New(`Unexpected response code: 404 (Unknown check ID "` + checkID + `")`)
	}
	return nil
}

func (f *fakeAgent) AgentHealthServiceByIDOpts(id string, _ *api.QueryOptions) (string, *api.AgentServiceChecksInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.services[id]
	switch {
	case f.down:
		return "", nil, errAgentDown
	case s == nil:
		return api.HealthCritical, nil, nil
	}
	info := &api.AgentServiceChecksInfo{Service: &api.AgentService{ID: s.ID, Service: s.Name, Address: s.Address, Port: s.Port,
		Meta: s.Meta, Tags: s.Tags, Weights: *s.Weights}}
	return api.HealthPassing, info, nil
}

// ChecksWithFilterOpts understands only the filter the reconciler sends:
// ServiceID == "<id>".
func (f *fakeAgent) ChecksWithFilterOpts(filter string, _ *api.QueryOptions) (map[string]*api.AgentCheck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]*api.AgentCheck{}
	for _, s := range f.services {
		if s.Check != nil && filter == fmt.Sprintf("ServiceID == %q", s.ID) {
			out[s.Check.CheckID] = &api.AgentCheck{CheckID: s.Check.CheckID, ServiceID: s.ID, Type: "ttl", Status: api.HealthPassing}
		}
	}
	return out, f.errIfDown()
}

func (f *fakeAgent) CheckDeregisterOpts(string, *api.QueryOptions) error { return nil }

func (f *fakeAgent) errIfDown() error {
	if f.down {
		return errAgentDown
	}
	return nil
}

func (f *fakeAgent) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeAgent) service(id string) *api.AgentServiceRegistration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.services[id]
}

func newFakeAgentRegistry(t *testing.T) (*registry, *fakeAgent) {
	t.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	var o Options
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	r := newRegistry(&fakeHealth{calls: make(chan *fakeCall)}, &o, logrus.NewEntry(l))
	f := &fakeAgent{services: map[string]*api.AgentServiceRegistration{}}
	r.agent = f
	r.regRefresh = 5 * time.Millisecond
	r.backoffBase, r.backoffMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { _ = r.Close() })
	return r, f
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// The reconciler converges the agent on the wanted registration after each
// kind of trouble, and counts re-registrations only for losses.
func TestRegistrationReconciles(t *testing.T) {
	const id = "users-app-1"
	inst := func(version string) discovery.Instance {
		return discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 5, Metadata: map[string]string{"version": version}}
	}
	for _, tc := range []struct {
		name      string
		startDown bool                                                       // the agent is down at Register
		trouble   func(t *testing.T, f *fakeAgent, g discovery.Registration) // after registration
		wantMeta  string
		wantRereg uint64
	}{
		{name: "agent down at start", startDown: true, wantMeta: "v1"},
		{name: "agent forgot the service", wantMeta: "v1", wantRereg: 1, trouble: func(_ *testing.T, f *fakeAgent, _ discovery.Registration) {
			f.set(func() { clear(f.services) })
		}},
		{name: "agent down, then back without state", wantMeta: "v1", wantRereg: 1, trouble: func(_ *testing.T, f *fakeAgent, _ discovery.Registration) {
			f.set(func() { f.down = true; clear(f.services) })
			time.Sleep(30 * time.Millisecond)
			f.set(func() { f.down = false })
		}},
		{name: "update while down is applied when back", wantMeta: "v2", wantRereg: 1, trouble: func(t *testing.T, f *fakeAgent, g discovery.Registration) {
			f.set(func() { f.down = true })
			time.Sleep(20 * time.Millisecond) // the check fails: lost
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if err := g.Update(ctx, inst("v2")); err == nil {
				t.Fatal("Update succeeded on an agent that is down")
			}
			f.set(func() { f.down = false })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, f := newFakeAgentRegistry(t)
			f.down = tc.startDown
			g, err := r.Register(context.Background(), "users", inst("v1"))
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if tc.startDown {
				if st := regStatus(t, g); st.Up || st.LastError == "" {
					t.Fatalf("status with the agent down: %+v", st)
				}
				f.set(func() { f.down = false })
			}
			eventuallyTrue(t, "registered", func() bool { return f.service(id) != nil })
			if tc.trouble != nil {
				tc.trouble(t, f, g)
			}
			eventuallyTrue(t, "converged", func() bool {
				s := f.service(id)
				st := regStatus(t, g)
				return s != nil && s.Meta["version"] == tc.wantMeta && st.Up && st.Reregistrations == tc.wantRereg
			})
			s := f.service(id)
			if s.Check == nil || s.Check.CheckID != "service:"+id || s.Check.Status != api.HealthPassing || s.Tags[0] != "version="+tc.wantMeta {
				t.Fatalf("registered %+v (check %+v)", s, s.Check)
			}
			if err := g.Deregister(context.Background()); err != nil {
				t.Fatal(err)
			}
			f.set(func() {
				if len(f.services) != 0 || len(f.deregs) != 1 {
					t.Errorf("after Deregister: services %v, deregistrations %v", f.services, f.deregs)
				}
			})
		})
	}
}

// Close stops the reconcilers without deregistering; Register after Close
// fails.
func TestRegistrationClose(t *testing.T) {
	r, f := newFakeAgentRegistry(t)
	g, err := r.Register(context.Background(), "users", discovery.Instance{ID: "a", Address: "127.0.0.1", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.(*registration).exited:
	default:
		t.Fatal("the reconciler still runs after Close")
	}
	if f.service("users-a") == nil {
		t.Fatal("Close deregistered the service")
	}
	if _, err := r.Register(context.Background(), "users", discovery.Instance{ID: "b", Address: "127.0.0.1", Port: 1}); err == nil {
		t.Fatal("Register after Close succeeded")
	}
}
