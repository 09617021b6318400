package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/pkg/admin"
)

// consulConfig is a Remora with one Consul registry on addr and the
// upstream user-service; extra goes into the registry's consul block and
// upstream into the upstream's.
func consulConfig(addr, extra, upstream string) string {
	return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - name: dc1
    type: consul
    consul: {address: %q%s}
upstreams:
  - {name: user-service%s}
`, addr, extra, upstream)
}

// registerBackend registers b as instance b.name of user-service, with a
// TTL check "ttl-<name>" that starts passing.
func registerBackend(t *testing.T, agent *consultest.Agent, b *demoBackend, tags []string, meta map[string]string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	agent.Register(t, "user-service", discovery.Instance{ID: b.name, Address: host, Port: p, Weight: 1, Metadata: meta}, tags,
		&api.AgentServiceCheck{CheckID: "ttl-" + b.name, TTL: "10m", Status: api.HealthPassing})
}

func upstreamStatus(t *testing.T, a *app) admin.UpstreamStatus {
	t.Helper()
	var st admin.UpstreamStatus
	getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
	return st
}

func readyz(t *testing.T, a *app) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.addr("admin") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestConsulEndToEnd runs Remora on a real Consul agent with ACLs in
// default-deny mode (one agent for the whole test): tags and Meta reach
// /upstreams as labels, traffic spreads over the instances, a TTL check
// takes a node out of traffic and back within a second, and ACL failures
// (no token; a token revoked while running) show up in /upstreams as a
// permission error without emptying the node set or faking readiness.
func TestConsulEndToEnd(t *testing.T) {
	// The Consul API client fills unset options from these.
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL",
		"CONSUL_NAMESPACE", "CONSUL_PARTITION", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "e2e", ACL: true})
	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	registerBackend(t, agent, b1, []string{"version=v1"}, map[string]string{"zone": "z1"})
	registerBackend(t, agent, b2, []string{"version=v1"}, map[string]string{"zone": "z2"})
	registerBackend(t, agent, b3, []string{"canary", "version=v2"}, map[string]string{"zone": "z3", "build": "42"})

	t.Run("without a token: not ready, permission error in /upstreams", func(t *testing.T) {
		a := startRemora(t, consulConfig(agent.Addr(), "", ", initial_sync_timeout: 1h"))
		var first admin.UpstreamStatus
		eventually(t, 5*time.Second, "a registry error in /upstreams", func() bool {
			first = upstreamStatus(t, a)
			if first.Synced {
				t.Fatalf("the upstream got a node set without a token: %+v", first)
			}
			return first.Error != ""
		})
		checkDenied := func(st admin.UpstreamStatus) {
			t.Helper()
			if !st.Stale || st.Synced || len(st.Nodes) != 0 || st.Available != 0 {
				t.Fatalf("upstream without a token: %+v; want stale, unsynced, no nodes", st)
			}
			for _, want := range []string{"permission denied by Consul ACLs", "user-service", "token"} {
				if !strings.Contains(st.Error, want) {
					t.Fatalf("error %q does not mention %q", st.Error, want)
				}
			}
			if code, body := readyz(t, a); code != http.StatusServiceUnavailable || !strings.Contains(body, "user-service") {
				t.Fatalf("readyz without a token: %d %s; want 503 waiting for user-service", code, body)
			}
		}
		checkDenied(first)
		t.Logf("error without a token: %s", first.Error)
		// The adapter retries; a later attempt is an error again, never a set.
		eventually(t, 5*time.Second, "a retry", func() bool {
			st := upstreamStatus(t, a)
			return st.ErrorAt != nil && !st.ErrorAt.Equal(*first.ErrorAt)
		})
		checkDenied(upstreamStatus(t, a))
		if counts := send(t, a, 3); counts["503"] != 3 {
			t.Fatalf("requests without a token: %v; want 503s", counts)
		}
	})

	// A Remora with a valid token, for the rest of the test. wait_time: 1s
	// bounds how long a revoked token can go unnoticed: the agent used here
	// (1.14) usually ends the blocking query at once when its token is
	// deleted, but about one time in ten goes on answering from its streamed
	// view; the adapter's fresh read every five wait_times finds it then.
	tok := agent.NewReadToken(t, "user-service")
	a := startRemora(t, consulConfig(agent.Addr(), ", token: "+tok.SecretID+", wait_time: 1s", ", canary: {disabled: true}")) // the canary tag is only a label here
	eventually(t, 5*time.Second, "three nodes", func() bool { return available(a) == 3 })

	t.Run("requests spread over all three", func(t *testing.T) {
		counts := send(t, a, 30)
		for _, b := range []string{"b1", "b2", "b3"} {
			if counts[b] != 10 {
				t.Fatalf("spread %v; want 10 each", counts)
			}
		}
		if code, body := readyz(t, a); code != http.StatusOK {
			t.Fatalf("readyz: %d %s", code, body)
		}
	})

	t.Run("tags and Meta are labels in /upstreams", func(t *testing.T) {
		st := upstreamStatus(t, a)
		if !st.Synced || st.Stale || st.Error != "" || st.Available != 3 || len(st.Nodes) != 3 {
			t.Fatalf("status %+v", st)
		}
		want := []struct {
			b      *demoBackend
			labels map[string]string
		}{
			{b1, map[string]string{"version": "v1", "zone": "z1"}},
			{b2, map[string]string{"version": "v1", "zone": "z2"}},
			{b3, map[string]string{"canary": "true", "version": "v2", "zone": "z3", "build": "42"}},
		}
		for i, w := range want {
			n := st.Nodes[i] // sorted by ID
			if id := agent.InstanceID("user-service", w.b.name); n.ID != id {
				t.Fatalf("node %d: id %q, want %q", i, n.ID, id)
			}
			if addr := net.JoinHostPort(n.Address, strconv.Itoa(n.Port)); addr != w.b.srv.Listener.Addr().String() {
				t.Errorf("node %s: address %s, want %s", n.ID, addr, w.b.srv.Listener.Addr())
			}
			if fmt.Sprint(n.Metadata) != fmt.Sprint(w.labels) {
				t.Errorf("node %s: labels %v, want %v", n.ID, n.Metadata, w.labels)
			}
			if n.State != "available" || n.Weight != 1 {
				t.Errorf("node %s: state %q weight %d; want available, 1", n.ID, n.State, n.Weight)
			}
		}
	})

	t.Run("critical TTL check stops traffic within 1s; passing restores it", func(t *testing.T) {
		agent.UpdateTTL(t, "ttl-b2", api.HealthCritical)
		took := eventually(t, time.Second, "b2 leaves the live set", func() bool { return available(a) == 2 })
		t.Logf("critical check reached the proxy in %v", took)
		hits := b2.hits.Load()
		if counts := send(t, a, 20); counts["b1"] != 10 || counts["b3"] != 10 {
			t.Fatalf("with b2 critical: %v; want b1 and b3 only", counts)
		}
		if b2.hits.Load() != hits {
			t.Fatal("b2 received requests while its check was critical")
		}

		agent.UpdateTTL(t, "ttl-b2", api.HealthPassing)
		took = eventually(t, time.Second, "b2 returns to the live set", func() bool { return available(a) == 3 })
		t.Logf("passing check reached the proxy in %v", took)
		if counts := send(t, a, 30); counts["b2"] != 10 {
			t.Fatalf("with b2 passing again: %v; want 10 each", counts)
		}
	})

	t.Run("revoked token: permission error, last good set kept", func(t *testing.T) {
		if _, err := agent.Client(t).ACL().TokenDelete(tok.AccessorID, nil); err != nil {
			t.Fatalf("deleting the token: %v", err)
		}
		var first admin.UpstreamStatus
		eventually(t, 10*time.Second, "the permission error in /upstreams", func() bool {
			first = upstreamStatus(t, a)
			if len(first.Nodes) != 3 {
				t.Fatalf("the node set changed after the token was revoked: %+v", first)
			}
			return first.Stale
		})
		t.Logf("error after revocation: %s", first.Error)
		check := func(st admin.UpstreamStatus) {
			t.Helper()
			if !strings.Contains(st.Error, "permission denied by Consul ACLs") || !strings.Contains(st.Error, "token") {
				t.Fatalf("error %q: want the permission error", st.Error)
			}
			if strings.Contains(st.Error, tok.SecretID) {
				t.Fatalf("the error shows the token: %s", st.Error)
			}
			if !st.Synced || len(st.Nodes) != 3 || st.Available != 3 {
				t.Fatalf("stale upstream %+v; want the last good set of three", st)
			}
		}
		check(first)
		// Later failed attempts keep the set too.
		eventually(t, 5*time.Second, "a retry", func() bool {
			st := upstreamStatus(t, a)
			return st.ErrorAt != nil && !st.ErrorAt.Equal(*first.ErrorAt)
		})
		check(upstreamStatus(t, a))
		if counts := send(t, a, 30); counts["b1"] != 10 || counts["b2"] != 10 || counts["b3"] != 10 {
			t.Fatalf("requests on the stale set: %v; want 10 each", counts)
		}
		if code, body := readyz(t, a); code != http.StatusOK {
			t.Fatalf("readyz on the stale set: %d %s", code, body)
		}
	})
}

// Re-tagging the canary's Meta in Consul ramps the split live.
func TestConsulCanaryLiveRamp(t *testing.T) {
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "ramp"})
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	registerBackend(t, agent, stable, nil, nil)
	registerBackend(t, agent, canary, []string{"canary"}, map[string]string{"canary-weight": "0"})
	a := startRemora(t, consulConfig(agent.Addr(), ", wait_time: 5s", ", canary: {weight: 50}"))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	rampCanary(t, a, time.Second, func(weight string) {
		registerBackend(t, agent, canary, []string{"canary"}, map[string]string{"canary-weight": weight})
	})
}

// The Consul agent stopped for 30 s (REMORA_CHAOS_OUTAGE overrides) under
// load: no request fails, the upstream shows as stale, and a change made
// after the agent returns reaches traffic within a second.
func TestChaosConsulOutage(t *testing.T) {
	outage := 30 * time.Second
	if v := os.Getenv("REMORA_CHAOS_OUTAGE"); v != "" {
		outage, _ = time.ParseDuration(v)
	}
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
	agent := consultest.Start(t, consultest.Config{Name: "outage"})
	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	// No TTL checks here: Consul restores them as critical after a restart,
	// which would (rightly) take the instances out.
	registerPlain(t, agent, b1)
	registerPlain(t, agent, b2)
	a := startRemora(t, consulConfig(agent.Addr(), ", wait_time: 5s", ""))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	load := startLoad(t, a, 8)
	if err := agent.Stop(); err != nil {
		t.Logf("stopping the agent: %v", err)
	}
	eventually(t, 10*time.Second, "marked stale", func() bool { return upstreamStatus(t, a).Stale })
	time.Sleep(outage)
	if st := upstreamStatus(t, a); !st.Stale || st.Available != 2 {
		t.Fatalf("during the outage: stale=%v available=%d", st.Stale, st.Available)
	}
	t.Logf("restarting the agent %v after the load started", time.Since(load.start).Round(time.Millisecond))
	agent.Restart(t)
	t.Logf("the agent is ready again %v after the load started", time.Since(load.start).Round(time.Millisecond))
	eventually(t, 10*time.Second, "staleness cleared", func() bool { return !upstreamStatus(t, a).Stale })
	registerPlain(t, agent, b3)
	took := eventually(t, time.Second, "a change after the outage", func() bool { return available(a) == 3 })
	t.Logf("a change after the agent returned reached traffic in %v", took)
	load.finish(t)
}

// registerPlain registers b as an instance of user-service without checks.
func registerPlain(t *testing.T, agent *consultest.Agent, b *demoBackend) {
	t.Helper()
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	agent.Register(t, "user-service", discovery.Instance{ID: b.name, Address: host, Port: p, Weight: 1}, nil, nil)
}
