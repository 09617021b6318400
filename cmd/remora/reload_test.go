package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/remora-mesh/remora/pkg/config"
	"github.com/remora-mesh/remora/pkg/node"
)

// TestMain lets a test run this binary's main in a child process: with
// REMORA_TEST_MAIN set, the process is remora itself, its arguments
// separated by newlines in that variable.
func TestMain(m *testing.M) {
	if args := os.Getenv("REMORA_TEST_MAIN"); args != "" {
		os.Exit(run(strings.Split(args, "\n"), os.Stdout, os.Stderr))
	}
	code := m.Run()
	if code == 0 {
		// Ignored: the test clients' idle keep-alive connections, and
		// nacos-sdk-go's UDP push receiver, which is never closed (an SDK
		// bug).
		if err := goleak.Find(goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreAnyFunction("github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client/naming_http.(*PushReceiver).handleClient")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func reloadConfig(backends []string, extra string) string {
	var b strings.Builder
	b.WriteString(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - name: s
    type: static
    static:
      services:
        user-service:
`)
	for i, addr := range backends {
		fmt.Fprintf(&b, "          - {id: b%d, address: %q}\n", i+1, addr)
	}
	b.WriteString(`        order-service: [{id: o1, address: "` + backends[0] + `"}]
upstreams:
  - name: user-service
    health:
      passive: {consecutive_gateway_failure: 2, base_ejection_time: 1h, max_ejection_percent: 50}
` + extra)
	return b.String()
}

func mustParse(t *testing.T, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Reload under load: no request fails, an ejected node stays ejected, an
// upstream and its dedicated port come and go, a bad config changes nothing.
func TestReloadUnderLoadKeepsNodeState(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	var sick atomic.Bool
	sick.Store(true)
	b3 := &demoBackend{name: "b3"}
	b3srv := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b3.hits.Add(1)
		if sick.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Backend", "b3")
	})}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go b3srv.Serve(ln)
	defer b3srv.Close()
	addrs := []string{b1.srv.Listener.Addr().String(), b2.srv.Listener.Addr().String(), ln.Addr().String()}

	a := startRemora(t, reloadConfig(addrs, ""))
	eventually(t, 5*time.Second, "three nodes", func() bool { return available(a) == 3 })
	send(t, a, 12) // b3 answers 503 twice in a row: ejected (retries hide it)
	eventually(t, 2*time.Second, "b3 ejected", func() bool { return available(a) == 2 })
	ejectedUntil := byNode(a, "b3").Stats.Health.EjectedUntil()

	// Continuous load from 16 workers while the config changes.
	load := startLoad(t, a, 16)
	time.Sleep(100 * time.Millisecond)

	// 1. Another balancer, an added upstream with its own port.
	orders := freeAddr(t)
	if err := a.reload(mustParse(t, reloadConfig(addrs, `    balancer: random
  - {name: orders, service: order-service, listen: "`+orders+`"}
`))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	resp, err := http.Get("http://" + orders + "/")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b1" {
		t.Fatalf("the added upstream's port: %v %v", resp, err)
	}
	resp.Body.Close()
	// 2. A config that cannot be applied (its new port is taken) is
	// rejected whole: orders keeps its port, nothing else changes.
	bad := mustParse(t, reloadConfig(addrs, `  - {name: orders, service: order-service, listen: "`+orders+`"}
  - {name: taken, service: order-service, listen: "`+addrs[0]+`"}
`))
	if err := a.reload(bad); err == nil || !strings.Contains(err.Error(), "listener upstream taken") {
		t.Fatalf("a config whose port is taken: %v", err)
	}
	if a.Table().Lookup("taken") != nil || a.Table().Lookup("orders") == nil {
		t.Fatal("a rejected config changed the routing table")
	}
	// 3. Back without orders: its port closes.
	if err := a.reload(mustParse(t, reloadConfig(addrs, ""))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	load.finish(t)
	if n := load.ok.Load(); n < 100 {
		t.Fatalf("only %d requests during the reloads", n)
	}
	n3 := byNode(a, "b3")
	if !n3.Stats.Health.Ejected() || !n3.Stats.Health.EjectedUntil().Equal(ejectedUntil) {
		t.Fatal("the reload reset b3's ejection")
	}
	if n1 := byNode(a, "b1"); n1.Stats.Requests.Load() < 10 {
		t.Fatalf("b1's request counter was reset by the reloads: %d", n1.Stats.Requests.Load())
	}
	if _, err := net.DialTimeout("tcp", orders, 200*time.Millisecond); err == nil {
		t.Fatal("the removed upstream's port still accepts")
	}
}

func byNode(a *app, id string) *node.Node {
	for _, n := range a.Table().Lookup("user-service").Snapshot().Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// handedOut holds every address freeAddr has returned in this test
// process: the kernel may give a port just closed to the next listener on
// port 0, so two calls in a row (an admin and a listener address) could
// name the same port, which validate refuses.
var handedOut sync.Map

// freeAddr returns a loopback address that was free a moment ago and that
// no earlier call returned.
func freeAddr(t *testing.T) string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, taken := handedOut.LoadOrStore(addr, true); !taken {
			return addr
		}
	}
}

// The real process: the file changes → reload; SIGHUP with a bad file →
// rejected, still serving; SIGTERM under a slow request → the request
// completes, readiness drops, exit 0.
func TestProcessReloadAndGracefulStop(t *testing.T) {
	b := startBackend(t, "b1")
	dir := t.TempDir()
	path := filepath.Join(dir, "remora.yaml")
	adminAddr, outAddr := freeAddr(t), freeAddr(t)
	write := func(extra string) {
		cfg := fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_timeout: 5s
drain_delay: 300ms
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
  - name: users
%s`, adminAddr, outAddr, b.srv.Listener.Addr().String(), extra)
		if err := os.WriteFile(path+".tmp", []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "REMORA_TEST_MAIN="+strings.Join([]string{"run", "-c", path, "--log-format", "json"}, "\n"))
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("remora's log:\n%s", logs.String())
		}
	}()
	get := func(host, path string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+outAddr+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	eventually(t, 10*time.Second, "remora serving", func() bool { code, _ := get("users", "/"); return code == 200 })

	// The file changes: a new upstream appears without a signal.
	write("  - {name: orders, service: users}\n")
	eventually(t, 5*time.Second, "orders routable after the file changed", func() bool { code, _ := get("orders", "/"); return code == 200 })

	// SIGHUP with a broken file: rejected, still serving.
	os.WriteFile(path, []byte("upstreams: [{name: x, balancer: nope}]\n"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the rejection logged", func() bool { return strings.Contains(logs.String(), "configuration rejected") })
	if code, err := get("orders", "/"); code != 200 {
		t.Fatalf("after a rejected reload: %d %v", code, err)
	}

	// SIGTERM while a slow request is in flight.
	slow := make(chan int, 1)
	go func() { code, _ := get("users", "/?sleep=700ms"); slow <- code }()
	hits := b.hits.Load()
	eventually(t, 2*time.Second, "slow request in flight", func() bool { return b.hits.Load() > hits })
	cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 2*time.Second, "readiness off while draining", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			t.Fatalf("the admin listener closed before readiness turned false: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	// Still serving new requests during the propagation delay.
	if code, err := get("users", "/"); code != 200 {
		t.Fatalf("a request during drain_delay: %d %v", code, err)
	}
	if code := <-slow; code != 200 {
		t.Fatalf("the in-flight request got %d during shutdown", code)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("remora exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("remora did not exit after SIGTERM")
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A change to the config file made while Remora starts (after the file
// was loaded, before the first poll) is reloaded: the poll compares with
// the file as it was loaded, not as it is once serving.
func TestConfigChangeDuringStartIsReloaded(t *testing.T) {
	b := startBackend(t, "b1")
	path := filepath.Join(t.TempDir(), "remora.yaml")
	outAddr := freeAddr(t)
	write := func(extra string) {
		t.Helper()
		cfg := fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: %q}]
drain_timeout: 1s
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
  - name: users
%s`, outAddr, b.srv.Listener.Addr().String(), extra)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	watch := newFileWatch(path)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	write("  - {name: orders, service: users}\n") // while Remora starts
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveUntil(ctx, path, watch, nil, cfg, testLogger()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 5*time.Second, "orders routable", func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+outAddr+"/", nil)
		req.Host = "orders"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// A drain asked for on the admin API is no shutdown: a reload meanwhile
// applies (an undrain then serves the current config); once shutting
// down, a reload is refused.
func TestReloadWhileDrained(t *testing.T) {
	const base = "admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\nregistries: [{name: s, type: static, static: {services: {users: [{address: \"127.0.0.1:1\"}]}}}]\nupstreams:\n  - name: users\n"
	a := startRemora(t, base)
	a.Drain()
	if err := a.reload(mustParse(t, base+"  - {name: orders, service: users}\n")); err != nil {
		t.Fatalf("a reload while drained: %v", err)
	}
	if a.Table().Lookup("orders") == nil {
		t.Fatal("the reload while drained did not apply")
	}
	a.markStopping()
	if err := a.reload(mustParse(t, base)); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("a reload while shutting down: %v; want it refused", err)
	}
}

// A reload that fails (a port it binds is taken) changes nothing, not
// even the routes of a dedicated port it would have moved.
func TestRejectedReloadKeepsDedicatedPortRoutes(t *testing.T) {
	users, orders := startBackend(t, "users"), startBackend(t, "orders")
	p1, p2 := freeAddr(t), freeAddr(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := func(extra string) string {
		return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}], orders: [{address: %q}]}}}]
upstreams:
%s`, users.srv.Listener.Addr().String(), orders.srv.Listener.Addr().String(), extra)
	}
	a := startRemora(t, cfg(fmt.Sprintf("  - {name: users, listen: %q}\n", p1)))
	get := func() string {
		t.Helper()
		resp, err := http.Get("http://" + p1 + "/x")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	if got := get(); got != "200 users" {
		t.Fatalf("before the reload: %s", got)
	}
	bad := mustParse(t, cfg(fmt.Sprintf(`  - name: users
    listen: %q
    routes: [{match: {path_prefix: /x}, upstream: orders}]
  - {name: orders, listen: %q}
`, p2, taken.Addr().String())))
	if err := a.reload(bad); err == nil {
		t.Fatal("a reload binding a taken port succeeded")
	}
	if got := get(); got != "200 users" {
		t.Fatalf("after the rejected reload, the old port answers %s; want users, as before", got)
	}
}

// A reload may give a dedicated port's address to another listener: the
// same upstream with another protocol, or another upstream (a rename).
// The new listener takes the socket over from the one that drains: the
// reload succeeds, and no connection is refused meanwhile.
func TestReloadHandsAPortOver(t *testing.T) {
	users := startBackend(t, "users")
	port := freeAddr(t)
	cfg := func(upstreams string) *config.Config {
		return mustParse(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
%s`, users.srv.Listener.Addr().String(), upstreams))
	}
	get := func() string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + port + "/x")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
  - {name: users, listen: %q}
`, users.srv.Listener.Addr().String(), port))
	if got := get(); got != "200 users" {
		t.Fatalf("before the reloads: %s", got)
	}

	// Requests all through the reloads: none may be refused.
	stop := make(chan struct{})
	failed := make(chan string, 1)
	go func() {
		defer close(failed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", port, time.Second)
			if err != nil {
				failed <- err.Error()
				return
			}
			c.Close()
		}
	}()
	for i, step := range []struct{ upstreams, want string }{
		{fmt.Sprintf("  - {name: users, listen: %q, protocol: tcp}\n", port), "tcp"},
		{fmt.Sprintf("  - {name: people, service: users, listen: %q, protocol: tcp}\n", port), "tcp"},
		{fmt.Sprintf("  - {name: users, listen: %q}\n", port), "200 users"},
	} {
		if err := a.reload(cfg(step.upstreams)); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		got := get()
		if step.want == "tcp" {
			// The relay passes the request to the backend as it is.
			if got != "200 users" {
				t.Fatalf("after reload %d (tcp): %s", i+1, got)
			}
			if s := a.config().Upstreams[0]; s.Protocol != "tcp" {
				t.Fatalf("reload %d: protocol %q", i+1, s.Protocol)
			}
			continue
		}
		if got != step.want {
			t.Fatalf("after reload %d: %s; want %s", i+1, got, step.want)
		}
	}
	close(stop)
	if err, bad := <-failed; bad {
		t.Fatalf("a connection was refused during the reloads: %s", err)
	}
}

// Once every upstream had nodes, a reload that adds one whose registry
// does not answer leaves /readyz at 200: the new upstream warms up (it is
// listed in waiting_for) without taking the pod out of its Services.
// Draining still turns readiness off.
func TestReloadAddingAnUpstreamKeepsReadiness(t *testing.T) {
	b := startBackend(t, "b")
	base := fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - {name: s, type: static, static: {services: {user-service: [{address: %q}]}}}
  - {name: down, type: consul, consul: {address: %q}}
upstreams:
  - {name: user-service, registry: s}
`, b.srv.Listener.Addr().String(), freeAddr(t)) // nothing listens there
	a := startRemora(t, base)
	eventually(t, 5*time.Second, "ready at start", func() bool { return readyzCode(t, a) == 200 })
	eventually(t, 2*time.Second, "the start recorded", a.Started)
	if err := a.reload(mustParse(t, base+"  - {name: other, registry: down}\n")); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		code, body := readyz(t, a)
		if code != 200 || !strings.Contains(body, `"other"`) {
			t.Fatalf("/readyz after the reload: %d %s; want 200, waiting for other", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.Drain()
	if code := readyzCode(t, a); code != 503 {
		t.Fatalf("/readyz while draining: %d", code)
	}
}
