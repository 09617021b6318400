package consul

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// panickingAgent is a fakeAgent whose call number at of method panics;
// every call after that waits for gate to close, so that the state the
// panic left can be looked at before the reconciler registers again.
type panickingAgent struct {
	*fakeAgent
	method string
	at     int
	gate   chan struct{}

	mu       sync.Mutex
	calls    map[string]int
	panicked bool
}

func (p *panickingAgent) enter(method string) {
	p.mu.Lock()
	p.calls[method]++
	if method == p.method && p.calls[method] == p.at {
		p.panicked = true
		p.mu.Unlock()
		panic("injected: " + method + " panicked")
	}
	panicked := p.panicked
	p.mu.Unlock()
	if panicked {
		<-p.gate
	}
}

func (p *panickingAgent) ServiceRegisterOpts(s *api.AgentServiceRegistration, o api.ServiceRegisterOpts) error {
	p.enter("ServiceRegisterOpts")
	return p.fakeAgent.ServiceRegisterOpts(s, o)
}

func (p *panickingAgent) UpdateTTLOpts(checkID, output, status string, q *api.QueryOptions) error {
	p.enter("UpdateTTLOpts")
	return p.fakeAgent.UpdateTTLOpts(checkID, output, status, q)
}

// A panic in a registration's reconciler (here, in each call it makes of
// the agent) ended the process. The registration is down with the panic
// as its error, which the waiting Register or Update gets; it is
// registered again a pause later, with its check, and Deregister removes
// it, also when it comes before that.
func TestRegistrationPanicIsDownAndRegisteredAgain(t *testing.T) {
	const id = "users-app-1"
	tests := []struct {
		name       string
		method     string
		at         int
		update     bool // the panic is in the registration of an Update
		deregister bool // Deregister in the pause after the panic
	}{
		{name: "the first registration", method: "ServiceRegisterOpts", at: 1},
		{name: "the registration of an Update", method: "ServiceRegisterOpts", at: 2, update: true},
		{name: "an Update, deregistered in the pause", method: "ServiceRegisterOpts", at: 2, update: true, deregister: true},
		{name: "passing the check", method: "UpdateTTLOpts", at: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, f := newFakeAgentRegistry(t)
			logger, hook := logtest.NewNullLogger()
			r.log = logrus.NewEntry(logger)
			a := &panickingAgent{fakeAgent: f, method: tc.method, at: tc.at, gate: make(chan struct{}), calls: map[string]int{}}
			r.agent = a
			var once sync.Once
			open := func() { once.Do(func() { close(a.gate) }) }
			t.Cleanup(open) // before the registry's Close, which waits for the reconciler
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			inst := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 5, Metadata: map[string]string{"version": "v1"}}
			reg, err := r.Register(ctx, "users", inst)
			if err != nil {
				t.Fatal(err)
			}
			g := reg.(*registration)
			var pe *panics.Error
			if tc.update {
				inst.Metadata = map[string]string{"version": "v2"}
				if err := g.Update(ctx, inst); !errors.As(err, &pe) {
					t.Fatalf("Update = %v; want the panic, a *panics.Error", err)
				}
			}
			// The outcome of the attempt is the panic, until the fake
			// lets the reconciler through.
			eventuallyTrue(t, "the panic recorded as the attempt's outcome", func() bool {
				return errors.As(g.wait(ctx, 1), &pe)
			})
			want := "panic: injected: " + tc.method + " panicked"
			if st := g.Status(); st.Up || !strings.Contains(st.LastError, want) || !strings.Contains(st.LastError, id) {
				t.Fatalf("status after the panic: %+v; want down, the error naming %q and the service", st, want)
			}
			open()

			if !tc.deregister {
				eventuallyTrue(t, "registered again", func() bool {
					s := f.service(id)
					return g.Status().Up && s != nil && s.Meta["version"] == inst.Metadata["version"] && s.Check != nil
				})
			}
			if err := g.Deregister(ctx); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			if f.service(id) != nil {
				t.Fatal("the service is still registered after Deregister")
			}

			var logged []*logrus.Entry
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel {
					logged = append(logged, e)
				}
			}
			if len(logged) != 1 || logged[0].Data["panic"] != "injected: "+tc.method+" panicked" ||
				!strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") || logged[0].Data["id"] != id {
				t.Fatalf("errors logged: %v; want one, with the panic, its stack and the service ID", logged)
			}
		})
	}
}
