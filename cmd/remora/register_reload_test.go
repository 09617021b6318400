package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/consul/consultest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/discovery/static"
	"github.com/remora-mesh/remora/pkg/config"
)

// consumer reads the local application's registration from a registry with
// a client of its own, as another service's sidecar would.
type consumer struct {
	name string
	// read returns the registered instance's labels, whether it is
	// registered, and an identity of the registration that changes when it
	// is withdrawn and registered anew (etcd: the key's create revision;
	// Consul: the catalog entry's create index).
	read func(t *testing.T) (labels map[string]string, present bool, identity uint64)
}

// registrationKey is the etcd key of registerBlock's registration.
const registrationKey = "/services/user-service/app-1"

func etcdConsumer(srv *etcdtest.Server) consumer {
	return consumer{name: "etcd " + srv.Endpoint(), read: func(t *testing.T) (map[string]string, bool, uint64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := srv.Client().Get(ctx, registrationKey)
		if err != nil {
			t.Fatalf("reading %s: %v", registrationKey, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, false, 0
		}
		var v struct {
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
			t.Fatalf("%s: %v", registrationKey, err)
		}
		return v.Metadata, true, uint64(resp.Kvs[0].CreateRevision)
	}}
}

func consulConsumer(agent *consultest.Agent) consumer {
	return consumer{name: "consul " + agent.Addr(), read: func(t *testing.T) (map[string]string, bool, uint64) {
		t.Helper()
		entries, _, err := agent.Client(t).Catalog().Service("user-service", "", &api.QueryOptions{AllowStale: false})
		if err != nil {
			t.Fatalf("reading the catalog: %v", err)
		}
		for _, e := range entries {
			if e.ServiceID == consultest.ServiceID("user-service", "app-1") {
				return e.ServiceMeta, true, e.CreateIndex
			}
		}
		return nil, false, 0
	}}
}

func clearConsulEnv(t *testing.T) {
	for _, k := range []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR"} {
		t.Setenv(k, "")
	}
}

// registerWith is registerBlock with other metadata and the registry named.
func registerWith(port int, registry, metadata string) string {
	return fmt.Sprintf(`register:
  registry: %s
  service: user-service
  id: app-1
  address: 127.0.0.1
  port: %d
  metadata: %s
  health: {path: /health, interval: 100ms, healthy_threshold: 1, unhealthy_threshold: 2}
  deregister_delay: 200ms
`, registry, port, metadata)
}

// A reload that changes register.metadata updates the live registration in
// place: a consumer sees the canary label go within a second, and the
// registration is the same one (never withdrawn on the way).
func TestReloadUpdatesRegistrationInPlace(t *testing.T) {
	clearConsulEnv(t)
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) (registries string, c consumer)
	}{
		{"etcd", func(t *testing.T) (string, consumer) {
			srv := etcdtest.Start(t)
			return fmt.Sprintf("registries: [{name: main, type: etcd, etcd: {endpoints: [%q]}}]\n", srv.Endpoint()), etcdConsumer(srv)
		}},
		{"consul", func(t *testing.T) (string, consumer) {
			agent := consultest.Start(t, consultest.Config{Name: "reload-meta"})
			return fmt.Sprintf("registries: [{name: main, type: consul, consul: {address: %q}}]\n", agent.Addr()), consulConsumer(agent)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			registries, c := tc.start(t)
			app := startLocalApp(t, "app")
			base := "admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n" + registries
			a := startRemora(t, base+registerWith(app.port, "main", `{canary: "true", version: v2}`))
			var identity uint64
			eventually(t, 3*time.Second, "registered as a canary", func() bool {
				labels, ok, id := c.read(t)
				identity = id
				return ok && labels["canary"] == "true" && labels["version"] == "v2"
			})

			reloadYAML(t, a, base+registerWith(app.port, "main", `{version: v2}`))
			took := eventually(t, time.Second, "the canary label gone for the consumer", func() bool {
				labels, ok, _ := c.read(t)
				_, canary := labels["canary"]
				return ok && !canary && labels["version"] == "v2"
			})
			t.Logf("seen by the consumer %v after the reload", took)
			if _, _, id := c.read(t); id != identity {
				t.Fatalf("the registration was replaced (identity %d, then %d); want it updated in place", identity, id)
			}
		})
	}
}

// A reload that moves the registration to another registry withdraws it
// from the first and registers it in the second: another etcd under the
// same registry name (the registry is reopened), and a Consul registry
// beside the etcd one.
func TestReloadMovesRegistration(t *testing.T) {
	clearConsulEnv(t)
	head := "admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n"
	for _, tc := range []struct {
		name string
		// setup returns the config before and after, and the consumers
		// of the first and the second registry.
		registry string // the second registry's name
		setup    func(t *testing.T, port int) (before, after string, from, to consumer)
	}{
		{"etcd to another etcd, same registry name", "main", func(t *testing.T, port int) (string, string, consumer, consumer) {
			a, b := etcdtest.Start(t), etcdtest.Start(t)
			cfg := func(srv *etcdtest.Server) string {
				return head + fmt.Sprintf("registries: [{name: main, type: etcd, etcd: {endpoints: [%q]}}]\n", srv.Endpoint()) +
					registerWith(port, "main", `{version: v2}`)
			}
			return cfg(a), cfg(b), etcdConsumer(a), etcdConsumer(b)
		}},
		{"etcd to consul", "dc1", func(t *testing.T, port int) (string, string, consumer, consumer) {
			srv := etcdtest.Start(t)
			agent := consultest.Start(t, consultest.Config{Name: "reload-move"})
			regs := head + fmt.Sprintf("registries:\n  - {name: main, type: etcd, etcd: {endpoints: [%q]}}\n  - {name: dc1, type: consul, consul: {address: %q}}\n",
				srv.Endpoint(), agent.Addr())
			return regs + registerWith(port, "main", `{version: v2}`), regs + registerWith(port, "dc1", `{version: v2}`),
				etcdConsumer(srv), consulConsumer(agent)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := startLocalApp(t, "app")
			before, after, from, to := tc.setup(t, app.port)
			a := startRemora(t, before)
			eventually(t, 3*time.Second, "registered in "+from.name, func() bool { _, ok, _ := from.read(t); return ok })
			reloadYAML(t, a, after)
			took := eventually(t, 2*time.Second, "withdrawn from "+from.name, func() bool { _, ok, _ := from.read(t); return !ok })
			t.Logf("withdrawn from the first registry %v after the reload", took)
			took = eventually(t, 2*time.Second, "registered in "+to.name, func() bool {
				labels, ok, _ := to.read(t)
				return ok && labels["version"] == "v2"
			})
			t.Logf("registered in the second %v later", took)
			if _, ok, _ := from.read(t); ok {
				t.Fatal("registered in the first registry again")
			}
			eventually(t, time.Second, "GET /register showing the registration in "+tc.registry, func() bool {
				st, ok := registerView(t, a.addr("admin"))
				return ok && st.Registry == tc.registry && st.Registered && st.Up
			})
		})
	}
}

// reloadYAML reloads a with yml, read from the directory of a's config
// file (as a reload of the file is).
func reloadYAML(t *testing.T, a *app, yml string) {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), a.config().Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.reload(cfg); err != nil {
		t.Fatal(err)
	}
}

// trackedType is a registry type for tests: a static registry that can
// register, and whose Close records a registration still live in it. Its
// option generation exists only to be changed, so that a reload reopens it.
const trackedType = "tracked"

func init() { discovery.Register(trackedFactory{}) }

type trackedFactory struct{}

func (trackedFactory) Type() string { return trackedType }

// Registers implements discovery.RegistrarFactory: tracked registries can
// register.
func (trackedFactory) Registers() {}

func (trackedFactory) Parse(decode func(any) error) (discovery.Options, error) {
	var o trackedOptions
	if err := decode(&o); err != nil {
		return nil, err
	}
	return &o, nil
}

type trackedOptions struct {
	Generation int `yaml:"generation"`
}

// trackedLog is what every tracked registry of a test did; the tests using
// it do not run in parallel.
var trackedLog = &tracker{}

type tracker struct {
	mu         sync.Mutex
	live       map[string]int // registrations by registry "name/generation"
	violations []string
}

func (tr *tracker) reset() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.live, tr.violations = map[string]int{}, nil
}

func (tr *tracker) add(reg string, d int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.live[reg] += d
}

// closed records a registry's Close.
func (tr *tracker) closed(reg string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if n := tr.live[reg]; n > 0 {
		tr.violations = append(tr.violations, fmt.Sprintf("registry %s closed under %d live registration(s)", reg, n))
	}
}

// state returns the registries with live registrations and the violations.
func (tr *tracker) state() (live []string, violations []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for r, n := range tr.live {
		for range n {
			live = append(live, r)
		}
	}
	slices.Sort(live)
	return live, slices.Clone(tr.violations)
}

func (o *trackedOptions) Open(env discovery.Env) (discovery.Registry, error) {
	return &trackedRegistry{Registry: static.NewRegistry(), id: fmt.Sprintf("%s/%d", env.Name, o.Generation)}, nil
}

type trackedRegistry struct {
	*static.Registry
	id string
}

func (r *trackedRegistry) Register(_ context.Context, _ string, _ discovery.Instance) (discovery.Registration, error) {
	trackedLog.add(r.id, 1)
	return &trackedRegistration{reg: r.id}, nil
}

func (r *trackedRegistry) Close() error {
	trackedLog.closed(r.id)
	return r.Registry.Close()
}

type trackedRegistration struct {
	reg  string
	once sync.Once
}

func (g *trackedRegistration) Update(context.Context, discovery.Instance) error { return nil }

func (g *trackedRegistration) Deregister(context.Context) error {
	g.once.Do(func() { trackedLog.add(g.reg, -1) })
	return nil
}

// A registry is never closed while a registration still lives in it: a
// reload that reopens the registration's registry, moves the registration
// to another registry and removes the old one, or removes the register:
// block with its registry, withdraws the registration first.
func TestReloadNeverClosesARegistryUnderItsRegistration(t *testing.T) {
	app := startLocalApp(t, "app")
	head := "admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n"
	cfg := func(registries, register string) string {
		out := head + "registries:\n"
		for _, r := range strings.Split(registries, ",") {
			name, gen, _ := strings.Cut(r, "/")
			out += fmt.Sprintf("  - {name: %s, type: tracked, tracked: {generation: %s}}\n", name, gen)
		}
		if register != "" {
			out += registerWith(app.port, register, "{version: v2}")
		}
		return out
	}
	steps := []struct {
		name       string
		registries string // name/generation,...
		register   string // the registry registered in, "" for none
		wantLive   []string
	}{
		{"registered", "a/1", "a", []string{"a/1"}},
		{"its registry reopened", "a/2", "a", []string{"a/2"}},
		{"moved to another registry, the old one removed", "b/1", "b", []string{"b/1"}},
		{"another registry added, registration unchanged", "b/1,c/1", "b", []string{"b/1"}},
		{"register: removed with its registry", "c/2", "", nil},
		{"registered again", "c/2", "c", []string{"c/2"}},
	}
	trackedLog.reset()
	cfg0, err := config.Parse([]byte(cfg(steps[0].registries, steps[0].register)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := startApp(context.Background(), cfg0, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			a.close()
		}
	})
	for i, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if i > 0 {
				reloadYAML(t, a, cfg(step.registries, step.register))
			}
			eventually(t, 2*time.Second, fmt.Sprintf("live registrations %v", step.wantLive), func() bool {
				live, violations := trackedLog.state()
				if len(violations) > 0 {
					t.Fatalf("%s", strings.Join(violations, "\n"))
				}
				return slices.Equal(live, step.wantLive)
			})
		})
	}
	a.close()
	closed = true
	if live, violations := trackedLog.state(); len(live) > 0 || len(violations) > 0 {
		t.Fatalf("after shutdown: live %v, violations %v", live, violations)
	}
}
