package register

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/pkg/health"
)

// panickingRegistrar is a fakeRegistrar whose calls named in panicOn
// panic the first time they are made.
type panickingRegistrar struct {
	fakeRegistrar
	panicOn  string // "register", "update" or "deregister"
	panicked atomic.Bool
}

func (p *panickingRegistrar) maybePanic(call string) {
	if call == p.panicOn && p.panicked.CompareAndSwap(false, true) {
		panic("injected: the adapter panicked in " + call)
	}
}

func (p *panickingRegistrar) Register(ctx context.Context, service string, in discovery.Instance) (discovery.Registration, error) {
	p.maybePanic("register")
	if _, err := p.fakeRegistrar.Register(ctx, service, in); err != nil {
		return nil, err
	}
	return panickingRegistration{p}, nil
}

type panickingRegistration struct{ p *panickingRegistrar }

func (r panickingRegistration) Update(ctx context.Context, in discovery.Instance) error {
	r.p.maybePanic("update")
	return fakeRegistration{&r.p.fakeRegistrar}.Update(ctx, in)
}

func (r panickingRegistration) Deregister(ctx context.Context) error {
	r.p.maybePanic("deregister")
	return fakeRegistration{&r.p.fakeRegistrar}.Deregister(ctx)
}

// A panic in an adapter's Register, Update or Deregister, which some
// adapters make on the agent's goroutine, ended the process. It is a
// failed call now: logged once with its stack, tried again.
func TestAdapterPanicIsAFailedCall(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer app.Close()
	port := app.Listener.Addr().(*net.TCPAddr).Port
	for _, call := range []string{"register", "update", "deregister"} {
		t.Run(call, func(t *testing.T) {
			cfg := Config{Service: "users", Port: port, Address: "10.1.2.3",
				Health: &health.Active{Interval: 10 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}}
			if call == "update" {
				cfg.Warmup = time.Second // the weight rises: updates
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			f := &panickingRegistrar{panicOn: call}
			logger, hook := logtest.NewNullLogger()
			a := NewAgent(cfg, f, logrus.NewEntry(logger))
			go a.Run(context.Background())
			waitFor(t, "registered", func() bool { cur, _ := f.get(); return cur != nil })
			if call == "update" {
				waitFor(t, "updated", func() bool { _, ev := f.get(); return strings.Contains(strings.Join(ev, ","), "update") })
			}
			a.Deregister(context.Background()) // for "deregister", panics: logged, and the process goes on
			if !f.panicked.Load() {
				t.Fatalf("%s never panicked", call)
			}
			var logged []*logrus.Entry
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel {
					logged = append(logged, e)
				}
			}
			if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
				!strings.Contains(logged[0].Data["panic"].(string), "injected") {
				t.Fatalf("error lines: %v; want one, with the panic and its stack", logged)
			}
			if call == "deregister" {
				var warned bool
				for _, e := range hook.AllEntries() {
					var pe *panics.Error
					if err, ok := e.Data[logrus.ErrorKey].(error); ok && errors.As(err, &pe) && e.Message == "deregistration failed" {
						warned = true
					}
				}
				if !warned {
					t.Fatal("the panicking deregistration was not reported as failed")
				}
			}
		})
	}
}

// refusingRegistrar is a fakeRegistrar whose registrations refuse every
// update, as a registry refuses a value it cannot hold.
type refusingRegistrar struct {
	fakeRegistrar
	updates atomic.Int32
}

func (r *refusingRegistrar) Register(ctx context.Context, service string, in discovery.Instance) (discovery.Registration, error) {
	if _, err := r.fakeRegistrar.Register(ctx, service, in); err != nil {
		return nil, err
	}
	return refusingRegistration{r}, nil
}

type refusingRegistration struct{ r *refusingRegistrar }

func (g refusingRegistration) Update(context.Context, discovery.Instance) error {
	g.r.updates.Add(1)
	return errors.New("injected: the registry refuses the value")
}

func (g refusingRegistration) Deregister(ctx context.Context) error {
	return fakeRegistration{&g.r.fakeRegistrar}.Deregister(ctx)
}

// An update the registry refuses (a reload to a weight it cannot hold)
// is said at Warn, once until one succeeds: it was said at Debug only,
// and the reload looked applied while the registry kept the old value.
func TestRefusedUpdateIsWarnedOnce(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer app.Close()
	cfg := Config{Service: "users", Port: app.Listener.Addr().(*net.TCPAddr).Port, Address: "10.1.2.3", Warmup: time.Second,
		Health: &health.Active{Interval: 10 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := &refusingRegistrar{}
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	a := NewAgent(cfg, f, logrus.NewEntry(logger))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	waitFor(t, "several refused updates", func() bool { return f.updates.Load() >= 5 })
	cancel()
	var warned int
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && strings.Contains(e.Message, "update not applied") {
			warned++
		}
	}
	if warned != 1 {
		t.Fatalf("%d warnings for %d refused updates; want one", warned, f.updates.Load())
	}
}
