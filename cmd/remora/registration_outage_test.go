package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// outageRegistry is a real registry server for TestRegistrationReloadAndStopDuringOutage.
type outageRegistry struct {
	block    string // registries: YAML naming it main
	down, up func(t *testing.T)
	// listed returns the instances of user-service the server holds, as
	// "port version" strings (the version label, "" if none).
	listed func(t *testing.T) []string
	// settle bounds how long the registry takes to show a change once up.
	settle time.Duration
}

func etcdOutageRegistry(t *testing.T) outageRegistry {
	srv := etcdtest.Start(t)
	return outageRegistry{
		block: fmt.Sprintf("registries: [{name: main, type: etcd, etcd: {endpoints: [%q]}}]\n", srv.Endpoint()),
		down:  func(t *testing.T) { srv.Stop() },
		up:    func(t *testing.T) { srv.Up() },
		listed: func(t *testing.T) []string {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			resp, err := srv.Client().Get(ctx, "/services/user-service/", clientv3.WithPrefix())
			if err != nil {
				t.Fatalf("reading etcd: %v", err)
			}
			var out []string
			for _, kv := range resp.Kvs {
				var v struct {
					Port     int               `json:"port"`
					Metadata map[string]string `json:"metadata"`
				}
				if err := json.Unmarshal(kv.Value, &v); err != nil {
					t.Fatalf("%s: %v", kv.Key, err)
				}
				out = append(out, fmt.Sprintf("%d %s", v.Port, v.Metadata["version"]))
			}
			return out
		},
		settle: 3 * time.Second,
	}
}

func consulOutageRegistry(t *testing.T) outageRegistry {
	clearConsulEnv(t)
	agent := consultest.Start(t, consultest.Config{Name: "outage"})
	c := agent.Client(t)
	return outageRegistry{
		block: fmt.Sprintf("registries: [{name: main, type: consul, consul: {address: %q}}]\n", agent.Addr()),
		down: func(t *testing.T) {
			if err := agent.Stop(); err != nil {
				t.Logf("stopping the agent: %v", err)
			}
		},
		up: func(t *testing.T) { agent.Restart(t) },
		listed: func(t *testing.T) []string {
			svcs, err := c.Agent().Services()
			if err != nil {
				t.Fatalf("reading the agent: %v", err)
			}
			var out []string
			for _, s := range svcs {
				if s.Service == "user-service" {
					out = append(out, fmt.Sprintf("%d %s", s.Port, s.Meta["version"]))
				}
			}
			return out
		},
		settle: 3 * time.Second,
	}
}

func nacosOutageRegistry(t *testing.T) outageRegistry {
	srv := nacostest.Start(t, nacostest.Config{Name: "outage"})
	return outageRegistry{
		block: fmt.Sprintf("registries: [{name: main, type: nacos, nacos: {servers: [%q]}}]\n", srv.Addr()),
		down:  func(t *testing.T) { nacosDown(srv) },
		up: func(t *testing.T) {
			if err := srv.Resume(); err != nil {
				t.Fatal(err)
			}
		},
		listed: func(t *testing.T) []string {
			var out []string
			for _, h := range srv.Instances(t, "user-service") {
				out = append(out, fmt.Sprintf("%d %s", h.Port, h.Metadata["version"]))
			}
			return out
		},
		// Polaris answers from a cache refreshed every second; the SDK
		// reconnects within a few seconds of the server's return.
		settle: 10 * time.Second,
	}
}

// A reload during a registry outage that changes the registration (its
// metadata and its port) takes effect once the registry is back, with
// nothing left of the old one; a reload during an outage that removes
// register: returns without waiting for the registry and leaves nothing
// registered once it is back; a shutdown's deregistration with the
// registry down ends within two seconds. Against each registry's real
// server: etcd, a Consul agent and Polaris, each stopped with its data
// kept and started again.
func TestRegistrationReloadAndStopDuringOutage(t *testing.T) {
	// A reload that withdraws a registration, and a shutdown, wait for a
	// registry that is down for a short try at most (replaceTimeout and
	// main's 10 s are the ceilings, for a registry that is slow).
	const reloadBound, stopBound = 2 * time.Second, 2 * time.Second
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) outageRegistry
	}{
		{"etcd", etcdOutageRegistry},
		{"consul", consulOutageRegistry},
		{"nacos", nacosOutageRegistry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.start(t)
			app1, app2 := startLocalApp(t, "app"), startLocalApp(t, "app-moved")
			base := "admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n" + r.block
			is := func(want ...string) func() bool {
				return func() bool { return strings.Join(r.listed(t), ",") == strings.Join(want, ",") }
			}
			at := func(a *localApp, version string) string { return strconv.Itoa(a.port) + " " + version }
			a := startRemora(t, base+registerWith(app1.port, "main", "{version: v1}"))
			eventually(t, r.settle, "registered", is(at(app1, "v1")))

			// A reload that changes the metadata and the port while the
			// registry is down.
			r.down(t)
			start := time.Now()
			reloadYAML(t, a, base+registerWith(app2.port, "main", "{version: v2}"))
			if d := time.Since(start); d > reloadBound {
				t.Errorf("the reload that changes the registration took %v with the registry down", d)
			}
			t.Logf("reload that changes the registration: %v", time.Since(start).Round(time.Millisecond))
			r.up(t)
			took := eventually(t, r.settle, "the new registration alone once the registry is back", is(at(app2, "v2")))
			t.Logf("converged %v after the registry was back", took.Round(time.Millisecond))

			// A reload that removes register: while the registry is down.
			r.down(t)
			start = time.Now()
			reloadYAML(t, a, base)
			if d := time.Since(start); d > reloadBound {
				t.Errorf("the reload that removes the registration took %v with the registry down", d)
			}
			t.Logf("reload that removes the registration: %v", time.Since(start).Round(time.Millisecond))
			r.up(t)
			took = eventually(t, r.settle, "nothing registered once the registry is back", is())
			t.Logf("withdrawn %v after the registry was back", took.Round(time.Millisecond))
			time.Sleep(time.Second)
			if got := r.listed(t); len(got) != 0 {
				t.Fatalf("registered again: %v", got)
			}

			// The shutdown's deregistration with the registry down ends
			// after a short try.
			reloadYAML(t, a, base+registerWith(app1.port, "main", "{version: v3}"))
			eventually(t, r.settle, "registered again", is(at(app1, "v3")))
			r.down(t)
			const delay = 200 * time.Millisecond // registerWith's deregister_delay
			start = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second+delay) // as main
			a.deregister(ctx, delay)
			cancel()
			a.close()
			if d := time.Since(start); d > stopBound+delay {
				t.Errorf("the shutdown with the registry down took %v", d)
			}
			t.Logf("shutdown with the registry down: %v", time.Since(start).Round(time.Millisecond))
			r.up(t)
		})
	}
}
