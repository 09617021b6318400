package nacos

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// panickingSubscribe is a namingClient whose Subscribe number at panics.
type panickingSubscribe struct {
	namingClient
	calls *atomic.Int32
	at    int32
}

func (p panickingSubscribe) Subscribe(param *vo.SubscribeParam) error {
	if p.calls.Add(1) == p.at {
		panic("injected: Subscribe panicked")
	}
	return p.namingClient.Subscribe(param)
}

// gatedGetService is a namingClient whose GetService waits for gate to
// close.
type gatedGetService struct {
	namingClient
	gate chan struct{}
}

func (g gatedGetService) GetService(param vo.GetServiceParam) (model.Service, error) {
	<-g.gate
	return g.namingClient.GetService(param)
}

// nextOf is w.Next within wait.
func nextOf(t *testing.T, w discovery.Watcher) ([]discovery.Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	set, err := w.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next did not return within %v", wait)
	}
	return set, err
}

// errorsLogged returns the entries of hook at level error.
func errorsLogged(hook *logtest.Hook) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			out = append(out, e)
		}
	}
	return out
}

// hookLog makes r log to a new test hook.
func hookLog(r *registry) *logtest.Hook {
	l, hook := logtest.NewNullLogger()
	r.log = logrus.NewEntry(l)
	return hook
}

// A panic in a subscription's goroutine (here, in the SDK's Subscribe)
// made the process die. The watchers report it as an error; the
// subscription unsubscribes as it unwinds and subscribes again after a
// pause, and the set comes.
func TestSubscriptionPanicIsAnErrorAndItSubscribesAgain(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "orders", host("10.0.0.1", 8080, "", 1, nil))
	var calls atomic.Int32
	var hook *logtest.Hook
	r := tunedFakeRegistry(t, f, func(r *registry) {
		hook = hookLog(r)
		r.dial = func() (namingClient, error) {
			c, err := f.reopen()
			return panickingSubscribe{namingClient: c, calls: &calls, at: 1}, err
		}
	})
	w := watch(t, r, "orders")
	set, err := nextOf(t, w)
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), "orders") {
		t.Fatalf("first Next = %v, %v; want a *panics.Error naming the service, no set", set, err)
	}
	if set, err := nextOf(t, w); err != nil || len(set) != 1 {
		t.Fatalf("after the restart: Next = %v, %v; want the instance", set, err)
	}
	if got, want := strings.Join(f.callLog(), "; "), "unsubscribe DEFAULT_GROUP@@orders #1; subscribe DEFAULT_GROUP@@orders #1"; got != want {
		t.Fatalf("SDK calls: %s; want %s", got, want)
	}
	if logged := errorsLogged(hook); len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		logged[0].Data["panic"] != "injected: Subscribe panicked" {
		t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
	}
}

// A panic in Remora's callback, which the SDK calls on its own goroutine,
// unwound that goroutine and ended the process. The watchers report it
// (their sets kept), and the subscription reads the SDK's copy of the
// service in place of the list that was lost.
func TestCallbackPanicIsAnErrorAndTheListIsReadAgain(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "orders", host("10.0.0.1", 8080, "", 1, nil))
	var hook *logtest.Hook
	gate := make(chan struct{})
	r := tunedFakeRegistry(t, f, func(r *registry) {
		hook = hookLog(r)
		r.dial = func() (namingClient, error) {
			c, err := f.reopen()
			return gatedGetService{namingClient: c, gate: gate}, err
		}
	})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	t.Cleanup(open) // before Close, which waits for the subscription
	w := watch(t, r, "orders")
	waitPorts(t, w, 8080)

	var panicking atomic.Bool
	panicking.Store(true)
	onPush = func(s *subscription, hosts []model.Instance) {
		if panicking.Load() {
			panic("injected: the callback panicked")
		}
		s.received(hosts)
	}
	t.Cleanup(func() { onPush = (*subscription).received })
	f.push(DefaultGroup, "orders", host("10.0.0.1", 8080, "", 1, nil), host("10.0.0.2", 9090, "", 1, nil))
	f.push(DefaultGroup, "orders", host("10.0.0.1", 8080, "", 1, nil), host("10.0.0.2", 9090, "", 1, nil))
	panicking.Store(false)

	set, err := nextOf(t, w)
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), "orders") {
		t.Fatalf("Next after the panic = %v, %v; want a *panics.Error naming the service, no set", set, err)
	}
	open() // the SDK's copy can be read
	if set, err := nextOf(t, w); err != nil || len(set) != 2 {
		t.Fatalf("Next = %v, %v; want the pushed list, read from the SDK's copy", set, err)
	}
	if logged := errorsLogged(hook); len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		logged[0].Data["panic"] != "injected: the callback panicked" {
		t.Fatalf("errors logged: %v; want one for two panics, with the panic and its stack", logged)
	}
}
