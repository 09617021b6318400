package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/dns/dnstest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
	"github.com/remora-mesh/remora/pkg/config"
)

// The registry matrix: every registry type against its real server
// (embedded etcd, a Consul agent with ACLs, a Nacos-protocol server, a
// kube-apiserver, dnsmasq) through every failure class that must not stop
// Remora from starting or serving: the registry down, unreachable by name
// or refusing the credentials at start; restarted with and without its
// data while Remora runs; down during a reload; down while Remora
// restarts (the on-disk snapshot); a blink. Each class checks that the
// start and the reload do not wait for the registry, /healthz and the
// static upstream serve at once, /readyz waits for the registry's
// upstream, the error shows in /upstreams, the node set never shrinks
// during an outage, and the set and the local application's
// registration converge once the registry is back.

// matrixRegistry is one registry type under test in TestRegistryMatrix:
// a real server of it, and what each failure class needs.
type matrixRegistry struct {
	// block is the registry's YAML (type and options) reaching the
	// server at addr with good or wrong credentials.
	block func(addr string, goodAuth bool) string
	addr  string // the server's address as block wants it
	// service is the upstream's service name in this registry.
	service string
	// down stops the server keeping its data; up starts it again.
	down, up func(t *testing.T)
	// fresh restarts the server without its data (nil: not tested), and
	// nodes puts the test's two nodes in it (again).
	fresh func(t *testing.T)
	nodes func(t *testing.T)
	// auth: the registry type has credentials the server checks, and
	// authErr is in the error /upstreams shows when they are wrong.
	auth    bool
	authErr string
	// registered reports whether the local application (local-app) is
	// listed by the server; nil when the type cannot register.
	registered func(t *testing.T) bool
	// enableAuth turns the server's authentication on (nil: on from the
	// start); the wrong-auth class runs last.
	enableAuth func(t *testing.T)
	// settle is how long a change may take to reach Remora.
	settle time.Duration
	static string // the static upstream's node, host:port
}

// unresolvable is a host name that never resolves (RFC 6761).
const unresolvable = "remora-matrix.invalid"

// config is a Remora with a static upstream (static-svc) and
// user-service in the registry under test (as block writes it), its
// snapshots in dataDir, registering the local application there when the
// type can.
func (m *matrixRegistry) config(block, dataDir string, appPort int, extra string) string {
	yml := fmt.Sprintf(`admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
data_dir: %q
registries:
  - {name: s, type: static, static: {services: {static-svc: [{id: static-1, address: %q}]}}}
  - name: reg
    %s
upstreams:
  - {name: static-svc, registry: s}
  - {name: user-service, registry: reg, service: %q, initial_sync_timeout: 300ms, canary: {disabled: true}%s}
`, dataDir, m.static, block, m.service, extra)
	if m.registered != nil {
		yml += fmt.Sprintf(`register:
  registry: reg
  service: local-app
  id: local-1
  address: 127.0.0.1
  port: %d
  health: {path: /health, interval: 100ms, healthy_threshold: 1}
  deregister_delay: 0s
`, appPort)
	}
	return yml
}

// startMatrixRemora starts Remora on yml and checks what must hold at
// once whatever the registry does: the start does not wait for it, the
// process is alive (/healthz) and the static upstream serves.
func startMatrixRemora(t *testing.T, yml string) *app {
	t.Helper()
	start := time.Now()
	cfg, err := config.Parse([]byte(yml), matrixDir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := startApp(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close() })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the start took %v: it waited for the registry", d)
	}
	resp, err := http.Get("http://" + a.addr("admin") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
	return a
}

// matrixDir is the config files' directory: the same for a start and the
// reloads after it, as for a file reloaded in place.
const matrixDir = "."

// reloadMatrix reloads a on yml.
func reloadMatrix(t *testing.T, a *app, yml string) error {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), matrixDir)
	if err != nil {
		t.Fatal(err)
	}
	return a.reload(cfg)
}

// waitingForRegistry checks a Remora whose registry does not let it in:
// not ready because of user-service, whose error /upstreams shows, and
// serving its static upstream.
func waitingForRegistry(t *testing.T, a *app) {
	t.Helper()
	eventually(t, 10*time.Second, "the registry's error shown for user-service", func() bool {
		st := upstreamStatus(t, a)
		return !st.Synced && st.Error != ""
	})
	t.Logf("/upstreams error: %s", upstreamStatus(t, a).Error)
	if code, body := readyz(t, a); code != 503 || !strings.Contains(body, "user-service") {
		t.Fatalf("/readyz without the registry: %d %s", code, body)
	}
	eventually(t, 3*time.Second, "the static upstream served while the registry is out of reach", func() bool {
		return staticStatus(t, a) == 200
	})
}

func staticStatus(t *testing.T, a *app) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
	req.Host = "static-svc"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// converged waits until user-service has both nodes, fresh, Remora is
// ready and the local application is listed by the registry.
func (m *matrixRegistry) converged(t *testing.T, a *app, within time.Duration) {
	t.Helper()
	took := eventually(t, within, "user-service synced with both nodes", func() bool {
		st := upstreamStatus(t, a)
		return st.Synced && !st.Stale && st.Available == 2
	})
	t.Logf("synced %v later", took.Round(time.Millisecond))
	if code, body := readyz(t, a); code != 200 {
		t.Fatalf("/readyz once synced: %d %s", code, body)
	}
	if m.registered != nil {
		took := eventually(t, within, "the local application listed by the registry", func() bool { return m.registered(t) })
		t.Logf("registered %v later", took.Round(time.Millisecond))
	}
}

// floor records the fewest nodes user-service had between start and
// stop, sampled every few milliseconds.
type floor struct {
	min  atomic.Int64
	at   string // the snapshot's state when min was first seen
	stop chan struct{}
	wg   sync.WaitGroup
}

func watchFloor(a *app) *floor {
	f := &floor{stop: make(chan struct{})}
	f.min.Store(1 << 30)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			s := a.Table().Lookup("user-service").Snapshot()
			if n := int64(s.Available); n < f.min.Load() {
				f.min.Store(n)
				f.at = fmt.Sprintf("version %d, synced %v, restored %v, error %v", s.Version, s.Synced, s.Restored, s.Err)
			}
			select {
			case <-f.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return f
}

func (f *floor) check(t *testing.T, want int64) {
	t.Helper()
	close(f.stop)
	f.wg.Wait()
	if n := f.min.Load(); n < want {
		t.Errorf("user-service fell to %d nodes during the outage (%s); want %d throughout", n, f.at, want)
	}
}

// runMatrix runs every failure class on m, one Remora each, in order;
// each leaves the server up.
func runMatrix(t *testing.T, m *matrixRegistry) {
	app := startLocalApp(t, "local-app")
	m.static = startBackend(t, "static").srv.Listener.Addr().String()
	good := m.block(m.addr, true)
	cfg := func(block, dir, extra string) string { return m.config(block, dir, app.port, extra) }
	m.nodes(t)
	// Each class starts with the server up, whatever the last one left.
	down, up := m.down, m.up
	isDown := false
	m.down = func(t *testing.T) { isDown = true; down(t) }
	m.up = func(t *testing.T) { up(t); isDown = false }
	run := func(name string, f func(t *testing.T)) {
		if isDown {
			m.up(t)
		}
		t.Run(name, f)
	}

	run("down-at-start", func(t *testing.T) {
		m.down(t)
		a := startMatrixRemora(t, cfg(good, t.TempDir(), ""))
		waitingForRegistry(t, a)
		m.up(t)
		m.converged(t, a, m.settle)
	})
	run("unresolvable-at-start", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(m.addr)
		dir := t.TempDir()
		a := startMatrixRemora(t, cfg(m.block(net.JoinHostPort(unresolvable, port), true), dir, ""))
		waitingForRegistry(t, a)
		if err := reloadMatrix(t, a, cfg(good, dir, "")); err != nil {
			t.Fatalf("reload to the right address: %v", err)
		}
		m.converged(t, a, m.settle)
	})
	run("restart-with-data", func(t *testing.T) {
		a := startMatrixRemora(t, cfg(good, t.TempDir(), ""))
		m.converged(t, a, m.settle)
		f := watchFloor(a)
		m.down(t)
		eventually(t, 10*time.Second, "marked stale", func() bool { return upstreamStatus(t, a).Stale })
		m.up(t)
		m.converged(t, a, m.settle)
		f.check(t, 2)
	})
	if m.fresh != nil {
		run("restart-without-data", func(t *testing.T) {
			a := startMatrixRemora(t, cfg(good, t.TempDir(), ""))
			m.converged(t, a, m.settle)
			m.fresh(t)
			m.nodes(t)
			m.converged(t, a, m.settle)
		})
	}
	run("down-during-reload", func(t *testing.T) {
		dir := t.TempDir()
		a := startMatrixRemora(t, cfg(good, dir, ""))
		m.converged(t, a, m.settle)
		f := watchFloor(a)
		m.down(t)
		eventually(t, 10*time.Second, "marked stale", func() bool { return upstreamStatus(t, a).Stale })
		start := time.Now()
		if err := reloadMatrix(t, a, cfg(good, dir, ", balancer: least_request")); err != nil {
			t.Fatalf("reload while the registry is down: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the reload took %v: it waited for the registry", d)
		}
		// (Right after the reload the restarted upstream may show fresh
		// for an instant: a Nacos watcher joining a subscription that is
		// down gets its set, then its error.)
		eventually(t, time.Second, "still stale after the reload", func() bool { return upstreamStatus(t, a).Stale })
		if st := upstreamStatus(t, a); st.Available != 2 {
			t.Fatalf("after the reload: available=%d", st.Available)
		}
		m.up(t)
		m.converged(t, a, m.settle)
		f.check(t, 2)
	})
	run("remora-restart-while-down", func(t *testing.T) {
		dir := t.TempDir()
		first := startMatrixRemora(t, cfg(good, dir, ""))
		m.converged(t, first, m.settle)
		eventually(t, 5*time.Second, "the snapshot written", func() bool {
			b, err := os.ReadFile(snapshotFile(first.config(), "user-service"))
			return err == nil && len(b) > 0
		})
		first.close()
		m.down(t)
		// The SDK's disk cache of a Nacos registry, which the adapter
		// serves until the server answers: said when the class fails.
		files, _ := filepath.Glob(filepath.Join(dir, "nacos", "*", "naming", "*", "*user-service"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the disk cache at the start: %s: %s, %v", filepath.Base(f), b, err)
				}
			})
		}
		a := startMatrixRemora(t, cfg(good, dir, ""))
		took := eventually(t, 3*time.Second, "serving the snapshot", func() bool {
			st := upstreamStatus(t, a)
			return st.Available == 2 && st.Stale
		})
		t.Logf("serving the snapshot %v after the start", took.Round(time.Millisecond))
		if code, body := readyz(t, a); code != 200 {
			t.Fatalf("/readyz on the snapshot: %d %s", code, body)
		}
		f := watchFloor(a)
		m.up(t)
		m.converged(t, a, m.settle)
		f.check(t, 2)
	})
	run("blink", func(t *testing.T) {
		a := startMatrixRemora(t, cfg(good, t.TempDir(), ""))
		m.converged(t, a, m.settle)
		f := watchFloor(a)
		m.down(t)
		time.Sleep(300 * time.Millisecond)
		m.up(t)
		m.converged(t, a, m.settle)
		f.check(t, 2)
	})
	if m.auth {
		run("wrong-auth-at-start", func(t *testing.T) {
			if m.enableAuth != nil {
				m.enableAuth(t)
			}
			dir := t.TempDir()
			a := startMatrixRemora(t, cfg(m.block(m.addr, false), dir, ""))
			waitingForRegistry(t, a)
			eventually(t, 10*time.Second, "the credentials' error shown: "+m.authErr, func() bool {
				return strings.Contains(upstreamStatus(t, a).Error, m.authErr)
			})
			if err := reloadMatrix(t, a, cfg(good, dir, "")); err != nil {
				t.Fatalf("reload with the right credentials: %v", err)
			}
			m.converged(t, a, m.settle)
		})
	}
}

func TestRegistryMatrixEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	m := &matrixRegistry{
		addr: srv.Endpoint(), service: "user-service", auth: true, authErr: `authenticating as user "remora"`, settle: 5 * time.Second,
		block: func(addr string, good bool) string {
			pw := etcdPassword
			if !good {
				pw = "wrong"
			}
			return fmt.Sprintf(`type: etcd
    etcd: {endpoints: [%q], username: %s, password: %q, dial_timeout: 1s}`, addr, etcdUser, pw)
		},
		down:       func(t *testing.T) { srv.Stop() },
		up:         func(t *testing.T) { srv.Up() },
		fresh:      func(t *testing.T) { srv.RestartFresh() },
		enableAuth: func(t *testing.T) { srv.EnableAuth("root-pw", etcdUser, etcdPassword, "/") },
		nodes: func(t *testing.T) {
			srv.Put("/services/user-service/b1", b1.value(""))
			srv.Put("/services/user-service/b2", b2.value(""))
		},
		registered: func(t *testing.T) bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			resp, err := srv.Client().Get(ctx, "/services/local-app/local-1")
			return err == nil && len(resp.Kvs) == 1
		},
	}
	runMatrix(t, m)
}

func TestRegistryMatrixConsul(t *testing.T) {
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "matrix", ACL: true})
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	m := &matrixRegistry{
		addr: agent.Addr(), service: "user-service", auth: true, authErr: "permission denied", settle: 10 * time.Second,
		block: func(addr string, good bool) string {
			tok := agent.ManagementToken()
			if !good {
				tok = "00000000-0000-0000-0000-000000000000"
			}
			return fmt.Sprintf(`type: consul
    consul: {address: %q, token: %q, wait_time: 2s}`, addr, tok)
		},
		down:  func(t *testing.T) { agent.Stop() },
		up:    func(t *testing.T) { agent.Restart(t) },
		fresh: func(t *testing.T) { agent.RestartFresh(t) },
		nodes: func(t *testing.T) {
			registerPlain(t, agent, b1)
			registerPlain(t, agent, b2)
		},
		registered: func(t *testing.T) bool {
			entries, _, err := agent.Client(t).Health().Service("local-app", "", true, nil)
			return err == nil && len(entries) == 1
		},
	}
	runMatrix(t, m)
}

func TestRegistryMatrixNacos(t *testing.T) {
	srv := nacostest.Start(t, nacostest.Config{Name: "matrix"})
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	m := &matrixRegistry{
		addr: srv.Addr(), service: "user-service", settle: 10 * time.Second,
		block: func(addr string, good bool) string {
			return fmt.Sprintf(`type: nacos
    nacos: {servers: [%q]}`, addr)
		},
		down: func(t *testing.T) { nacosDown(srv) },
		up: func(t *testing.T) {
			if err := srv.Resume(); err != nil {
				t.Fatal(err)
			}
		},
		nodes: func(t *testing.T) {
			srv.Register(t, "user-service", nacosInstance(b1, nil))
			srv.Register(t, "user-service", nacosInstance(b2, nil))
		},
		registered: func(t *testing.T) bool {
			for _, h := range srv.Instances(t, "local-app") {
				if h.IP == "127.0.0.1" && h.Healthy {
					return true
				}
			}
			return false
		},
	}
	runMatrix(t, m)
}

func TestRegistryMatrixKubernetes(t *testing.T) {
	k := startKube(t, "matrix")
	bs, port := kubeBackends(t, "b", 2)
	wrong, err := k.srv.Kubeconfig(t.TempDir(), "wrong-token", k.ns)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfigs := map[string]string{}
	m := &matrixRegistry{
		addr: k.srv.Addr(), service: k.ns + "/user-service:http", auth: true, authErr: "Unauthorized", settle: 15 * time.Second,
		block: func(addr string, good bool) string {
			kc := k.kubeconfig
			if !good {
				kc = wrong
			}
			if addr != k.srv.Addr() {
				// Another server: a copy of the kubeconfig naming it.
				if kubeconfigs[addr] == "" {
					b, err := os.ReadFile(kc)
					if err != nil {
						t.Fatal(err)
					}
					kubeconfigs[addr] = t.TempDir() + "/kubeconfig"
					if err := os.WriteFile(kubeconfigs[addr], []byte(strings.ReplaceAll(string(b), k.srv.Addr(), addr)), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				kc = kubeconfigs[addr]
			}
			return fmt.Sprintf(`type: kubernetes
    kubernetes: {kubeconfig: %q}`, kc)
		},
		down:  func(t *testing.T) { k.srv.Stop() },
		up:    func(t *testing.T) { k.srv.Up(t) },
		nodes: func(t *testing.T) { k.slice(t, "user-service", "user-service-abc", port, bs, nil) },
	}
	runMatrix(t, m)
}

func TestRegistryMatrixDNS(t *testing.T) {
	srv := dnstest.Start(t)
	bs, port := kubeBackends(t, "b", 2)
	srv.Change(func(r *dnstest.Records) {
		for _, b := range bs {
			target := b.name + "." + dnstest.Zone
			r.Hosts[target] = []string{b.ip()}
			r.SRV["_http._tcp.web."+dnstest.Zone] = append(r.SRV["_http._tcp.web."+dnstest.Zone], dnstest.SRV{Target: target, Port: port, Weight: 1})
		}
	})
	m := &matrixRegistry{
		addr: srv.Addr(), service: "_http._tcp.web." + dnstest.Zone, settle: 10 * time.Second,
		block: func(addr string, good bool) string {
			return fmt.Sprintf(`type: dns
    dns: {resolver: %q, timeout: 500ms}`, addr)
		},
		down:  func(t *testing.T) { srv.Close() },
		up:    func(t *testing.T) { srv.Restart() },
		nodes: func(t *testing.T) {},
	}
	runMatrix(t, m)
}

// nacosDown stops the server gracefully (SIGTERM; Polaris takes some
// seconds). With REMORA_MATRIX_NACOS_KILL set it kills it instead, so that
// it is back within a second: nacos-sdk-go then reconnects the client
// Remora is about to close, and its reconnect has a data race that -race
// reports (RpcClient.reconnect writes currentConnection while its event
// goroutine reads it); a known defect, left out of the default run.
func nacosDown(srv *nacostest.Server) {
	if os.Getenv("REMORA_MATRIX_NACOS_KILL") != "" {
		srv.Kill()
		return
	}
	if err := srv.Stop(); err != nil {
		srv.Kill()
	}
}
