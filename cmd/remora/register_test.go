package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
	"github.com/remora-mesh/remora/pkg/config"
)

// localApp is the application beside a Remora: it serves requests and a
// /health whose answer the test controls.
type localApp struct {
	srv     *httptest.Server
	healthy atomic.Bool
	port    int
}

func startLocalApp(t *testing.T, name string) *localApp {
	a := &localApp{}
	a.healthy.Store(true)
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && !a.healthy.Load() {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("X-Backend", name)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(a.srv.Close)
	a.port = a.srv.Listener.Addr().(*net.TCPAddr).Port
	return a
}

func registerBlock(port int) string {
	return fmt.Sprintf(`register:
  service: user-service
  id: app-1
  address: 127.0.0.1
  port: %d
  metadata: {canary: "true", version: v2}
  health: {path: /health, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 2}
  deregister_delay: 200ms
`, port)
}

// registeredIn polls a registry view until present(...) holds.
func TestRegisterInEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	app := startLocalApp(t, "canary-app")
	a := startRemora(t, etcdConfig(srv.Endpoint())+registerBlock(app.port))
	key := "/services/user-service/app-1"
	present := func() string {
		resp, err := srv.Client().Get(context.Background(), key)
		if err != nil || len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}
	took := eventually(t, 2*time.Second, "registered with its labels", func() bool {
		v := present()
		return strings.Contains(v, `"canary":"true"`) && strings.Contains(v, `"version":"v2"`)
	})
	t.Logf("registered in %v", took)
	// Remora consumes its own service too: the registered app is a node.
	eventually(t, 2*time.Second, "seen by the watch", func() bool { return available(a) == 1 })

	app.healthy.Store(false)
	eventually(t, 2*time.Second, "gone while unhealthy", func() bool { return present() == "" })
	app.healthy.Store(true)
	eventually(t, 2*time.Second, "back when healthy", func() bool { return present() != "" })

	// Shutdown: deregistered first, while the listeners still accept.
	a.deregister(context.Background(), 0)
	if present() != "" {
		t.Fatal("still registered after the shutdown's first step")
	}
	if c, err := net.DialTimeout("tcp", a.addr("outbound"), time.Second); err != nil {
		t.Fatalf("listeners closed before deregistration finished: %v", err)
	} else {
		c.Close()
	}
}

func TestRegisterInConsul(t *testing.T) {
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "register"})
	app := startLocalApp(t, "canary-app")
	a := startRemora(t, consulConfig(agent.Addr(), ", wait_time: 2s", "")+registerBlock(app.port))
	took := eventually(t, 2*time.Second, "registered and passing, with labels", func() bool {
		st := upstreamStatus(t, a)
		return len(st.Nodes) == 1 && st.Nodes[0].Metadata["canary"] == "true" && st.Nodes[0].Metadata["version"] == "v2"
	})
	t.Logf("visible through Consul in %v", took)
	app.healthy.Store(false)
	eventually(t, 2*time.Second, "gone while unhealthy", func() bool { return len(upstreamStatus(t, a).Nodes) == 0 })
	app.healthy.Store(true)
	eventually(t, 2*time.Second, "back", func() bool { return len(upstreamStatus(t, a).Nodes) == 1 })
	a.deregister(context.Background(), 0)
	eventually(t, 2*time.Second, "gone after deregistration", func() bool { return len(upstreamStatus(t, a).Nodes) == 0 })
}

// nacosConfig is a Remora with one Nacos registry on addr and the upstream
// user-service.
func nacosConfig(addr string) string {
	return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: nacos, type: nacos, nacos: {servers: [%q]}}]
upstreams:
  - name: user-service
`, addr)
}

// Registration in a Nacos-protocol server (Polaris) as an ephemeral
// instance. Presence is read from the server itself (its HTTP instance
// list), not through a push, which Polaris sends on a one-second tick.
func TestRegisterInNacos(t *testing.T) {
	srv := nacostest.Start(t, nacostest.Config{Name: "register"})
	app := startLocalApp(t, "canary-app")
	a := startRemora(t, nacosConfig(srv.Addr())+registerBlock(app.port))
	present := func() *nacostest.Host {
		for _, h := range srv.Instances(t, "user-service") {
			if h.IP == "127.0.0.1" && h.Port == app.port {
				return &h
			}
		}
		return nil
	}
	took := eventually(t, 2*time.Second, "registered with its labels", func() bool {
		h := present()
		return h != nil && h.Metadata["canary"] == "true" && h.Metadata["version"] == "v2" && h.Healthy && h.Enabled && h.Ephemeral
	})
	t.Logf("registered in %v", took)
	// Remora consumes its own service too: the registered app is a node
	// (through Polaris' push, on its one-second tick).
	took = eventually(t, 3*time.Second, "seen by the watch", func() bool { return available(a) == 1 })
	t.Logf("pushed to the watch in a further %v", took)

	app.healthy.Store(false)
	took = eventually(t, 2*time.Second, "gone while unhealthy", func() bool { return present() == nil })
	t.Logf("gone %v after /health started failing (unhealthy_threshold 2, interval 100ms)", took)
	app.healthy.Store(true)
	took = eventually(t, 2*time.Second, "back when healthy", func() bool { return present() != nil })
	t.Logf("back in %v", took)

	// Shutdown: deregistered first, while the listeners still accept.
	// Polaris answers from a cache it refreshes on its one-second tick, so
	// an accepted deregistration shows there up to a second later; the
	// shutdown's first step includes deregister_delay, whose default (2 s)
	// covers that. That step runs here with the default delay, and the
	// instance must be gone from the server's answers before it ends.
	done := make(chan struct{})
	go func() { defer close(done); a.deregister(context.Background(), 2*time.Second) }()
	took = eventually(t, 2*time.Second, "gone during the shutdown's first step", func() bool { return present() == nil })
	select {
	case <-done:
		t.Fatal("the shutdown's first step ended before the server stopped listing the instance")
	default:
	}
	<-done
	t.Logf("gone from the server's answers %v into the shutdown (deregister_delay 2s)", took)
	if c, err := net.DialTimeout("tcp", a.addr("outbound"), time.Second); err != nil {
		t.Fatalf("listeners closed before deregistration finished: %v", err)
	} else {
		c.Close()
	}
}

// Two Remoras: one beside a canary application registers it (canary=true);
// another beside a client splits traffic to it per its canary rule, with no
// manual registry step.
func TestTwoRemorasCanaryEndToEnd(t *testing.T) {
	srv := etcdtest.Start(t)
	stable := startBackend(t, "stable")
	srv.Put("/services/user-service/stable-1", stable.value(""))
	canaryApp := startLocalApp(t, "canary-app")
	startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: main, type: etcd, etcd: {endpoints: [%q]}}]
`, srv.Endpoint())+registerBlock(canaryApp.port))
	client := startRemora(t, etcdConfig(srv.Endpoint())+"    canary: {weight: 50, header: x-canary}\n")
	eventually(t, 3*time.Second, "the client sees both", func() bool { return available(client) == 2 })
	counts := send(t, client, 200)
	if counts["canary-app"] < 60 || counts["stable"] < 60 {
		t.Fatalf("50%% split over 200 requests: %v", counts)
	}
}

// TestDrainWithdrawsRegistration: POST /drain takes the application out of
// the registry while it stays healthy, a reload while drained does not put
// it back, and POST /undrain does.
func TestDrainWithdrawsRegistration(t *testing.T) {
	srv := etcdtest.Start(t)
	app := startLocalApp(t, "app")
	yml := etcdConfig(srv.Endpoint()) + registerBlock(app.port)
	a := startRemora(t, yml)
	present := func(id string) bool {
		resp, err := srv.Client().Get(context.Background(), "/services/user-service/"+id)
		return err == nil && len(resp.Kvs) == 1
	}
	admin := func(method, path string) (int, string) {
		code, _, body := adminCall(t, a, method, path, "")
		return code, body
	}
	eventually(t, 2*time.Second, "registered", func() bool { return present("app-1") })

	if code, body := admin("POST", "/drain"); code != 200 {
		t.Fatalf("POST /drain: %d %s", code, body)
	}
	eventually(t, 2*time.Second, "withdrawn by the drain", func() bool { return !present("app-1") })
	eventually(t, 2*time.Second, "GET /register shows the withdrawal", func() bool {
		_, body := admin("GET", "/register")
		return strings.Contains(body, `"withdrawn": true`) && strings.Contains(body, `"registered": false`)
	}) // the key goes before the agent records it
	time.Sleep(300 * time.Millisecond) // three healthy checks
	if present("app-1") {
		t.Fatal("registered again while drained")
	}

	// A reload that replaces the registration (a new id) keeps it out.
	cfg, err := config.Parse([]byte(strings.Replace(yml, "id: app-1", "id: app-2", 1)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.reload(cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if present("app-1") || present("app-2") {
		t.Fatal("a reload while drained registered the application")
	}

	if code, body := admin("POST", "/undrain"); code != 200 {
		t.Fatalf("POST /undrain: %d %s", code, body)
	}
	eventually(t, 2*time.Second, "registered again after undrain", func() bool { return present("app-2") })
	eventually(t, 2*time.Second, "GET /register shows the registration", func() bool {
		_, body := admin("GET", "/register")
		return strings.Contains(body, `"withdrawn": false`) && strings.Contains(body, `"registered": true`)
	})
}
