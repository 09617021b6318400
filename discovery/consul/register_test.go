package consul

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
)

// The registration tests read what Remora registered with the test's own
// API client, never through the registry under test.

func registrar(t *testing.T, reg discovery.Registry) discovery.Registrar {
	t.Helper()
	r, ok := reg.(discovery.Registrar)
	if !ok {
		t.Fatalf("%T cannot register", reg)
	}
	return r
}

func regStatus(t *testing.T, g discovery.Registration) discovery.RegistrationStatus {
	t.Helper()
	sr, ok := g.(discovery.StatusReporter)
	if !ok {
		t.Fatalf("%T does not report its status", g)
	}
	return sr.Status()
}

// passing returns the agent's passing instances of service (nil if the
// agent does not answer).
func passing(t *testing.T, a *consultest.Agent, service string) []*api.ServiceEntry {
	t.Helper()
	entries, _, err := a.Client(t).Health().Service(service, "", true, nil)
	if err != nil {
		return nil
	}
	return entries
}

// registeredAs reports whether the agent has exactly one passing instance
// of service with the given Meta (and the same "k=v" tags).
func registeredAs(t *testing.T, a *consultest.Agent, service string, meta map[string]string) bool {
	t.Helper()
	e := passing(t, a, service)
	if len(e) != 1 || len(e[0].Service.Meta) != len(meta) || len(e[0].Service.Tags) != len(meta) {
		return false
	}
	for k, v := range meta {
		if e[0].Service.Meta[k] != v || !strings.Contains(strings.Join(e[0].Service.Tags, ","), k+"="+v) {
			return false
		}
	}
	return e[0].Checks.AggregatedStatus() == api.HealthPassing
}

// pollFor polls cond until it holds or d passes; it fails t on timeout and
// returns how long it took.
func pollFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// An agent killed and started again without its state (a dev agent, a
// fresh node) knows nothing of the service; the registration must notice
// and register it again, with its labels and a passing check.
func TestRegistrationSurvivesAgentWithoutState(t *testing.T) {
	a := consultest.Start(t, consultest.Config{Name: "fresh"})
	reg := open(t, a, "")
	defer reg.Close()
	meta := map[string]string{"canary": "true", "version": "v2"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, "users", discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 100, Metadata: meta})
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "registered", func() bool { return registeredAs(t, a, "users", meta) })

	a.RestartFresh(t)
	took := pollFor(t, 2*time.Second, "registered again after the agent came back without state", func() bool {
		return registeredAs(t, a, "users", meta)
	})
	t.Logf("registered again %v after the fresh agent answered", took)
	if st := regStatus(t, g); !st.Up || st.Reregistrations < 1 || st.LastError == "" {
		t.Fatalf("status %+v; want up, re-registered, with the error that showed the loss", st)
	}

	// Update and Deregister still work on the new agent.
	meta2 := map[string]string{"version": "v2"}
	if err := g.Update(ctx, discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 100, Metadata: meta2}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 2*time.Second, "labels updated", func() bool { return registeredAs(t, a, "users", meta2) })
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 2*time.Second, "deregistered", func() bool {
		e, _, err := a.Client(t).Health().Service("users", "", false, nil)
		return err == nil && len(e) == 0
	})
	if err := g.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
}

// A token that may not register: Register keeps the registration and
// retries, and the status shows the refusal.
func TestRegistrationRefusedIsRetried(t *testing.T) {
	a := aclAgent(t)
	tok := a.NewReadToken(t, "users")
	reg := open(t, a, "token: "+tok.SecretID)
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := registrar(t, reg).Register(ctx, "users", discovery.Instance{ID: "denied", Address: "127.0.0.1", Port: 8080, Weight: 1})
	if err != nil {
		t.Fatalf("Register: %v; want the registration kept", err)
	}
	defer g.Deregister(ctx)
	pollFor(t, 5*time.Second, "the status down with Consul's refusal", func() bool {
		st := regStatus(t, g)
		return !st.Up && strings.Contains(st.LastError, "Permission denied")
	})
	if _, err := registrar(t, reg).Register(ctx, "users", discovery.Instance{ID: "denied", Address: "127.0.0.1", Port: 8080}); err == nil ||
		!strings.Contains(err.Error(), "registered already") {
		t.Fatalf("a second Register of the same ID: %v; want an error", err)
	}
}

// The registry's tag is on the instance it registers, so that its own
// watches (which take only instances with the tag) see it; and an update
// the agent would refuse (a label key with a dot) is refused before it
// replaces the registration, which stays as it was, passing.
func TestRegistrationCarriesTheTagAndKeepsItsLastGoodState(t *testing.T) {
	a := mainAgent(t)
	reg := open(t, a, "tag: prod\n")
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	meta := map[string]string{"version": "v2"}
	inst := discovery.Instance{ID: "app-1", Address: "127.0.0.1", Port: 8080, Weight: 100, Metadata: meta}
	g, err := registrar(t, reg).Register(ctx, "tagged", inst)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	w, err := reg.Watch(ctx, "tagged")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	pollFor(t, 5*time.Second, "the registry's own watch sees the instance", func() bool {
		set, err := w.Next(ctx)
		return err == nil && len(set) == 1 && set[0].Metadata["version"] == "v2"
	})
	bad := inst
	bad.Metadata = map[string]string{"version.major": "2"}
	if err := g.Update(ctx, bad); err == nil || !strings.Contains(err.Error(), `key "version.major"`) {
		t.Fatalf("Update with a label key Consul refuses: %v; want it refused, naming the key", err)
	}
	time.Sleep(2 * time.Second) // a few TTL passes
	e := passing(t, a, "tagged")
	if len(e) != 1 || e[0].Service.Meta["version"] != "v2" || e[0].Checks.AggregatedStatus() != api.HealthPassing {
		t.Fatalf("after the refused update: %d passing instances; want the registration as it was", len(e))
	}
	if st := regStatus(t, g); !st.Up {
		t.Fatalf("status %+v after the refused update; want up", st)
	}
}
