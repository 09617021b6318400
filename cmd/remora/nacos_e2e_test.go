package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// Re-tagging the canary's metadata in a Nacos-protocol server (Polaris)
// ramps the split live. Polaris pushes changes on a one-second tick, so the
// bound here is that tick plus a second; Remora's own share of the delay is
// logged.
func TestNacosCanaryLiveRamp(t *testing.T) {
	srv := nacostest.Start(t, nacostest.Config{Name: "ramp"})
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	srv.Register(t, "user-service", nacosInstance(stable, nil))
	srv.Register(t, "user-service", nacosInstance(canary, map[string]string{"canary": "true", "canary-weight": "0"}))
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: nacos, type: nacos, nacos: {servers: [%q]}}]
upstreams:
  - name: user-service
    canary: {weight: 50}
`, srv.Addr()))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	rampCanary(t, a, 2*time.Second, func(weight string) {
		srv.Register(t, "user-service", nacosInstance(canary, map[string]string{"canary": "true", "canary-weight": weight}))
	})
}

// nacosInstance is b as an instance of user-service.
func nacosInstance(b *demoBackend, meta map[string]string) discovery.Instance {
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return discovery.Instance{ID: b.name, Address: host, Port: p, Weight: 1, Healthy: true, Metadata: meta}
}

// The Nacos-protocol server (Polaris) stopped for 30 s (REMORA_CHAOS_OUTAGE
// overrides) under load: no request fails, the upstream shows as stale, and
// once the server is back a change reaches traffic within a second of the
// server listing it.
//
// The server is stopped gracefully (SIGTERM) and started again on the same
// ports with the same data directory. Polaris keeps ephemeral instances
// only with their client connections, so it comes back without them; the
// harness registers the backends again, each by a new client, as their
// applications' SDK clients do after reconnecting. Remora holds the empty
// list the server answers with before that (the adapter's guard against a
// restarted server) and its own registration (the local application, as
// local-app) is registered again by the adapter's new client.
func TestChaosNacosOutage(t *testing.T) {
	outage := 30 * time.Second
	if v := os.Getenv("REMORA_CHAOS_OUTAGE"); v != "" {
		outage, _ = time.ParseDuration(v)
	}
	srv := nacostest.Start(t, nacostest.Config{Name: "outage"})
	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	srv.Register(t, "user-service", nacosInstance(b1, nil))
	srv.Register(t, "user-service", nacosInstance(b2, nil))
	local := startLocalApp(t, "local-app")
	a := startRemora(t, nacosConfig(srv.Addr())+fmt.Sprintf(`register:
  service: local-app
  address: 127.0.0.1
  port: %d
  health: {path: /health, interval: 100ms}
`, local.port))
	localListed := func() bool {
		for _, h := range srv.Instances(t, "local-app") {
			if h.Port == local.port {
				return true
			}
		}
		return false
	}
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	eventually(t, 5*time.Second, "the local application registered", localListed)
	load := startLoad(t, a, 8)

	stopped := time.Now()
	if err := srv.Stop(); err != nil {
		t.Logf("stopping the server: %v", err)
	}
	t.Logf("the server took %v to stop", time.Since(stopped).Round(time.Millisecond))
	eventually(t, 5*time.Second, "the upstream marked stale", func() bool { return upstreamStatusOf(t, a).Stale })
	time.Sleep(outage)
	if st := upstreamStatusOf(t, a); !st.Stale || st.Available != 2 || !strings.Contains(st.Error, "no connection") {
		t.Fatalf("during the outage: stale=%v available=%d error=%q", st.Stale, st.Available, st.Error)
	}

	back := time.Now()
	if err := srv.Resume(); err != nil { // same ports, same data; b1 and b2 registered again
		t.Fatal(err)
	}
	t.Logf("the server took %v to start and have b1 and b2 registered again", time.Since(back).Round(time.Millisecond))
	took := eventually(t, 10*time.Second, "staleness cleared", func() bool {
		st := upstreamStatusOf(t, a)
		return !st.Stale && st.Available == 2
	})
	t.Logf("staleness cleared %v later", took.Round(time.Millisecond))
	took = eventually(t, 5*time.Second, "the local application registered again", localListed)
	t.Logf("the local application listed again %v later", took.Round(time.Millisecond))

	// A change after the outage: b3 registered. Polaris makes a change
	// visible (in its answers and its pushes) on a one-second tick, so the
	// bound is a second after the server lists b3, and the tick plus a
	// second after the registration.
	registered := time.Now()
	srv.Register(t, "user-service", nacosInstance(b3, nil))
	accepted := time.Since(registered)
	var visible, routed time.Time
	deadline := registered.Add(10 * time.Second)
	for routed.IsZero() || visible.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("b3: listed by the server after %v, in traffic after %v (zero: not yet)", visible.Sub(registered), routed.Sub(registered))
		}
		if visible.IsZero() {
			for _, h := range srv.Instances(t, "user-service") {
				if h.Port == nacosInstance(b3, nil).Port {
					visible = time.Now()
				}
			}
		}
		if routed.IsZero() && b3.hits.Load() > 0 {
			routed = time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("b3: registration accepted in %v; listed by the server %v and in traffic %v after the registration began",
		accepted.Round(time.Millisecond), visible.Sub(registered).Round(time.Millisecond), routed.Sub(registered).Round(time.Millisecond))
	if d := routed.Sub(visible); d > time.Second {
		t.Errorf("b3 reached traffic %v after the server listed it; want within 1s", d)
	}
	if d := routed.Sub(registered); d > 2*time.Second {
		t.Errorf("b3 reached traffic %v after its registration; want within Polaris' 1s tick + 1s", d)
	}
	load.finish(t)
}
