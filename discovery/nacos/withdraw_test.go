package nacos

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// A registration withdrawn while the server is down (a reload that removes
// or replaces register:, a drain) must not come back with the server. A
// server that crashed (SIGKILL) keeps the ephemeral instance in its store
// and lists it again when it is back, though its connection is gone: the
// adapter deregisters it on its next connection. A registration of the
// same address made meanwhile cancels that.
func TestServerWithdrawalDuringCrashIsCarriedOutOnceBack(t *testing.T) {
	srv := nacostest.Start(t, nacostest.Config{Name: "crash"})
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	const port = 21099
	listed := func() bool {
		for _, h := range srv.Instances(t, svc) {
			if h.Port == port {
				return true
			}
		}
		return false
	}
	wait := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > serverWait {
				t.Fatalf("%s: not within %v", what, serverWait)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	register := func() discovery.Registration {
		t.Helper()
		g, err := reg.(discovery.Registrar).Register(context.Background(), svc, inst("app", port))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	crash := func(g discovery.Registration) {
		t.Helper()
		srv.Kill()
		wait("the connection found lost", func() bool { return !g.(discovery.StatusReporter).Status().Up })
	}

	g := register()
	wait("listed", listed)
	crash(g)
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatalf("Deregister with the server down: %v", err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	took := wait("the withdrawn instance gone once the server is back", func() bool { return !listed() })
	t.Logf("gone %v after the server was back", took.Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond) // Polaris' one-second cache
	if listed() {
		t.Fatal("listed again")
	}

	// Withdrawn, then registered again, during the outage: it stays.
	g = register()
	wait("listed again", listed)
	crash(g)
	if err := g.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	g = register()
	defer g.Deregister(context.Background())
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	wait("registered once the server is back", func() bool { return listed() && g.(discovery.StatusReporter).Status().Up })
	time.Sleep(1500 * time.Millisecond)
	if !listed() {
		t.Fatal("the new registration was withdrawn")
	}
}
