package main

import (
	"fmt"
	"net"
	"strconv"
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
	inst := func(b *demoBackend, meta map[string]string) discovery.Instance {
		host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
		p, _ := strconv.Atoi(port)
		return discovery.Instance{ID: b.name, Address: host, Port: p, Weight: 1, Healthy: true, Metadata: meta}
	}
	srv.Register(t, "user-service", inst(stable, nil))
	srv.Register(t, "user-service", inst(canary, map[string]string{"canary": "true", "canary-weight": "0"}))
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: nacos, type: nacos, nacos: {servers: [%q]}}]
upstreams:
  - name: user-service
    canary: {weight: 50}
`, srv.Addr()))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	if counts := send(t, a, 20); counts["canary"] != 0 {
		t.Fatalf("canary-weight 0: %v", counts)
	}
	for _, step := range []struct {
		weight string
		want   func(map[string]int) bool
	}{
		{"100", func(c map[string]int) bool { return c["canary"] == 20 }},
		{"0", func(c map[string]int) bool { return c["stable"] == 20 }},
	} {
		srv.Register(t, "user-service", inst(canary, map[string]string{"canary": "true", "canary-weight": step.weight}))
		took := eventually(t, 2*time.Second, "split at canary-weight "+step.weight, func() bool { return step.want(send(t, a, 20)) })
		t.Logf("canary-weight %s took effect in %v (Polaris pushes on a 1 s tick)", step.weight, took)
	}
}
