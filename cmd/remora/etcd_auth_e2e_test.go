package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/pkg/admin"
)

const (
	etcdUser     = "remora"
	etcdPassword = "s3cret-pw"
)

// authEtcdConfig is a Remora with a static upstream (static-svc, on node
// static) and an upstream (user-service) in an etcd that needs user remora
// with password, where it also registers the local application on appPort.
func authEtcdConfig(adminAddr, outAddr, static, endpoint, password string, appPort int) string {
	return fmt.Sprintf(`admin: {address: %q}
listeners: [{name: outbound, address: %q}]
registries:
  - {name: s, type: static, static: {services: {static-svc: [{id: static-1, address: %q}]}}}
  - {name: main, type: etcd, etcd: {endpoints: [%q], username: %s, password: %q}}
upstreams:
  - {name: static-svc, registry: s}
  - {name: user-service, registry: main, initial_sync_timeout: 1m, canary: {disabled: true}}
`, adminAddr, outAddr, static, endpoint, etcdUser, password) + registerWith(appPort, "main", "{version: v2}")
}

// get sends GET / for host through the process's outbound listener at out
// and returns the status and the answering backend.
func (p *process) get(t *testing.T, out, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+out+"/", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET via %s for %s: %v", out, host, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Backend")
}

// readyz returns /readyz's status and the upstreams it waits for.
func (p *process) readyz(t *testing.T) (int, []string) {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		WaitingFor []string `json:"waiting_for"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.WaitingFor
}

// upstream returns the admin API's view of one upstream.
func (p *process) upstream(t *testing.T, name string) admin.UpstreamStatus {
	t.Helper()
	for _, u := range p.upstreams(t) {
		if u.Name == name {
			return u
		}
	}
	t.Fatalf("no upstream %s in /upstreams", name)
	return admin.UpstreamStatus{}
}

// hasNode reports whether u has an available node with id.
func hasNode(u admin.UpstreamStatus, id string) bool {
	return slices.ContainsFunc(u.Nodes, func(n admin.NodeStatus) bool { return n.ID == id && n.State == "available" })
}

// waiting checks a process whose etcd does not let it in yet: running,
// serving the static upstream, not ready because of user-service, whose
// error /upstreams shows (containing want), and the registration waiting
// for etcd in /register. The password appears nowhere.
func (p *process) waiting(t *testing.T, out, want, password string) {
	t.Helper()
	eventually(t, 3*time.Second, "the static upstream served while etcd is out of reach", func() bool {
		code, backend := p.get(t, out, "static-svc")
		return code == 200 && backend == "static"
	})
	if code, waiting := p.readyz(t); code != 503 || !slices.Equal(waiting, []string{"user-service"}) {
		t.Fatalf("/readyz while etcd is out of reach: %d, waiting for %v; want 503 waiting for [user-service]", code, waiting)
	}
	eventually(t, 5*time.Second, "the etcd error shown for user-service: "+want, func() bool {
		u := p.upstream(t, "user-service")
		return !u.Synced && strings.Contains(u.Error, want)
	})
	eventually(t, 3*time.Second, "the registration waiting for etcd in /register", func() bool {
		st, ok := registerView(t, p.admin)
		return ok && st.AppHealthy && st.Registered && !st.Up && st.RegistrySide != nil && !st.RegistrySide.Up && st.RegistrySide.LastError != ""
	})
	if !p.running() {
		t.Fatal("remora exited")
	}
	if strings.Contains(p.logs.String(), password) {
		t.Fatal("the log shows the etcd password")
	}
}

// synced waits until user-service has etcd's node and the registration is
// up, within the given time for the node set.
func (p *process) synced(t *testing.T, out string, within time.Duration) time.Duration {
	t.Helper()
	took := eventually(t, within, "user-service synced from etcd", func() bool {
		u := p.upstream(t, "user-service")
		return u.Synced && hasNode(u, "b1")
	})
	// The local application registers under user-service too, and may
	// be in the set already: b1 answers one of two requests at least.
	var backends []string
	for range 2 {
		code, backend := p.get(t, out, "user-service")
		if code != 200 {
			t.Fatalf("user-service after the sync: %d from %q", code, backend)
		}
		backends = append(backends, backend)
	}
	if !slices.Contains(backends, "b1") {
		t.Fatalf("user-service after the sync: answered by %v; want b1 among them", backends)
	}
	eventually(t, 3*time.Second, "registered in etcd (/register)", func() bool {
		st, ok := registerView(t, p.admin)
		return ok && st.Up && st.RegistrySide != nil && st.RegistrySide.Up
	})
	if code, waiting := p.readyz(t); code != 200 {
		t.Fatalf("/readyz after the sync: %d, waiting for %v", code, waiting)
	}
	return took
}

// An etcd with authentication that is down when remora starts: remora
// runs, serves its static upstream and is not ready until etcd answers;
// once it does, the etcd upstream syncs within a second and the local
// application is registered.
func TestProcessAuthenticatedEtcdDownAtStart(t *testing.T) {
	srv := etcdtest.New(t)
	srv.Up()
	srv.EnableAuth("rootpw", etcdUser, etcdPassword, "/services/")
	b1, static := startBackend(t, "b1"), startBackend(t, "static")
	srv.Put("/services/user-service/b1", b1.value(""))
	srv.Stop()
	app := startLocalApp(t, "app")

	adminAddr, outAddr := freeAddr(t), freeAddr(t)
	p := launchProcess(t, adminAddr, authEtcdConfig(adminAddr, outAddr, static.srv.Listener.Addr().String(), srv.Endpoint(), etcdPassword, app.port))
	p.waiting(t, outAddr, "etcd", etcdPassword)

	srv.Up()
	took := p.synced(t, outAddr, time.Second)
	t.Logf("user-service synced %v after etcd was up", took)
	if st, _ := registerView(t, p.admin); st.Registry != "main" || st.Port != app.port {
		t.Fatalf("GET /register: %+v", st)
	}
}

// Wrong etcd credentials: remora runs, serves its static upstream, and
// shows the authentication error for the etcd upstream and the
// registration; a reload with the right password lets it in.
func TestProcessWrongEtcdCredentialsFixedByReload(t *testing.T) {
	srv := etcdtest.Start(t)
	srv.EnableAuth("rootpw", etcdUser, etcdPassword, "/services/")
	b1, static := startBackend(t, "b1"), startBackend(t, "static")
	srv.Put("/services/user-service/b1", b1.value(""))
	app := startLocalApp(t, "app")

	adminAddr, outAddr := freeAddr(t), freeAddr(t)
	const wrong = "not-the-password"
	cfg := func(password string) string {
		return authEtcdConfig(adminAddr, outAddr, static.srv.Listener.Addr().String(), srv.Endpoint(), password, app.port)
	}
	p := launchProcess(t, adminAddr, cfg(wrong))
	p.waiting(t, outAddr, fmt.Sprintf("authenticating as user %q", etcdUser), wrong)
	eventually(t, 3*time.Second, "the authentication failure shown in /register", func() bool {
		st, _ := registerView(t, p.admin)
		return st.RegistrySide != nil && strings.Contains(st.RegistrySide.LastError, fmt.Sprintf("authenticating as user %q", etcdUser))
	})

	p.write(t, cfg(etcdPassword))
	took := p.synced(t, outAddr, 5*time.Second)
	t.Logf("user-service synced %v after the config file was fixed (polled every %v)", took, configPollInterval)
}
