package nacos

import (
	"context"
	"errors"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/internal/sdkguard"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Tests against the real server (Polaris) beyond the conformance suite.

const serverWait = 10 * time.Second

func inst(id string, port int) discovery.Instance {
	return discovery.Instance{ID: id, Address: "127.0.0.1", Port: port, Weight: 1, Healthy: true}
}

func waitSet(t *testing.T, w discovery.Watcher, what string, cond func([]discovery.Instance) bool) []discovery.Instance {
	t.Helper()
	return discoverytest.WaitFor(t, w, serverWait, what, cond)
}

func byPort(set []discovery.Instance) map[int]discovery.Instance {
	out := map[int]discovery.Instance{}
	for _, in := range set {
		out[in.Port] = in
	}
	return out
}

func hasPorts(set []discovery.Instance, ports ...int) bool {
	m := byPort(set)
	if len(m) != len(ports) {
		return false
	}
	for _, p := range ports {
		if _, ok := m[p]; !ok {
			return false
		}
	}
	return true
}

// nacos-sdk-go#423 against the server: removing the last instance delivers
// the empty set (the SDK would keep the last instance without
// UpdateCacheWhenEmpty).
func TestServerPitfall423LastInstanceRemoved(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	srv.Register(t, svc, inst("a", 21001))
	waitSet(t, w, "a", func(s []discovery.Instance) bool { return hasPorts(s, 21001) })
	srv.Deregister(t, svc, "a")
	waitSet(t, w, "the empty set", func(s []discovery.Instance) bool { return s != nil && len(s) == 0 })
}

// nacos-sdk-go#803 against the server: watches of one service with
// different clusters (one SDK subscription) each get their cluster and
// keep getting changes; stopping one leaves the other working.
func TestServerPitfall803ClustersOfOneService(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "", func(o *Options) { o.Clusters = []string{"east"} })
	svc := discoverytest.UniqueService(t)
	east := watch(t, reg, svc)                            // the registry's clusters
	west := watch(t, reg, DefaultGroup+"@@"+svc+"@@west") // overridden
	all := watch(t, reg, DefaultGroup+"@@"+svc+"@@")      // every cluster
	srv.Register(t, svc, inst("e1", 21011), nacostest.Cluster("east"))
	srv.Register(t, svc, inst("w1", 21012), nacostest.Cluster("west"))
	waitSet(t, east, "e1", func(s []discovery.Instance) bool { return hasPorts(s, 21011) })
	waitSet(t, west, "w1", func(s []discovery.Instance) bool { return hasPorts(s, 21012) })
	set := waitSet(t, all, "e1 and w1", func(s []discovery.Instance) bool { return hasPorts(s, 21011, 21012) })
	if id := byPort(set)[21011].ID; id != "east/127.0.0.1:21011" {
		t.Fatalf("ID %q; want the cluster and ip:port", id)
	}

	srv.Register(t, svc, inst("e2", 21013), nacostest.Cluster("east"))
	waitSet(t, east, "e1, e2", func(s []discovery.Instance) bool { return hasPorts(s, 21011, 21013) })
	_ = east.Stop()
	srv.Register(t, svc, inst("w2", 21014), nacostest.Cluster("west"))
	waitSet(t, west, "w1, w2", func(s []discovery.Instance) bool { return hasPorts(s, 21012, 21014) })
	waitSet(t, all, "all four", func(s []discovery.Instance) bool { return hasPorts(s, 21011, 21012, 21013, 21014) })
}

// nacos-sdk-go#845 against the server: once the last watcher of a service
// stops, the SDK no longer calls the adapter back for it (Unsubscribe found
// the callback, because it got the very param Subscribe got), while
// another client still sees the service change.
func TestServerPitfall845NoCallbacksAfterStop(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	srv.Register(t, svc, inst("a", 21021))
	waitSet(t, w, "a", func(s []discovery.Instance) bool { return hasPorts(s, 21021) })
	r := reg.(*registry)
	r.mu.Lock()
	sub := r.subs[DefaultGroup+"@@"+svc]
	r.mu.Unlock()
	if sub == nil || sub.callbacks.Load() == 0 {
		t.Fatal("no subscription, or no callback received")
	}
	_ = w.Stop()
	select {
	case <-sub.exited:
	case <-time.After(serverWait):
		t.Fatal("the subscription did not end after its last watcher stopped")
	}
	before := sub.callbacks.Load()

	// A control watcher on its own client sees the next change...
	other, _ := openReal(t, srv, "")
	ctl := watch(t, other, svc)
	waitSet(t, ctl, "a", func(s []discovery.Instance) bool { return hasPorts(s, 21021) })
	srv.Register(t, svc, inst("b", 21022))
	waitSet(t, ctl, "a and b", func(s []discovery.Instance) bool { return hasPorts(s, 21021, 21022) })
	time.Sleep(500 * time.Millisecond) // pushes to both clients go out together
	// ...and the first client's callback was not called for it.
	if after := sub.callbacks.Load(); after != before {
		t.Fatalf("the SDK called the stopped subscription's callback %d more times: Unsubscribe missed it", after-before)
	}
	// A new watch of the service on the first registry works again.
	w2 := watch(t, reg, svc)
	waitSet(t, w2, "a and b", func(s []discovery.Instance) bool { return hasPorts(s, 21021, 21022) })
}

// The mapping against the server: metadata without Polaris' internal keys,
// cluster in the ID, integer weights; and Polaris' own weight handling.
func TestServerMapping(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	a := inst("a", 21031)
	a.Weight, a.Metadata = 7, map[string]string{"version": "v2", "canary": "true"}
	srv.Register(t, svc, a)
	srv.Register(t, svc, inst("b", 21032), nacostest.Weight(2.5))
	srv.Register(t, svc, inst("c", 21033), nacostest.Weight(0.5))
	srv.Register(t, svc, inst("d", 21034), nacostest.Cluster("hz"))
	set := waitSet(t, w, "four instances", func(s []discovery.Instance) bool { return hasPorts(s, 21031, 21032, 21033, 21034) })
	m := byPort(set)
	if got := m[21031]; got.ID != "DEFAULT/127.0.0.1:21031" || got.Weight != 7 || !got.Healthy || !maps.Equal(got.Metadata, a.Metadata) {
		t.Errorf("a: %s; want ID DEFAULT/127.0.0.1:21031, weight 7, exactly its own metadata (no internal-nacos-* keys)", discoverytest.Describe([]discovery.Instance{got}))
	}
	if got := m[21034]; got.ID != "hz/127.0.0.1:21034" || got.Metadata != nil {
		t.Errorf("d: %s; want ID hz/127.0.0.1:21034 and no metadata", discoverytest.Describe([]discovery.Instance{got}))
	}
	// Polaris keeps weights as integers: it truncates 2.5 to 2 and 0.5 to
	// 0 (Nacos keeps 2.5 and 0.5, which the adapter maps to 3 and 1).
	if m[21032].Weight != 2 || m[21033].Weight != 0 {
		t.Errorf("weights 2.5 and 0.5 arrived as %d and %d; Polaris v1.18.1 truncates them to 2 and 0",
			m[21032].Weight, m[21033].Weight)
	}
}

// Unhealthy and disabled instances are never picked: an unhealthy one is
// delivered with Healthy=false; a disabled one Polaris leaves out of the
// push (were it delivered, it would come with Healthy=false too). Checked
// on the watcher's sets and on the live set of an upstream fed by it.
func TestServerUnhealthyAndDisabledNotPicked(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	u := runUpstream(t, svc, w)

	sick := inst("sick", 21042)
	sick.Healthy = false
	srv.Register(t, svc, inst("ok", 21041))
	srv.RegisterHTTP(t, svc, sick)
	srv.RegisterHTTP(t, svc, inst("off", 21043), nacostest.Disabled())
	srv.Register(t, svc, inst("last", 21044)) // registered last: when it is seen, so are the others
	snap := waitSnapshot(t, u, "ok, sick and last", func(s *upstream.Snapshot) bool {
		m := snapPorts(s)
		return m[21041] && m[21042] && m[21044]
	})
	for _, n := range snap.Nodes {
		switch n.Port {
		case 21041, 21044:
			if !n.Healthy {
				t.Errorf("%s delivered unhealthy", n.ID)
			}
		case 21042:
			if n.Healthy {
				t.Errorf("the unhealthy instance %s delivered healthy", n.ID)
			}
		case 21043:
			if n.Healthy {
				t.Errorf("the disabled instance %s delivered healthy", n.ID)
			}
			t.Logf("note: Polaris delivered the disabled instance (with Healthy=false)")
		}
	}
	for range 200 {
		n := snap.Picker.Pick(balancer.Info{})
		if n == nil || (n.Port != 21041 && n.Port != 21044) {
			t.Fatalf("picked %v; only ok and last may be picked", n)
		}
	}
}

func snapPorts(s *upstream.Snapshot) map[int]bool {
	m := map[int]bool{}
	for _, n := range s.Nodes {
		m[n.Port] = true
	}
	return m
}

// runUpstream runs an upstream named name fed by w until the test ends.
func runUpstream(t *testing.T, name string, w discovery.Watcher) *upstream.Upstream {
	t.Helper()
	u := upstream.New(upstream.Config{Name: name})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx, w) }()
	t.Cleanup(func() { cancel(); <-done })
	return u
}

// waitSnapshot polls u until cond holds for its snapshot.
func waitSnapshot(t *testing.T, u *upstream.Upstream, what string, cond func(*upstream.Snapshot) bool) *upstream.Snapshot {
	t.Helper()
	deadline := time.Now().Add(serverWait)
	for {
		s := u.Snapshot()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: %d nodes, stale %v (%v)", serverWait, what, len(s.Nodes), s.Stale(), s.Err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Username and password: the login works, and neither the password nor
// the access token (Polaris hands back the password as the token) appears
// in any log line, the SDK's included, at debug level, even while
// requests fail and the SDK logs their bodies.
func TestServerCredentialsNeverLogged(t *testing.T) {
	srv := polaris(t)
	const password = "pw-4c1f9e0b-never-logged"
	// Polaris serves the login API at the root, not under /nacos.
	reg, hook := openReal(t, srv, "", func(o *Options) {
		o.Servers = []string{"http://" + srv.Addr() + "/"}
		o.Username, o.Password = "remora", password
	})
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	srv.Register(t, svc, inst("a", 21051))
	waitSet(t, w, "a", func(s []discovery.Instance) bool { return hasPorts(s, 21051) })

	// Make requests fail: the SDK logs their bodies, headers included.
	srv.Kill()
	t.Cleanup(func() {
		if err := srv.Resume(); err != nil {
			t.Errorf("resuming the server: %v", err)
		}
	})
	w2 := watch(t, reg, discoverytest.UniqueService(t))
	ctx, cancel := context.WithTimeout(context.Background(), serverWait)
	defer cancel()
	for {
		if _, err := w2.Next(ctx); err != nil {
			break
		}
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	_ = reg.Close()

	var sdkLines int
	for _, e := range hook.AllEntries() {
		line, _ := e.String()
		if e.Data["component"] == "nacos-sdk" {
			sdkLines++
		}
		if strings.Contains(line, password) {
			t.Fatalf("the password leaked into the log: %s", line)
		}
	}
	if sdkLines == 0 {
		t.Fatal("no SDK log lines were captured at debug level; the test proves nothing")
	}
}

// Cold start with the server down: a registry opened on the data dir of an
// earlier run delivers the instances from the SDK's disk cache, then
// ErrUnreachable, so the upstream it feeds has the last known nodes,
// marked stale (what /upstreams shows), and picks them; once the server is
// back, changes flow.
func TestServerColdStartFromDiskCache(t *testing.T) {
	srv := polaris(t)
	dataDir := t.TempDir()
	svc := discoverytest.UniqueService(t)
	reg1, _ := openReal(t, srv, dataDir)
	w1 := watch(t, reg1, svc)
	srv.Register(t, svc, inst("a", 21061))
	waitSet(t, w1, "a", func(s []discovery.Instance) bool { return hasPorts(s, 21061) })
	_ = reg1.Close()

	srv.Kill()
	t.Cleanup(func() { _ = srv.Resume() })
	reg2, _ := openReal(t, srv, dataDir)
	w2 := watch(t, reg2, svc)
	u := runUpstream(t, svc, w2)
	snap := waitSnapshot(t, u, "a from the disk cache, stale", func(s *upstream.Snapshot) bool {
		return snapPorts(s)[21061] && s.Stale()
	})
	if !errors.Is(snap.Err, ErrUnreachable) {
		t.Fatalf("stale because of %v; want ErrUnreachable", snap.Err)
	}
	if n := snap.Picker.Pick(balancer.Info{}); n == nil || n.Port != 21061 {
		t.Fatalf("picked %v with the server down; want a", n)
	}

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	srv.Register(t, svc, inst("b", 21062))
	waitSnapshot(t, u, "a and b once the server is back", func(s *upstream.Snapshot) bool {
		m := snapPorts(s)
		return m[21061] && m[21062] && !s.Stale()
	})
}

// Without a data dir or cache_dir there is no disk cache: the same cold
// start delivers nothing but the error (and leaves no files behind).
func TestServerColdStartWithoutCache(t *testing.T) {
	srv := polaris(t)
	o := &Options{Servers: []string{srv.Addr()}}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	t.Cleanup(func() { _ = srv.Resume() })
	reg, err := o.Open(discovery.Env{Name: "no-cache"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	w := watch(t, reg, discoverytest.UniqueService(t))
	ctx, cancel := context.WithTimeout(context.Background(), serverWait)
	defer cancel()
	if set, err := w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Next: %s, %v; want ErrUnreachable and no set", discoverytest.Describe(set), err)
	}
}

// A closed SDK client leaves no UDP listener behind: the SDK opens one per
// client and, unwoken, never closes it.
func TestServerClosedClientLeavesNoUDPListener(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	w := watch(t, reg, discoverytest.UniqueService(t))
	waitSet(t, w, "the empty set", func(s []discovery.Instance) bool { return s != nil })
	r := reg.(*registry)
	r.mu.Lock()
	c, _ := r.client.(*sdkClient)
	r.mu.Unlock()
	if c == nil || c.udpPort == 0 {
		t.Fatalf("client %T without a known UDP port", c)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(serverWait)
	for {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: c.udpPort})
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("UDP port %d still bound after the client closed: %v", c.udpPort, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Registration against the server: the instance is listed with its labels
// as an ephemeral instance; after the server restarts (a graceful stop
// drops the ephemeral instances with their connections) the adapter's new
// client registers it again; after Deregister it is gone. Presence is read
// from the server's instance list.
func TestServerRegistrationSurvivesRestart(t *testing.T) {
	srv := polaris(t)
	reg, hook := openReal(t, srv, "")
	registered := func() (n int) {
		for _, e := range hook.AllEntries() {
			if e.Message == "nacos: local instance registered" {
				n++
			}
		}
		return n
	}
	svc := discoverytest.UniqueService(t)
	listed := func() *nacostest.Host {
		for _, h := range srv.Instances(t, svc) {
			if h.Port == 21071 {
				return &h
			}
		}
		return nil
	}
	waitListed := func(what string, cond func(*nacostest.Host) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond(listed()) {
			if time.Since(start) > serverWait {
				t.Fatalf("%s: not within %v (listed: %+v)", what, serverWait, srv.Instances(t, svc))
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	in := inst("app", 21071)
	in.Weight, in.Metadata = 5, map[string]string{"canary": "true"}
	g, err := reg.(discovery.Registrar).Register(context.Background(), svc, in)
	if err != nil {
		t.Fatal(err)
	}
	took := waitListed("listed", func(h *nacostest.Host) bool {
		return h != nil && h.Ephemeral && h.Healthy && h.Enabled && h.Weight == 5 && h.Metadata["canary"] == "true"
	})
	t.Logf("listed %v after Register", took)

	// A graceful stop (SIGTERM, ~5 s): Polaris drops the connection's
	// ephemeral instances (SIGKILL would leave them in its store).
	before := registered()
	if st := g.(discovery.StatusReporter).Status(); !st.Up || st.Reregistrations != 0 {
		t.Fatalf("status once registered: %+v; want up", st)
	}
	if err := srv.Stop(); err != nil {
		t.Logf("stopping the server: %v", err)
	}
	for start := time.Now(); g.(discovery.StatusReporter).Status().Up && time.Since(start) < serverWait; time.Sleep(20 * time.Millisecond) {
	}
	if st := g.(discovery.StatusReporter).Status(); st.Up || st.LastError == "" {
		t.Fatalf("status while the server is down: %+v; want down with an error", st)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	took = waitListed("registered again after the restart", func(h *nacostest.Host) bool { return h != nil })
	t.Logf("listed again %v after the server was back", took)
	if registered() == before {
		t.Fatal("listed, but the adapter did not register the instance again on its new client")
	}
	status := func() discovery.RegistrationStatus { return g.(discovery.StatusReporter).Status() }
	for start := time.Now(); !status().Up && time.Since(start) < serverWait; time.Sleep(20 * time.Millisecond) {
	}
	if st := status(); !st.Up || st.Reregistrations < 1 || st.LastError == "" {
		t.Fatalf("status after the restart: %+v; want up, a re-registration, and the outage's error", st)
	}

	if err := g.Update(context.Background(), discovery.Instance{Address: in.Address, Port: in.Port, Weight: 9, Healthy: true}); err != nil {
		t.Fatal(err)
	}
	waitListed("updated", func(h *nacostest.Host) bool { return h != nil && h.Weight == 9 && h.Metadata["canary"] == "" })
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitListed("deregistered", func(h *nacostest.Host) bool { return h == nil })
}

// Another client registered the same address and port before this
// adapter did (the previous Remora process of a restart that overlaps
// with this one). Polaris keys an instance by service, address and port,
// not by connection: when that client deregisters it (the old process's
// shutdown), or its connection closes (the server drops the instances the
// connection registered), the instance this adapter registered is gone
// with it, though this adapter's connection stays up. The adapter notices
// that the server no longer lists it and registers it again.
func TestServerRegistrationOutlivesAnotherClientOfItsAddress(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	for i, tc := range []struct {
		name string
		end  func(t *testing.T, old naming_client.INamingClient, p vo.RegisterInstanceParam)
	}{
		{"the other client deregisters", func(t *testing.T, old naming_client.INamingClient, p vo.RegisterInstanceParam) {
			ok, err := old.DeregisterInstance(vo.DeregisterInstanceParam{Ip: p.Ip, Port: p.Port, ServiceName: p.ServiceName, GroupName: p.GroupName, Ephemeral: true})
			if err != nil || !ok {
				t.Fatalf("deregistering with the other client: %v %v", ok, err)
			}
		}},
		{"the other connection closes", func(t *testing.T, old naming_client.INamingClient, _ vo.RegisterInstanceParam) {
			sdkguard.Do(old.CloseClient)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := discoverytest.UniqueService(t)
			port := 21081 + i
			listed := func() bool {
				for _, h := range srv.Instances(t, svc) {
					if h.IP == "127.0.0.1" && h.Port == port {
						return true
					}
				}
				return false
			}
			waitListed := func(what string, want bool) time.Duration {
				t.Helper()
				start := time.Now()
				for listed() != want {
					if time.Since(start) > serverWait {
						t.Fatalf("%s: not within %v", what, serverWait)
					}
					time.Sleep(20 * time.Millisecond)
				}
				return time.Since(start)
			}
			old := srv.NewClient(t)
			p := vo.RegisterInstanceParam{Ip: "127.0.0.1", Port: uint64(port), Weight: 1, Enable: true, Healthy: true,
				Metadata: map[string]string{}, ServiceName: svc, GroupName: nacostest.DefaultGroup, Ephemeral: true}
			if ok, err := nacostest.RegisterInstance(old, p); err != nil || !ok {
				t.Fatalf("registering with the other client: %v %v", ok, err)
			}
			waitListed("registered by the other client", true)

			g, err := reg.(discovery.Registrar).Register(context.Background(), svc, inst("app", port))
			if err != nil {
				t.Fatal(err)
			}
			status := func() discovery.RegistrationStatus { return g.(discovery.StatusReporter).Status() }
			if st := status(); !st.Up {
				t.Fatalf("status once registered: %+v", st)
			}
			time.Sleep(1500 * time.Millisecond) // both registrations made and shown (Polaris' one-second cache)

			tc.end(t, old, p)
			ended := time.Now()
			time.Sleep(1500 * time.Millisecond) // the removal shows in the server's answers
			waitListed("listed again", true)
			t.Logf("listed again %v after the other client's instance ended", time.Since(ended).Round(time.Millisecond))
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if !listed() {
					t.Fatal("listed again, then gone")
				}
			}
			if st := status(); !st.Up || st.Reregistrations != 1 {
				t.Fatalf("status: %+v; want up after one re-registration", st)
			}
			if err := g.Deregister(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitListed("deregistered", false)
		})
	}
}
