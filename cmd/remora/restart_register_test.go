package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
	"github.com/remora-mesh/remora/pkg/admin"
)

// The local application's registration across a restart of the Remora
// process beside it, against each registry's real server. Two processes
// with the same register: block (same service, id, address and port)
// follow one another:
//
//   - killed: the old one gets SIGKILL and a new one starts at once. The
//     old session stays on the server until it expires (an etcd lease, a
//     Consul TTL check; the kernel closes a Nacos connection at once).
//     The instance is listed once the new one is up and stays listed
//     after the old session is gone from the server;
//   - frozen (Nacos): the old one hangs (SIGSTOP), the new one starts and
//     registers, and only then is the old one killed, so that the server
//     drops the old session after the new registration was made;
//   - overlapping: the new one starts and registers while the old one
//     still runs; then the old one gets SIGTERM, whose first step
//     deregisters. The new one must bring the instance back, within its
//     adapter's reconcile interval, and keep it.
//
// Each test takes 6 to 17 s (an etcd that is slow to revoke the killed
// process's lease makes TestProcessRegistrationSurvivesKillEtcd longer).

// restartRegistry is one registry type under test: the registries: entry
// reaching its server, and whether the server lists the local
// application now (asked of the server itself, not through Remora).
type restartRegistry struct {
	block  string
	listed func(t *testing.T) bool
}

// restartConfig is a Remora whose admin API is on adminAddr, consuming
// user-service from the registry under test and registering the local
// application (on appPort) there as user-service/app-1.
func restartConfig(adminAddr string, r restartRegistry, appPort int) string {
	return fmt.Sprintf(`admin: {address: %q}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
drain_delay: 0s
drain_timeout: 2s
registries:
  - %s
upstreams:
  - {name: user-service, canary: {disabled: true}}
register:
  service: user-service
  id: app-1
  address: 127.0.0.1
  port: %d
  health: {path: /health, interval: 100ms, healthy_threshold: 1}
  deregister_delay: 300ms
`, adminAddr, r.block, appPort)
}

// registration reads the process's GET /register.
func (p *process) registration(t *testing.T) admin.RegisterStatus {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.admin + "/register")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st admin.RegisterStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("GET /register: %d: %v", resp.StatusCode, err)
	}
	return st
}

// registeredUp waits until p's adapter reports that the registry holds
// its registration.
func (p *process) registeredUp(t *testing.T, within time.Duration) {
	t.Helper()
	eventually(t, within, "the new process's registration up", func() bool {
		st := p.registration(t)
		return st.Registered && st.Up
	})
}

// keepsListed samples r.listed every 50 ms for d and fails t if the
// instance was ever missing.
func keepsListed(t *testing.T, r restartRegistry, d time.Duration, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !r.listed(t) {
			t.Fatalf("%s: the instance is not listed any more", what)
		}
	}
}

// killedRestart: SIGKILL, a new process at once on the same config; then
// sessionGone waits until the server has dropped the old session (while
// the instance must stay listed).
func killedRestart(t *testing.T, r restartRegistry, sessionGone func(t *testing.T)) {
	app := startLocalApp(t, "app")
	adminAddr := freeAddr(t)
	yml := restartConfig(adminAddr, r, app.port)
	old := startProcess(t, adminAddr, yml)
	took := eventually(t, 5*time.Second, "registered by the first process", func() bool { return r.listed(t) })
	t.Logf("registered %v after the first process was ready", took.Round(time.Millisecond))
	old.registeredUp(t, 2*time.Second)

	if err := old.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-old.exited
	killed := time.Now()
	p := startProcess(t, adminAddr, yml)
	t.Logf("the new process ready %v after the kill", time.Since(killed).Round(time.Millisecond))
	took = eventually(t, 3*time.Second, "listed once the new process is up", func() bool { return r.listed(t) })
	p.registeredUp(t, 2*time.Second)
	t.Logf("listed %v after the new process was ready", took.Round(time.Millisecond))

	sessionGone(t)
	t.Logf("the old session gone from the server %v after the kill", time.Since(killed).Round(time.Millisecond))
	keepsListed(t, r, 3*time.Second, "after the old session was dropped")
	if st := p.registration(t); !st.Up {
		t.Fatalf("GET /register of the new process: %+v", st)
	}
}

// overlappingRestart: the new process starts and registers while the old
// one runs; the old one then gets SIGTERM, deregisters and exits. The
// instance may be missing for a while (the old one's deregistration took
// it), but must be listed again, for good, within within of the SIGTERM.
func overlappingRestart(t *testing.T, r restartRegistry, within time.Duration) {
	app := startLocalApp(t, "app")
	oldAdmin, newAdmin := freeAddr(t), freeAddr(t)
	old := startProcess(t, oldAdmin, restartConfig(oldAdmin, r, app.port))
	eventually(t, 5*time.Second, "registered by the first process", func() bool { return r.listed(t) })
	old.registeredUp(t, 2*time.Second)

	p := startProcess(t, newAdmin, restartConfig(newAdmin, r, app.port))
	p.registeredUp(t, 3*time.Second)
	if !r.listed(t) {
		t.Fatal("not listed while both processes run")
	}

	if err := old.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		select {
		case <-old.exited:
		case <-time.After(10 * time.Second):
			_ = old.proc.Kill()
		}
	}()
	steady(t, r, within, "after the old process's SIGTERM")
	if !old.exitedOK() {
		t.Fatalf("the old process exited with %v", old.err)
	}
	if st := p.registration(t); !st.Up {
		t.Fatalf("GET /register of the new process: %+v", st)
	}
}

// steadyHold is how long the instance must stay listed without a break
// for steady: longer than Polaris' one-second cache, so that a removal
// made before it started shows in it.
const steadyHold = 3 * time.Second

// steady samples r.listed every 50 ms until the instance has been listed
// for steadyHold without a break, and fails t if that break-free stretch
// does not begin within within. It logs how long the instance was missing
// and when it was listed for good.
func steady(t *testing.T, r restartRegistry, within time.Duration, what string) {
	t.Helper()
	start := time.Now()
	var missing time.Duration
	var since time.Time // listed without a break since; zero while missing
	last := start
	for {
		now := time.Now()
		listed := r.listed(t)
		switch {
		case listed && since.IsZero():
			since = now
		case !listed:
			missing += now.Sub(last)
			since = time.Time{}
		}
		last = now
		if !since.IsZero() && now.Sub(since) >= steadyHold {
			t.Logf("%s: missing for %v in all; listed for good %v after it began", what, missing.Round(10*time.Millisecond), since.Sub(start).Round(10*time.Millisecond))
			return
		}
		if since.IsZero() && now.Sub(start) > within || !since.IsZero() && since.Sub(start) > within {
			t.Fatalf("%s: not listed for good within %v (missing for %v so far)", what, within, missing.Round(10*time.Millisecond))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// etcdRestartRegistry is the registry under test on an embedded etcd;
// key is user-service/app-1's key.
func etcdRestartRegistry(srv *etcdtest.Server) (restartRegistry, string) {
	key := "/services/user-service/app-1"
	return restartRegistry{
		block: fmt.Sprintf("{name: reg, type: etcd, etcd: {endpoints: [%q], prefix: /services}}", srv.Endpoint()),
		listed: func(t *testing.T) bool {
			resp, err := srv.Client().Get(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			return len(resp.Kvs) == 1
		},
	}, key
}

// etcd: the old key is attached to the old process's lease, which expires
// 10 s (the registration TTL) after the kill; the new process's put moved
// the key to its own lease, so the expiry deletes nothing.
func TestProcessRegistrationSurvivesKillEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	r, key := etcdRestartRegistry(srv)
	var oldLease clientv3.LeaseID // the first lease seen: the first process's
	listed := r.listed
	r.listed = func(t *testing.T) bool {
		if !listed(t) {
			return false
		}
		// Read once listed, in the call that first finds the key: the
		// first process's, before the second one starts. (Read before,
		// a key put in between was taken later, from the second.)
		if oldLease == 0 {
			resp, err := srv.Client().Get(context.Background(), key)
			if err != nil {
				t.Fatalf("reading the first process's key: %v", err)
			}
			if len(resp.Kvs) != 1 {
				t.Fatalf("the first process's key: %d keys", len(resp.Kvs))
			}
			oldLease = clientv3.LeaseID(resp.Kvs[0].Lease)
		}
		return true
	}
	killedRestart(t, r, func(t *testing.T) {
		if oldLease == 0 {
			t.Fatal("the first process's lease was never seen")
		}
		// Nothing renews the old lease: its TTL runs out within 10 s of
		// the kill (-1 once revoked, negative while expired and not yet
		// revoked). etcd revokes an expired lease a second or so after
		// its TTL reaches 0, much later on a loaded machine; an expired
		// one is revoked here, as etcd would, so that what follows does
		// not wait on etcd's lessor.
		var ttl int64
		eventually(t, 25*time.Second, "the killed process's lease expired", func() bool {
			resp, err := srv.Client().TimeToLive(context.Background(), oldLease)
			if err == nil {
				ttl = resp.TTL
			}
			return err == nil && resp.TTL < 0
		})
		if ttl != -1 {
			t.Logf("the old lease expired %d s ago and is not revoked yet: revoking it", -ttl)
			if _, err := srv.Client().Revoke(context.Background(), oldLease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				t.Fatalf("revoking the expired lease: %v", err)
			}
		}
	})
}

// etcd: the old process's deregistration deletes the key the new one put;
// the new one's read-back (every TTL, 10 s) writes it again.
func TestProcessRegistrationOverlappingRestartEtcd(t *testing.T) {
	srv := etcdtest.Start(t)
	r, _ := etcdRestartRegistry(srv)
	overlappingRestart(t, r, 13*time.Second)
}

// consulRestartRegistry is the registry under test on a Consul agent:
// listed means in the catalog with its check passing.
func consulRestartRegistry(t *testing.T) restartRegistry {
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "restart"})
	cli := agent.Client(t)
	return restartRegistry{
		block: fmt.Sprintf("{name: reg, type: consul, consul: {address: %q, wait_time: 2s}}", agent.Addr()),
		listed: func(t *testing.T) bool {
			entries, _, err := cli.Health().Service("user-service", "", true, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Service.ID == consultest.ServiceID("user-service", "app-1") {
					return true
				}
			}
			return false
		},
	}
}

// Consul: the new process registers the same service ID, with the same
// check, over the old one's; nothing of the old process's expires, but
// the instance must still be passing after the check's TTL (10 s) has
// passed since the kill.
func TestProcessRegistrationSurvivesKillConsul(t *testing.T) {
	r := consulRestartRegistry(t)
	killedRestart(t, r, func(t *testing.T) {
		time.Sleep(11 * time.Second) // the TTL of the check the old process passed
	})
}

// Consul: the old process's deregistration removes the service; the new
// one's next TTL pass (every second) fails and registers it again.
func TestProcessRegistrationOverlappingRestartConsul(t *testing.T) {
	r := consulRestartRegistry(t)
	overlappingRestart(t, r, 3*time.Second)
}

// nacosRestartRegistry is the registry under test on a Polaris server of
// its own, where the local application is the only instance.
func nacosRestartRegistry(t *testing.T) restartRegistry {
	srv := nacostest.Start(t, nacostest.Config{Name: "restart"})
	return restartRegistry{
		block: fmt.Sprintf("{name: reg, type: nacos, nacos: {servers: [%q]}}", srv.Addr()),
		listed: func(t *testing.T) bool {
			for _, h := range srv.Instances(t, "user-service") {
				if h.IP == "127.0.0.1" {
					return true
				}
			}
			return false
		},
	}
}

// Nacos: SIGKILL closes the old process's connection at once (the kernel
// closes its sockets), so the server drops its ephemeral instance before
// the new process registers; the new one registers it again.
func TestProcessRegistrationSurvivesKillNacos(t *testing.T) {
	r := nacosRestartRegistry(t)
	killedRestart(t, r, func(t *testing.T) {
		time.Sleep(2 * time.Second) // Polaris answers from a cache refreshed every second
	})
}

// frozenRestart: the old process hangs (SIGSTOP: its connections stay
// open, its session on the server too), a new one starts beside it and
// registers, and only then is the old one killed, so that the server
// drops the old session after the new registration was made. The
// instance must be listed again, for good, within within of the kill.
func frozenRestart(t *testing.T, r restartRegistry, within time.Duration) {
	app := startLocalApp(t, "app")
	oldAdmin, newAdmin := freeAddr(t), freeAddr(t)
	old := startProcess(t, oldAdmin, restartConfig(oldAdmin, r, app.port))
	eventually(t, 5*time.Second, "registered by the first process", func() bool { return r.listed(t) })
	old.registeredUp(t, 2*time.Second)
	if err := old.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, newAdmin, restartConfig(newAdmin, r, app.port))
	p.registeredUp(t, 3*time.Second)
	keepsListed(t, r, 1500*time.Millisecond, "once the new process registered") // past Polaris' one-second cache
	if err := old.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-old.exited
	steady(t, r, within, "after the old process was killed")
	if st := p.registration(t); !st.Up {
		t.Fatalf("GET /register of the new process: %+v", st)
	}
}

// Nacos: the old connection closes after the new process registered the
// same address and port on its own connection. Polaris keys an instance
// by address and port, so it drops the new process's instance with the
// old connection; the new process notices and registers it again.
func TestProcessRegistrationSurvivesLateSessionEndNacos(t *testing.T) {
	r := nacosRestartRegistry(t)
	frozenRestart(t, r, 15*time.Second)
}

// Nacos: the old process deregisters the address and port that the new
// process registered on its own connection, which takes the new process's
// instance (Polaris keys it by address and port); the new process
// notices and registers it again.
func TestProcessRegistrationOverlappingRestartNacos(t *testing.T) {
	r := nacosRestartRegistry(t)
	overlappingRestart(t, r, 15*time.Second)
}
