package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

// A 3-member etcd cluster loses the member that leads it, which is also
// the first of Remora's endpoints, while Remora watches user-service and
// keeps the local application registered, under load: no request fails, a
// change made after the kill reaches traffic within 2 s, and the
// registration outlives a full lease TTL after the kill (read from a
// surviving member).
func TestEtcdClusterMemberKilledUnderLoad(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	leader := c.Leader()
	endpoints := []string{c.Endpoint(leader)}
	for i, ep := range c.Endpoints() {
		if i != leader {
			endpoints = append(endpoints, ep)
		}
	}
	survivor := (leader + 1) % 3

	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	c.Put("/services/user-service/b1", b1.value(""))
	c.Put("/services/user-service/b2", b2.value(""))
	app := startLocalApp(t, "app")
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: main, type: etcd, etcd: {endpoints: [%s]}}]
upstreams: [{name: user-service}]
register:
  service: app-service
  id: app-1
  address: 127.0.0.1
  port: %d
  health: {path: /health, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 2}
`, strings.Join(endpoints, ", "), app.port))
	const key = "/services/app-service/app-1"
	registered := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.Client(survivor).Get(ctx, key)
		return err == nil && len(resp.Kvs) == 1
	}
	eventually(t, 5*time.Second, "two nodes", func() bool { return available(a) == 2 })
	eventually(t, 3*time.Second, "registered", registered)

	load := startLoad(t, a, 2)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	c.Kill(leader)
	killed := time.Now()
	t.Logf("killed member %d, the leader and Remora's first endpoint, in %v", leader, killed.Sub(start))

	c.Put("/services/user-service/b3", b3.value(""))
	t.Logf("a change written %v after the kill", time.Since(killed))
	took := eventually(t, 2*time.Second, "the change in traffic", func() bool { return b3.hits.Load() > 0 })
	t.Logf("the change reached traffic in %v", took)

	// The registration outlives a full lease TTL after the kill: its lease
	// is kept alive through the surviving members.
	time.Sleep(time.Until(killed.Add(etcd.DefaultRegistrationTTL + time.Second)))
	if !registered() {
		t.Fatalf("the registration %s is gone a TTL after the kill", key)
	}
	if st, ok := registerView(t, a.addr("admin")); !ok || !st.Up {
		t.Fatalf("GET /register a TTL after the kill: %+v", st)
	}
	load.finish(t)
}
