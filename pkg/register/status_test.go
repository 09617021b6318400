package register

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/health"
)

// reportingRegistrar registers instantly with registrations that report a
// status the test sets; block makes Register wait for its context instead,
// like a registry that never answers.
type reportingRegistrar struct {
	block bool
	up    atomic.Bool
}

func (f *reportingRegistrar) Register(ctx context.Context, _ string, _ discovery.Instance) (discovery.Registration, error) {
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return reportingRegistration{f}, nil
}

type reportingRegistration struct{ f *reportingRegistrar }

func (reportingRegistration) Update(context.Context, discovery.Instance) error { return nil }
func (reportingRegistration) Deregister(context.Context) error                 { return nil }
func (r reportingRegistration) Status() discovery.RegistrationStatus {
	if r.f.up.Load() {
		return discovery.RegistrationStatus{Up: true, Reregistrations: 2}
	}
	return discovery.RegistrationStatus{LastError: "registry down"}
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func healthyApp(t *testing.T) (port int, healthy *atomic.Bool) {
	healthy = &atomic.Bool{}
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(503)
		}
	}))
	t.Cleanup(app.Close)
	return app.Listener.Addr().(*net.TCPAddr).Port, healthy
}

func agentFor(t *testing.T, port int, reg discovery.Registrar) *Agent {
	t.Helper()
	cfg := Config{Service: "users", ID: "app-1", Port: port, Address: "10.1.2.3",
		Health: &health.Active{Interval: 10 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewAgent(cfg, reg, quietLog())
}

func TestAgentStatus(t *testing.T) {
	port, healthy := healthyApp(t)
	f := &reportingRegistrar{}
	a := agentFor(t, port, f)
	if st := a.Status(); st.Registered || st.Registration != nil || st.Service != "users" || st.ID != "app-1" {
		t.Fatalf("status before Run: %+v", st)
	}
	go a.Run(context.Background())
	defer a.Deregister(context.Background())

	for _, tc := range []struct {
		name       string
		healthy    bool
		registryUp bool
		want       func(Status) bool
	}{
		{"registered, registry down", true, false, func(s Status) bool {
			return s.Healthy && s.Registered && s.Weight == 100 && s.Registration != nil && !s.Registration.Up && s.Registration.LastError == "registry down"
		}},
		{"registered, registry up", true, true, func(s Status) bool {
			return s.Registered && s.Registration != nil && s.Registration.Up && s.Registration.Reregistrations == 2
		}},
		{"withdrawn", false, true, func(s Status) bool {
			return !s.Healthy && !s.Registered && s.Registration == nil && s.LastCheckError != "" && s.Weight == 0
		}},
	} {
		healthy.Store(tc.healthy)
		f.up.Store(tc.registryUp)
		waitFor(t, tc.name, func() bool { return tc.want(a.Status()) })
	}
}

// Deregister ends a Register that waits for a registry that does not
// answer: shutdown is never held up by the registry.
func TestDeregisterEndsBlockedRegister(t *testing.T) {
	port, _ := healthyApp(t)
	a := agentFor(t, port, &reportingRegistrar{block: true})
	go a.Run(context.Background())
	time.Sleep(50 * time.Millisecond) // Run is inside Register by now
	done := make(chan bool)
	go func() { done <- a.Deregister(context.Background()) }()
	select {
	case registered := <-done:
		if registered {
			t.Fatal("Deregister reports a registration that never happened")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deregister still waits for a registry that does not answer after 5s")
	}
}

// runHourly runs an agent for a healthy application with metadata meta,
// checked once an hour, and waits for its registration in f.
func runHourly(t *testing.T, f *fakeRegistrar, meta map[string]string) *Agent {
	t.Helper()
	port, _ := healthyApp(t)
	cfg := Config{Service: "users", ID: "app-1", Port: port, Address: "10.1.2.3", Metadata: meta,
		Health: &health.Active{Interval: time.Hour, HealthyThreshold: 1, UnhealthyThreshold: 1}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := NewAgent(cfg, f, quietLog())
	go a.Run(context.Background())
	t.Cleanup(func() { a.Deregister(context.Background()) })
	waitFor(t, "registered", func() bool { cur, _ := f.get(); return cur != nil })
	return a
}

// Reconfigure updates the live registration at once (not at the next
// check, an hour away here) or refuses a change that needs a new one.
func TestAgentReconfigure(t *testing.T) {
	f := &fakeRegistrar{}
	a := runHourly(t, f, map[string]string{"canary": "true"})

	for _, tc := range []struct {
		name    string
		change  func(c *Config)
		want    func(in *discovery.Instance) bool
		refused string
	}{
		{name: "canary label removed", change: func(c *Config) { c.Metadata = map[string]string{"version": "v2"} },
			want: func(in *discovery.Instance) bool {
				return in.Metadata["canary"] == "" && in.Metadata["version"] == "v2"
			}},
		{name: "weight", change: func(c *Config) { c.Weight = 7 },
			want: func(in *discovery.Instance) bool { return in.Weight == 7 }},
		{name: "port", change: func(c *Config) { c.Port++ }, refused: "port changed"},
		{name: "service and health", change: func(c *Config) {
			c.Service = "orders"
			c.Health = &health.Active{Interval: time.Minute, HealthyThreshold: 1, UnhealthyThreshold: 1}
		}, refused: "service, health changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := a.config()
			tc.change(&next)
			if err := next.Validate(); err != nil {
				t.Fatal(err)
			}
			err := a.Reconfigure(next)
			if tc.refused != "" {
				if !errors.Is(err, ErrReplace) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Reconfigure = %v; want ErrReplace naming %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, tc.name+" applied", func() bool { cur, _ := f.get(); return cur != nil && tc.want(cur) })
		})
	}
	if _, events := f.get(); strings.Join(events, ",") != "register,update,update" {
		t.Fatalf("events %v; want one registration updated twice in place", events)
	}
}

// SetWithdrawn (a drain) takes the application out of the registry at
// once, keeps it out through healthy checks, and lets it back in at once.
func TestAgentWithdrawn(t *testing.T) {
	t.Run("at once", func(t *testing.T) {
		f := &fakeRegistrar{}
		a := runHourly(t, f, nil)
		a.SetWithdrawn(true)
		waitFor(t, "withdrawn before the next check, an hour away", func() bool {
			cur, _ := f.get()
			st := a.Status()
			return cur == nil && st.Withdrawn && !st.Registered && st.Weight == 0
		})
		a.SetWithdrawn(false)
		waitFor(t, "registered again before the next check", func() bool {
			cur, _ := f.get()
			st := a.Status()
			return cur != nil && !st.Withdrawn && st.Registered
		})
		if _, events := f.get(); strings.Join(events, ",") != "register,deregister,register" {
			t.Fatalf("events %v", events)
		}
	})
	t.Run("kept out while healthy", func(t *testing.T) {
		port, _ := healthyApp(t)
		f := &fakeRegistrar{}
		a := agentFor(t, port, f) // checks every 10ms
		a.SetWithdrawn(true)      // before Run: never registered
		go a.Run(context.Background())
		waitFor(t, "checked healthy", func() bool { return a.Status().Healthy })
		time.Sleep(100 * time.Millisecond) // ten healthy checks
		if cur, events := f.get(); cur != nil || len(events) != 0 {
			t.Fatalf("withdrawn application registered: %v", events)
		}
		if a.Deregister(context.Background()) {
			t.Fatal("Deregister reports a registration while withdrawn")
		}
	})
}
