package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A listen address another process still holds as Remora starts (the
// previous Remora on the host, draining) is waited for: Remora binds it
// once it is free, then serves — the outbound listener and a dedicated
// port alike. One still held after startBindWait stops the start with an
// error naming the listener, and a signal ends the wait.
func TestStartWaitsForABusyAddress(t *testing.T) {
	users := startBackend(t, "users")
	yml := func(outbound, port string) string {
		return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: %q}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
  - {name: users, listen: %q}
`, outbound, users.srv.Listener.Addr().String(), port)
	}
	hold := func(t *testing.T) net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	type started struct {
		a   *app
		err error
	}
	start := func(ctx context.Context, yml string) <-chan started {
		out := make(chan started, 1)
		cfg := mustParse(t, yml)
		go func() {
			a, err := startApp(ctx, cfg, testLogger())
			if a != nil {
				t.Cleanup(a.close)
			}
			out <- started{a, err}
		}()
		return out
	}
	for _, which := range []string{"outbound", "dedicated"} {
		t.Run(which, func(t *testing.T) {
			held := hold(t)
			addr := held.Addr().String()
			cfg := yml(addr, freeAddr(t))
			if which == "dedicated" {
				cfg = yml("127.0.0.1:0", addr)
			}
			done := start(context.Background(), cfg)
			select {
			case r := <-done:
				t.Fatalf("the start returned while %s was held: %v", addr, r.err)
			case <-time.After(300 * time.Millisecond):
			}
			held.Close()
			var r started
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the start still waits after the address was freed")
			}
			if r.err != nil {
				t.Fatalf("start: %v", r.err)
			}
			if code, body := hostGet(t, addr, "users"); code != 200 || body != "users" {
				t.Fatalf("through %s: %d %q", addr, code, body)
			}
		})
	}
	t.Run("held for good", func(t *testing.T) {
		defer func(old time.Duration) { startBindWait = old }(startBindWait)
		startBindWait = 200 * time.Millisecond
		held := hold(t)
		r := <-start(context.Background(), yml(held.Addr().String(), freeAddr(t)))
		if r.err == nil || !strings.Contains(r.err.Error(), "listener outbound") || !strings.Contains(r.err.Error(), "address already in use") {
			t.Fatalf("start with the address held for good: %v; want an error naming the listener", r.err)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		held := hold(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := start(ctx, yml(held.Addr().String(), freeAddr(t)))
		time.Sleep(100 * time.Millisecond)
		cancel()
		select {
		case r := <-done:
			if r.err == nil {
				t.Fatal("a start stopped while waiting for an address succeeded")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a signal did not end the wait for the address")
		}
	})
}

// startWithAdminAt starts an app whose admin address is admin (an
// admin block in YAML flow form: address and token) with the start's
// bind waits shortened for the test, and checks that the proxy serves
// through its outbound listener whatever became of the admin address.
func startWithAdminAt(t *testing.T, admin string) *app {
	t.Helper()
	t.Cleanup(func(wait, retry time.Duration) func() {
		return func() { startBindWait, adminRetryEvery = wait, retry }
	}(startBindWait, adminRetryEvery))
	startBindWait, adminRetryEvery = 200*time.Millisecond, 50*time.Millisecond
	users := startBackend(t, "users")
	outbound := freeAddr(t)
	cfg := mustParse(t, fmt.Sprintf(`
admin: %s
listeners: [{name: outbound, address: %q}]
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams: [{name: users}]
`, admin, outbound, users.srv.Listener.Addr().String()))
	a, err := startApp(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatalf("start with admin %s: %v; want the proxy served", admin, err)
	}
	t.Cleanup(a.close)
	if code, body := hostGet(t, outbound, "users"); code != 200 || body != "users" {
		t.Fatalf("through the outbound listener: %d %q", code, body)
	}
	return a
}

// The admin API is no traffic: an admin address held for good does not
// stop the start. The proxy serves, and the admin API is served once the
// address is free.
func TestBusyAdminAddressDoesNotStopTheProxy(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	startWithAdminAt(t, fmt.Sprintf("{address: %q}", held.Addr().String()))
	held.Close()
	eventually(t, 5*time.Second, "the admin API served once its address is free", func() bool {
		resp, err := http.Get("http://" + held.Addr().String() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// SIGTERM while the start waits for a busy address is a stop, not a
// failure: `remora run` exits 0, as on SIGTERM at any other time (a
// supervisor that restarts on failure took it for a crash).
func TestSIGTERMWhileWaitingForAnAddressExitsZero(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	path := filepath.Join(t.TempDir(), "remora.yaml")
	yml := fmt.Sprintf("admin: {address: %q}\nlisteners: [{name: outbound, address: %q}]\nregistries: [{name: s, type: static, static: {services: {users: [{address: \"127.0.0.1:1\"}]}}}]\nupstreams: [{name: users}]\n",
		freeAddr(t), held.Addr().String())
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "REMORA_TEST_MAIN="+strings.Join([]string{"run", "-c", path}, "\n"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()
	eventually(t, 10*time.Second, "the start waiting for the address", func() bool {
		return strings.Contains(logs.String(), "address not available; trying again")
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("remora run after SIGTERM while waiting for an address: %v; want exit status 0\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("remora run did not end on SIGTERM while waiting for an address")
	}
}

// An admin address that cannot be bound for a reason that is no config
// error — not on the host (yet), or a name that does not resolve now —
// does not stop the start either: the proxy serves without the admin API,
// which is tried again every second.
func TestUnbindableAdminAddressDoesNotStopTheProxy(t *testing.T) {
	for _, admin := range []string{
		"192.0.2.1:15000",      // TEST-NET-1: on no host
		"nohost.invalid:15000", // .invalid never resolves
	} {
		t.Run(admin, func(t *testing.T) {
			startWithAdminAt(t, fmt.Sprintf("{address: %q, token: t0ken}", admin))
		})
	}
}
