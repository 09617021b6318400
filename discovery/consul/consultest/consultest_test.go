package consultest

import (
	"os"
	"regexp"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testproc"
)

func TestMain(m *testing.M) { Main(m) }

func TestUUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		u, err := uuid()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(u) || seen[u] {
			t.Fatalf("uuid() = %q: not a fresh version-4 UUID", u)
		}
		seen[u] = true
	}
}

func TestFindScript(t *testing.T) {
	p, err := testproc.FindScript(script)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}

// The agent's life cycle: helpers reach the agent, and after Close the
// process has exited and its directory is removed.
func TestAgentLifecycle(t *testing.T) {
	a, err := New(Config{Name: "lifecycle"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if a.Node() != "remora-lifecycle" || a.ManagementToken() != "" {
		t.Fatalf("node %q, token %q", a.Node(), a.ManagementToken())
	}
	in := discovery.Instance{ID: "x", Address: "127.0.0.1", Port: 9, Weight: 3, Metadata: map[string]string{"k": "v"}}
	a.Register(t, "svc", in, []string{"canary"}, &api.AgentServiceCheck{CheckID: "ttl-x", TTL: "10m", Status: api.HealthPassing})
	a.UpdateTTL(t, "ttl-x", api.HealthCritical)
	entries, _, err := a.Client(t).Health().Service("svc", "", false, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("health of svc: %v entries, %v", len(entries), err)
	}
	s := entries[0].Service
	if s.ID != ServiceID("svc", "x") || s.Port != 9 || s.Weights.Passing != 3 || s.Meta["k"] != "v" || len(s.Tags) != 1 {
		t.Fatalf("registered service %+v", s)
	}
	if got := entries[0].Checks.AggregatedStatus(); got != api.HealthCritical {
		t.Fatalf("check status %s; want critical", got)
	}
	a.Deregister(t, "svc", "x")

	a.mu.Lock()
	exited := a.done
	a.mu.Unlock()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited: // the process was waited for
	default:
		t.Fatal("the agent process has not exited after Close")
	}
	if _, err := os.Stat(a.dir); !os.IsNotExist(err) {
		t.Fatalf("data directory %s: %v; want it removed", a.dir, err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
