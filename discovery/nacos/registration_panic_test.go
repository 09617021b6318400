package nacos

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/internal/panics"
)

// injector makes call number at of method panic ("dial" is the registry's
// dial, the others the client's methods), counting from when it is armed;
// after the panic, every call of gated waits for open, so that the state
// the panic left can be looked at before the adapter goes on.
type injector struct {
	method string
	at     int
	gated  string
	armed  atomic.Bool
	gate   chan struct{}
	once   sync.Once

	mu       sync.Mutex
	calls    map[string]int
	panicked bool
}

func newInjector(method string, at int, gated string) *injector {
	in := &injector{method: method, at: at, gated: gated, gate: make(chan struct{}), calls: map[string]int{}}
	in.armed.Store(true)
	return in
}

func (in *injector) open() { in.once.Do(func() { close(in.gate) }) }

func (in *injector) enter(method string) {
	in.mu.Lock()
	if in.armed.Load() {
		in.calls[method]++
		if method == in.method && in.calls[method] == in.at {
			in.panicked = true
			in.mu.Unlock()
			panic("injected: " + method + " panicked")
		}
	}
	wait := in.panicked && method == in.gated
	in.mu.Unlock()
	if wait {
		<-in.gate
	}
}

// dial is the registry's dial on f through in.
func (in *injector) dial(f *fakeClient) func() (namingClient, error) {
	return func() (namingClient, error) {
		in.enter("dial")
		c, err := f.reopen()
		return injectedClient{namingClient: c, in: in}, err
	}
}

// injectedClient is a namingClient whose ServerHealthy, CloseClient and
// RegisterInstance go through an injector.
type injectedClient struct {
	namingClient
	in *injector
}

func (c injectedClient) ServerHealthy() bool {
	c.in.enter("ServerHealthy")
	return c.namingClient.ServerHealthy()
}

func (c injectedClient) CloseClient() {
	c.in.enter("CloseClient")
	c.namingClient.CloseClient()
}

func (c injectedClient) RegisterInstance(p vo.RegisterInstanceParam) (bool, error) {
	c.in.enter("RegisterInstance")
	return c.namingClient.RegisterInstance(p)
}

// oneError checks that one error was logged, for the injected panic, with
// its stack and, if service is not "", the service.
func oneError(t *testing.T, logged []*logrus.Entry, method, service string) {
	t.Helper()
	if len(logged) != 1 || logged[0].Data["panic"] != "injected: "+method+" panicked" ||
		!strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		service != "" && logged[0].Data["service"] != service {
		t.Fatalf("errors logged: %v; want one, with the panic, its stack and the service %q", logged, service)
	}
}

// A panic in keeping a registration announced (here, in the SDK's
// RegisterInstance called by keepRegistered) ended the process. The
// registration is down with the panic as its error and is announced
// again, on the current client, after keepRegistered's backoff; the
// panic does not hold Deregister up.
func TestKeepRegisteredPanicIsDownAndAnnouncedAgain(t *testing.T) {
	self := host("10.1.2.3", 8080, "", 1, nil)
	tests := []struct {
		name string
		at   int // RegisterInstance's call that panics
		// before runs before Register; after, after it (nil: nothing).
		before, after func(t *testing.T, f *fakeClient, r *registry)
		readBack      bool // the registration looks for itself in its service
	}{
		{
			name:   "announced once connected",
			at:     1,
			before: func(_ *testing.T, f *fakeClient, _ *registry) { f.setHealthy(false) },
			after:  func(_ *testing.T, f *fakeClient, _ *registry) { f.setHealthy(true) },
		},
		{
			name:   "announced again on a new client",
			at:     2,
			before: func(t *testing.T, _ *fakeClient, r *registry) { waitConnected(t, r) },
			after: func(t *testing.T, f *fakeClient, _ *registry) {
				f.setHealthy(false)
				waitCond(t, "the client closed", func() bool { _, ok := f.instance(DefaultGroup, "users"); return !ok })
				f.setHealthy(true)
			},
		},
		{
			name:     "announced again when the server stops listing it",
			at:       2,
			readBack: true,
			before:   func(t *testing.T, _ *fakeClient, r *registry) { waitConnected(t, r) },
			after:    func(_ *testing.T, f *fakeClient, _ *registry) { f.push(DefaultGroup, "users") },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			in := newInjector("RegisterInstance", tc.at, "RegisterInstance")
			var hook *logtest.Hook
			r := tunedFakeRegistry(t, f, func(r *registry) {
				hook = hookLog(r)
				r.dial = in.dial(f)
				if tc.readBack {
					r.readBack, r.readBackGrace = 10*time.Millisecond, 50*time.Millisecond
				}
			})
			t.Cleanup(in.open) // before Close, which waits for the registrations' calls
			tc.before(t, f, r)
			g := register(t, r, "users", appInstance(10, nil)).(*registration)
			if tc.readBack {
				f.push(DefaultGroup, "users", self)
			}
			tc.after(t, f, r)

			// Down with the panic, until the SDK lets the retry through.
			want := "panic: injected: RegisterInstance panicked"
			waitCond(t, "down with the panic", func() bool {
				st := g.Status()
				return !st.Up && strings.Contains(st.LastError, want) && strings.Contains(st.LastError, "users")
			})
			if tc.readBack {
				f.push(DefaultGroup, "users", self) // listed once announced again
			}
			in.open()
			waitCond(t, "announced again and up", func() bool {
				_, ok := f.instance(DefaultGroup, "users")
				return ok && g.Status().Up
			})
			if err := g.Deregister(context.Background()); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			if _, ok := f.instance(DefaultGroup, "users"); ok {
				t.Fatal("still registered after Deregister")
			}
			oneError(t, errorsLogged(hook), "RegisterInstance", "DEFAULT_GROUP@@users")
		})
	}
}

// A panic in supervising the connection (creating a client, checking a
// new one, watching the connection, closing a lost one) ended the
// process. It is a failed connection: every client created is closed
// (once: a client whose closing panicked is left to the SDK), watchers
// report the panic (their sets kept), registrations are down with it; a
// new client is created after the backoff, and the registration is
// announced again on it.
func TestSupervisePanicIsAFailedConnection(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		at       int
		armLater bool                // armed once connected and registered
		trigger  func(f *fakeClient) // after arming
		restore  func(f *fakeClient) // before the gate opens
		leftOpen int                 // clients not closed: their closing panicked
	}{
		{name: "creating the client", method: "dial", at: 1},
		{name: "checking a new client", method: "ServerHealthy", at: 1},
		{name: "watching the connection", method: "ServerHealthy", at: 1, armLater: true},
		{
			name: "closing a lost client", method: "CloseClient", at: 1, armLater: true, leftOpen: 1,
			trigger: func(f *fakeClient) { f.setHealthy(false) },
			restore: func(f *fakeClient) { f.setHealthy(true) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.push(DefaultGroup, "orders", host("10.0.0.1", 8080, "", 1, nil))
			in := newInjector(tc.method, tc.at, "dial")
			in.armed.Store(!tc.armLater)
			var hook *logtest.Hook
			r := tunedFakeRegistry(t, f, func(r *registry) {
				hook = hookLog(r)
				r.dial = in.dial(f)
				r.probe = nil // every attempt dials: the gate holds the one after the panic
			})
			t.Cleanup(in.open)
			w := watch(t, r, "orders")
			g := register(t, r, "users", appInstance(10, nil)).(*registration)
			if tc.armLater {
				waitCond(t, "registered", func() bool { return g.Status().Up })
				in.armed.Store(true)
				if tc.trigger != nil {
					tc.trigger(f)
				}
			}

			// The watcher reports the panic; the registration is down
			// with it; every client created was closed.
			var pe *panics.Error
			for {
				_, err := nextOf(t, w)
				if errors.As(err, &pe) {
					if !errors.Is(err, ErrUnreachable) {
						t.Fatalf("Next = %v; want ErrUnreachable too", err)
					}
					break
				}
			}
			if st := g.Status(); st.Up || !strings.Contains(st.LastError, "panic: injected: "+tc.method+" panicked") {
				t.Fatalf("registration status after the panic: %+v; want down with the panic", st)
			}
			// The client is closed after the watchers are told (retire:
			// setDown, then the fence, then the close).
			var closes, dials int
			counted := func() bool {
				closes = 0
				for _, c := range f.callLog() {
					if c == "close" {
						closes++
					}
				}
				f.mu.Lock()
				dials = f.dials
				f.mu.Unlock()
				return closes == dials-tc.leftOpen
			}
			deadline := time.Now().Add(wait)
			for !counted() {
				if time.Now().After(deadline) {
					t.Fatalf("%d clients created, %d closed; want %d left open", dials, closes, tc.leftOpen)
				}
				time.Sleep(5 * time.Millisecond)
			}

			if tc.restore != nil {
				tc.restore(f)
			}
			in.open()
			waitCond(t, "connected again, the instance announced again", func() bool {
				_, ok := f.instance(DefaultGroup, "users")
				return ok && g.Status().Up
			})
			for {
				set, err := nextOf(t, w)
				if err == nil {
					if len(set) != 1 {
						t.Fatalf("Next after reconnecting = %v; want the instance", set)
					}
					break
				}
			}
			if err := g.Deregister(context.Background()); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			oneError(t, errorsLogged(hook), tc.method, "")
		})
	}
}
