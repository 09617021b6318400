package nacos

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/remora-mesh/remora/discovery"
)

func appInstance(weight uint32, meta map[string]string) discovery.Instance {
	return discovery.Instance{ID: "app-1", Address: "10.1.2.3", Port: 8080, Weight: weight, Healthy: true, Metadata: meta}
}

func register(t *testing.T, r *registry, service string, in discovery.Instance) discovery.Registration {
	t.Helper()
	g, err := r.Register(context.Background(), service, in)
	if err != nil {
		t.Fatalf("Register(%q): %v", service, err)
	}
	return g
}

// waitConnected waits until the registry has a client.
func waitConnected(t *testing.T, r *registry) {
	t.Helper()
	waitCond(t, "a connected client", func() bool { c, _ := r.clientGen(); return c != nil })
}

// The instance is registered as an ephemeral instance with its labels,
// weight (divided by weight_scale), health and enabled, in the registry's
// group and first cluster, or the group and cluster the service names.
func TestRegisterMapsTheInstance(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f, func(o *Options) {
		o.Group, o.Clusters, o.WeightScale = "apps", []string{"hz-b", "hz-a"}, 10
	})
	waitConnected(t, r)
	meta := map[string]string{"canary": "true", "version": "v2"}
	register(t, r, "users", appInstance(100, meta))
	p, ok := f.instance("apps", "users")
	if !ok {
		t.Fatal("not registered")
	}
	if p.Ip != "10.1.2.3" || p.Port != 8080 || p.Weight != 10 || !p.Healthy || !p.Enable || !p.Ephemeral ||
		p.ClusterName != "hz-b" || p.GroupName != "apps" || p.ServiceName != "users" || !maps.Equal(p.Metadata, meta) {
		t.Fatalf("registered %+v", p)
	}

	register(t, r, "pay@@orders@@blue", appInstance(5, nil))
	p, ok = f.instance("pay", "orders")
	if !ok || p.ClusterName != "blue" || p.Weight != 0.5 || p.Metadata == nil {
		t.Fatalf("registered %+v, %v; want cluster blue, weight 0.5 and non-nil metadata (Polaris needs it)", p, ok)
	}
}

func TestRegisterRejects(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	for _, c := range []struct {
		service string
		in      discovery.Instance
		want    string
	}{
		{"users@@x@@a,b", appInstance(1, nil), "one cluster"},
		{"a@@", appInstance(1, nil), "empty service name"},
		{"users", appInstance(10001, nil), "above Nacos' maximum"},
		{"users", discovery.Instance{Address: "10.0.0.1", Weight: 1}, "port 0"},
	} {
		if _, err := r.Register(context.Background(), c.service, c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Register(%q, %+v): %v; want an error about %q", c.service, c.in, err, c.want)
		}
	}
	register(t, r, "users", appInstance(1, nil))
	if _, err := r.Register(context.Background(), "users", appInstance(2, nil)); err == nil || !strings.Contains(err.Error(), "registered already") {
		t.Fatalf("a second instance of one service: %v", err)
	}
}

// Update registers the new values; Deregister withdraws the instance, is
// idempotent, and lets the service be registered again.
func TestRegisterUpdateDeregister(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	g := register(t, r, "users", appInstance(10, map[string]string{"v": "1"}))
	if err := g.Update(context.Background(), appInstance(100, map[string]string{"v": "2"})); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.instance(DefaultGroup, "users"); p.Weight != 100 || p.Metadata["v"] != "2" {
		t.Fatalf("after Update: %+v", p)
	}
	moved := appInstance(100, nil)
	moved.Port = 9090
	if err := g.Update(context.Background(), moved); err == nil {
		t.Fatal("Update to another port succeeded")
	}
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.instance(DefaultGroup, "users"); ok {
		t.Fatal("still registered after Deregister")
	}
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	if err := g.Update(context.Background(), appInstance(1, nil)); err == nil {
		t.Fatal("Update after Deregister succeeded")
	}
	register(t, r, "users", appInstance(1, nil))
}

// The adapter replaces its SDK client after a lost connection, and the
// server drops the old connection's ephemeral instances: every live
// registration is registered again on the new client, with the values of
// an Update made during the outage; a deregistered one is not.
func TestRegisterAgainOnNewClient(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	g := register(t, r, "users", appInstance(10, map[string]string{"canary": "true"}))
	other := register(t, r, "orders", appInstance(1, nil))
	if err := other.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}

	f.setHealthy(false)
	waitCond(t, "the client closed (the server forgot the instance)", func() bool {
		_, ok := f.instance(DefaultGroup, "users")
		return !ok
	})
	// During the outage: kept, not an error.
	if err := g.Update(context.Background(), appInstance(50, map[string]string{"canary": "false"})); err != nil {
		t.Fatalf("Update during the outage: %v", err)
	}
	f.setHealthy(true)
	waitCond(t, "registered again on the new client", func() bool {
		p, ok := f.instance(DefaultGroup, "users")
		return ok && p.Weight == 50 && p.Metadata["canary"] == "false"
	})
	f.mu.Lock()
	dials := f.dials
	f.mu.Unlock()
	if dials != 2 {
		t.Fatalf("%d clients dialled; want 2", dials)
	}
	if _, ok := f.instance(DefaultGroup, "orders"); ok {
		t.Fatal("a deregistered instance was registered again")
	}

	// Again, after a second loss: still kept.
	f.setHealthy(false)
	waitCond(t, "the second client closed", func() bool { _, ok := f.instance(DefaultGroup, "users"); return !ok })
	f.setHealthy(true)
	waitCond(t, "registered on the third client", func() bool { _, ok := f.instance(DefaultGroup, "users"); return ok })
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.instance(DefaultGroup, "users"); ok {
		t.Fatal("still registered after Deregister")
	}
}

// Registered while the server is unreachable: nothing is sent and Register
// succeeds; the instance is registered once a client connects. A
// Deregister before that leaves nothing behind.
func TestRegisterBeforeConnected(t *testing.T) {
	f := newFake()
	f.setHealthy(false)
	r := fakeRegistry(t, f)
	g := register(t, r, "users", appInstance(10, nil))
	gone := register(t, r, "orders", appInstance(10, nil))
	if err := gone.Deregister(context.Background()); err != nil {
		t.Fatalf("Deregister without a connection: %v", err)
	}
	for _, c := range f.callLog() {
		if strings.HasPrefix(c, "register") {
			t.Fatalf("SDK calls %v while unreachable", f.callLog())
		}
	}
	f.setHealthy(true)
	waitCond(t, "registered once connected", func() bool { _, ok := f.instance(DefaultGroup, "users"); return ok })
	if _, ok := f.instance(DefaultGroup, "orders"); ok {
		t.Fatal("an instance deregistered before the connection was registered")
	}
	_ = g
}

// A request the server refuses is tried again at once; one refused every
// time fails Register, is undone in the SDK and is not kept.
func TestRegisterRefused(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	refused := errors.New("the same instance request")
	f.failRegister(refused)
	register(t, r, "users", appInstance(1, nil))

	f.failRegister(refused, refused, refused)
	if _, err := r.Register(context.Background(), "orders", appInstance(1, nil)); err == nil || !strings.Contains(err.Error(), "same instance") {
		t.Fatalf("Register refused three times: %v", err)
	}
	if !slices.Contains(f.callLog(), "deregister DEFAULT_GROUP@@orders 10.1.2.3:8080") {
		t.Fatalf("SDK calls %v; want the failed registration undone", f.callLog())
	}
	// Not kept: a new client does not register it, and it can be
	// registered again.
	f.setHealthy(false)
	waitCond(t, "the client closed", func() bool { _, ok := f.instance(DefaultGroup, "users"); return !ok })
	f.setHealthy(true)
	waitCond(t, "users registered again", func() bool { _, ok := f.instance(DefaultGroup, "users"); return ok })
	if _, ok := f.instance(DefaultGroup, "orders"); ok {
		t.Fatal("a failed registration was registered on the new client")
	}
	register(t, r, "orders", appInstance(1, nil))
}

// A failed Update is reported, and retried in the background until the
// server has the new values.
func TestRegisterFailedUpdateRetried(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	g := register(t, r, "users", appInstance(10, nil))
	refused := errors.New("server busy")
	f.failRegister(refused, refused, refused)
	if err := g.Update(context.Background(), appInstance(100, nil)); err == nil {
		t.Fatal("Update refused three times succeeded")
	}
	waitCond(t, "the update retried", func() bool { p, _ := f.instance(DefaultGroup, "users"); return p.Weight == 100 })
}

// Close deregisters the live registrations before closing the client.
func TestRegisterClose(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	waitConnected(t, r)
	register(t, r, "users", appInstance(1, nil))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	calls := f.callLog()
	if len(calls) < 2 || calls[len(calls)-2] != "deregister DEFAULT_GROUP@@users 10.1.2.3:8080" || calls[len(calls)-1] != "close" {
		t.Fatalf("SDK calls %v; want the deregistration, then the close", calls)
	}
	if _, err := r.Register(context.Background(), "users", appInstance(1, nil)); err == nil {
		t.Fatal("Register after Close succeeded")
	}
}

// Registrations made, updated and withdrawn by one goroutine (as the agent
// does) while the connection keeps dropping: no data race (run with
// -race), and once the connection is stable the server has exactly what
// the last call said.
func TestRegisterWhileConnectionFlaps(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				f.setHealthy(true)
				return
			case <-time.After(3 * time.Millisecond):
			}
			f.setHealthy(i%4 != 0)
		}
	}()
	var g discovery.Registration
	for i := range 300 {
		var err error
		switch {
		case g == nil:
			g, err = r.Register(context.Background(), "users", appInstance(uint32(i+1), nil))
		case i%7 == 0:
			err = g.Deregister(context.Background())
			g = nil
		default:
			err = g.Update(context.Background(), appInstance(uint32(i+1), nil))
		}
		if err != nil && !strings.Contains(err.Error(), "not connected") {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	if g == nil {
		g = register(t, r, "users", appInstance(1000, nil))
	}
	if err := g.Update(context.Background(), appInstance(1001, nil)); err != nil && !strings.Contains(err.Error(), "not connected") {
		t.Fatal(err)
	}
	waitCond(t, "the last update on the server", func() bool { p, ok := f.instance(DefaultGroup, "users"); return ok && p.Weight == 1001 })
}

// The server stops listing the instance while the connection stays up
// (another client of the same address and port deregistered it, or its
// connection closed: Polaris keys instances by address and port). The
// registration looks for itself in its service's pushed list every
// readBack, once readBackGrace has passed since it was announced, and
// announces itself again when missing, which counts as a
// re-registration; listed, or deregistered, it is left alone. An
// instance of the same address and port in another cluster is not it.
func TestRegisterAgainWhenTheServerStopsListingIt(t *testing.T) {
	f := newFake()
	const grace = 300 * time.Millisecond
	r := tunedFakeRegistry(t, f, func(r *registry) { r.readBack, r.readBackGrace = 10*time.Millisecond, grace })
	waitConnected(t, r)
	registers := func() (n int) {
		for _, c := range f.callLog() {
			if c == "register DEFAULT_GROUP@@users 10.1.2.3:8080" {
				n++
			}
		}
		return n
	}
	self := host("10.1.2.3", 8080, "", 10, nil) // as registered: listed with other values, it would be registered again
	g := register(t, r, "users", appInstance(10, nil))
	f.push(DefaultGroup, "users", self, host("10.9.9.9", 8080, "", 1, nil))
	status := func() discovery.RegistrationStatus { return g.(discovery.StatusReporter).Status() }
	time.Sleep(2 * grace)
	if n, st := registers(), status(); n != 1 || !st.Up || st.Reregistrations != 0 {
		t.Fatalf("listed: %d registrations, status %+v; want 1 and up", n, st)
	}

	for i, hosts := range [][]model.Instance{
		{host("10.9.9.9", 8080, "", 1, nil)},     // gone
		{host("10.1.2.3", 8080, "blue", 1, nil)}, // in another cluster: not this one
		{host("10.9.9.9", 8080, "", 1, nil)},     // gone again
	} {
		f.push(DefaultGroup, "users", hosts...)
		waitCond(t, "registered again", func() bool { return registers() == i+2 })
		f.push(DefaultGroup, "users", self) // the server lists it again
		waitCond(t, "up again", func() bool { return status().Up })
		if st := status(); st.Reregistrations != uint64(i+1) || !strings.Contains(st.LastError, "no longer lists it") {
			t.Fatalf("status after re-registration %d: %+v", i+1, st)
		}
	}
	time.Sleep(2 * grace)
	if n := registers(); n != 4 {
		t.Fatalf("%d registrations while listed; want 4 (no more)", n)
	}

	if err := g.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.push(DefaultGroup, "users")
	time.Sleep(2 * grace)
	if n := registers(); n != 4 {
		t.Fatalf("%d registrations after Deregister; want 4", n)
	}
	if n := f.registered(DefaultGroup, "users"); n != 0 {
		t.Fatalf("%d callbacks of users left after Deregister: the registration's watch was not stopped", n)
	}
}

// An instance's address in a message is joined as a host and port: an
// IPv6 address in brackets.
func TestHostPortInMessages(t *testing.T) {
	for ip, want := range map[string]string{"10.0.0.5": "10.0.0.5:8080", "fd00::5": "[fd00::5]:8080"} {
		if got := hostPort(ip, 8080); got != want {
			t.Errorf("hostPort(%q, 8080) = %q; want %q", ip, got, want)
		}
	}
}
