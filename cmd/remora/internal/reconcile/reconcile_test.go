package reconcile

import (
	"reflect"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/discovery/discoverytest"
	_ "github.com/remora-mesh/remora/discovery/etcd"
	_ "github.com/remora-mesh/remora/discovery/static"
	_ "github.com/remora-mesh/remora/pkg/balancer/all"
	"github.com/remora-mesh/remora/pkg/config"
)

// base is a configuration with two registries (a static one, s, and an
// etcd one, e), three upstreams (users and orders in e, users with a
// dedicated port; local in s) and a registration in e.
const base = `
registries:
  - {name: s, type: static, static: {services: {local: [{id: l1, address: "127.0.0.1:9000"}]}}}
  - {name: e, type: etcd, etcd: {endpoints: ["127.0.0.1:2379"]}}
upstreams:
  - {name: users, registry: e, listen: "127.0.0.1:18080", balancer: {policy: least_request, choice_count: 3}}
  - {name: orders, registry: e}
  - {name: local, registry: s}
register:
  registry: e
  service: app
  id: app-1
  address: 10.0.0.7
  port: 8080
  weight: 100
  metadata: {canary: "true"}
  health: {path: /health, interval: 2s}
`

// edit returns base with each old string replaced by its new one, failing
// the test if one is missing.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	out := base
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(out, pairs[i]) {
			t.Fatalf("base has no %q", pairs[i])
		}
		out = strings.Replace(out, pairs[i], pairs[i+1], 1)
	}
	return out
}

func parse(t *testing.T, yml, dir string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, yml)
	}
	return cfg
}

// keepAll is the plan of base to itself.
func keepAll() Plan {
	return Plan{
		Registries: []Step{{Name: "s"}, {Name: "e"}},
		Upstreams:  []Step{{Name: "users"}, {Name: "orders"}, {Name: "local"}},
		Listeners:  []Step{{Name: "users"}},
		Register:   Keep,
	}
}

// with returns keepAll changed by f.
func with(f func(p *Plan)) Plan {
	p := keepAll()
	f(&p)
	return p
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name     string
		old, new string // YAML; old "" for a start
		newDir   string // the new config's directory; default the old's
		want     Plan
	}{
		{
			name: "start: everything opened, started and bound", new: base,
			want: Plan{
				Registries: []Step{{Name: "s", Action: Open}, {Name: "e", Action: Open}},
				Upstreams:  []Step{{Name: "users", Action: Start}, {Name: "orders", Action: Start}, {Name: "local", Action: Start}},
				Listeners:  []Step{{Name: "users", Action: Bind}},
				Register:   Start,
			},
		},
		{name: "the same config", old: base, new: base, want: keepAll()},
		{
			name: "lines moved and a comment added: nothing changes",
			old:  base, new: "# moved\n\n" + base, want: keepAll(),
		},
		{
			name: "a registry's options changed: reopened, its upstreams restarted with their nodes, the registration replaced",
			old:  base, new: edit(t, `endpoints: ["127.0.0.1:2379"]`, `endpoints: ["127.0.0.1:2380"]`),
			want: with(func(p *Plan) {
				p.Registries[1].Action = Reopen
				p.Upstreams[0] = Step{Name: "users", Action: Restart, CarryNodes: true}
				p.Upstreams[1] = Step{Name: "orders", Action: Restart, CarryNodes: true}
				p.Register = Replace
			}),
		},
		{
			name: "the config file's directory changed: every registry reopened",
			old:  base, new: base, newDir: "elsewhere",
			want: with(func(p *Plan) {
				p.Registries = []Step{{Name: "s", Action: Reopen}, {Name: "e", Action: Reopen}}
				for i := range p.Upstreams {
					p.Upstreams[i].Action, p.Upstreams[i].CarryNodes = Restart, true
				}
				p.Register = Replace
			}),
		},
		{
			name: "data_dir changed: every registry reopened, every upstream restarted with its nodes (snapshots and caches move)",
			old:  base, new: "data_dir: state\n" + base,
			want: with(func(p *Plan) {
				p.Registries = []Step{{Name: "s", Action: Reopen}, {Name: "e", Action: Reopen}}
				for i := range p.Upstreams {
					p.Upstreams[i].Action, p.Upstreams[i].CarryNodes = Restart, true
				}
				p.Register = Replace
			}),
		},
		{
			name: "a registry added and another removed, its upstream moved along",
			old:  base, new: edit(t, "{name: s, type: static", "{name: s2, type: static", "{name: local, registry: s}", "{name: local, registry: s2}"),
			want: with(func(p *Plan) {
				p.Registries = []Step{{Name: "s2", Action: Open}, {Name: "e"}, {Name: "s", Action: Close}}
				p.Upstreams[2] = Step{Name: "local", Action: Restart}
			}),
		},
		{
			name: "a proxy setting of upstream connections changed: every upstream restarted with its nodes",
			old:  base, new: "proxy: {max_response_header_bytes: 4096}\n" + base,
			want: with(func(p *Plan) {
				for i := range p.Upstreams {
					p.Upstreams[i].Action, p.Upstreams[i].CarryNodes = Restart, true
				}
			}),
		},
		{
			name: "a proxy setting of client connections changed: upstreams kept",
			old:  base, new: "proxy: {read_header_timeout: 3s}\n" + base, want: keepAll(),
		},
		{
			name: "an upstream's balancer changed: restarted with its nodes, its port kept",
			old:  base, new: edit(t, "choice_count: 3", "choice_count: 4"),
			want: with(func(p *Plan) { p.Upstreams[0] = Step{Name: "users", Action: Restart, CarryNodes: true} }),
		},
		{
			name: "an upstream's service changed: restarted without its nodes",
			old:  base, new: edit(t, "{name: orders, registry: e}", "{name: orders, registry: e, service: orders-v2}"),
			want: with(func(p *Plan) { p.Upstreams[1] = Step{Name: "orders", Action: Restart} }),
		},
		{
			name: "an upstream moved to another registry: restarted without its nodes",
			old:  base, new: edit(t, "{name: orders, registry: e}", "{name: orders, registry: s}"),
			want: with(func(p *Plan) { p.Upstreams[1] = Step{Name: "orders", Action: Restart} }),
		},
		{
			name: "an upstream removed: stopped, its port drained",
			old:  base, new: edit(t, `  - {name: users, registry: e, listen: "127.0.0.1:18080", balancer: {policy: least_request, choice_count: 3}}`+"\n", ""),
			want: with(func(p *Plan) {
				p.Upstreams = []Step{{Name: "orders"}, {Name: "local"}, {Name: "users", Action: Stop}}
				p.Listeners = []Step{{Name: "users", Action: Drain}}
			}),
		},
		{
			name: "an upstream added with a port",
			old:  base, new: edit(t, "  - {name: local, registry: s}\n", "  - {name: local, registry: s}\n  - {name: pay, registry: e, listen: \"127.0.0.1:18081\"}\n"),
			want: with(func(p *Plan) {
				p.Upstreams = append(p.Upstreams, Step{Name: "pay", Action: Start})
				p.Listeners = append(p.Listeners, Step{Name: "pay", Action: Bind})
			}),
		},
		{
			name: "a port moved: the new one bound, the old one drained, the upstream restarted",
			old:  base, new: edit(t, "127.0.0.1:18080", "127.0.0.1:18090"),
			want: with(func(p *Plan) {
				p.Upstreams[0] = Step{Name: "users", Action: Restart, CarryNodes: true}
				p.Listeners = []Step{{Name: "users", Action: Bind}, {Name: "users", Action: Drain}}
			}),
		},
		{
			name: "a port removed",
			old:  base, new: edit(t, `listen: "127.0.0.1:18080", `, ""),
			want: with(func(p *Plan) {
				p.Upstreams[0] = Step{Name: "users", Action: Restart, CarryNodes: true}
				p.Listeners = []Step{{Name: "users", Action: Drain}}
			}),
		},
		{
			name: "a port's protocol changed: bound anew",
			old:  base, new: edit(t, "{name: users, registry: e,", "{name: users, registry: e, protocol: tcp,", "balancer: {policy: least_request, choice_count: 3}", "balancer: round_robin"),
			want: with(func(p *Plan) {
				p.Upstreams[0] = Step{Name: "users", Action: Restart, CarryNodes: true}
				p.Listeners = []Step{{Name: "users", Action: Bind}, {Name: "users", Action: Drain}}
			}),
		},
		{
			name: "register: metadata changed: in place",
			old:  base, new: edit(t, `metadata: {canary: "true"}`, `metadata: {version: v2}`),
			want: with(func(p *Plan) { p.Register = Reconfigure }),
		},
		{
			name: "register: weight changed: in place",
			old:  base, new: edit(t, "weight: 100", "weight: 50"),
			want: with(func(p *Plan) { p.Register = Reconfigure }),
		},
		{
			name: "register: warm-up added: in place",
			old:  base, new: edit(t, "  weight: 100\n", "  weight: 100\n  warmup: 30s\n"),
			want: with(func(p *Plan) { p.Register = Reconfigure }),
		},
		{
			name: "register: port changed: replaced",
			old:  base, new: edit(t, "port: 8080", "port: 8081"),
			want: with(func(p *Plan) { p.Register = Replace }),
		},
		{
			name: "register: service changed: replaced",
			old:  base, new: edit(t, "service: app", "service: app2"),
			want: with(func(p *Plan) { p.Register = Replace }),
		},
		{
			name: "register: health changed: replaced",
			old:  base, new: edit(t, "interval: 2s", "interval: 3s"),
			want: with(func(p *Plan) { p.Register = Replace }),
		},
		{
			name: "register: another registry: replaced",
			old:  edit(t, "  - {name: s, type: static", "  - {name: e2, type: etcd, etcd: {endpoints: [\"127.0.0.1:2381\"]}}\n  - {name: s, type: static"),
			new:  edit(t, "  - {name: s, type: static", "  - {name: e2, type: etcd, etcd: {endpoints: [\"127.0.0.1:2381\"]}}\n  - {name: s, type: static", "registry: e\n  service", "registry: e2\n  service"),
			want: with(func(p *Plan) {
				p.Registries = []Step{{Name: "e2"}, {Name: "s"}, {Name: "e"}}
				p.Register = Replace
			}),
		},
		{
			name: "register: removed: stopped",
			old:  base, new: base[:strings.Index(base, "register:")],
			want: with(func(p *Plan) { p.Register = Stop }),
		},
		{
			name: "register: added: started",
			old:  base[:strings.Index(base, "register:")], new: base,
			want: with(func(p *Plan) { p.Register = Start }),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var old *config.Config
			if tc.old != "" {
				old = parse(t, tc.old, "here")
			}
			dir := tc.newDir
			if dir == "" {
				dir = "here"
			}
			cfg := parse(t, tc.new, dir)
			got := Diff(old, cfg)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Diff:\n got %+v\nwant %+v", got, tc.want)
			}
			if got.Changed() != !reflect.DeepEqual(got, keepAll()) {
				t.Fatalf("Changed() = %v for %s", got.Changed(), got)
			}
		})
	}
}

// Diff reads its configurations and leaves them as they were.
func TestDiffDoesNotModifyItsInputs(t *testing.T) {
	old, cfg := parse(t, base, "here"), parse(t, edit(t, "port: 8080", "port: 8081"), "here")
	oldCopy, cfgCopy := *old, *cfg
	Diff(old, cfg)
	if !reflect.DeepEqual(*old, oldCopy) || !reflect.DeepEqual(*cfg, cfgCopy) {
		t.Fatal("Diff modified a configuration")
	}
}

func TestPlanString(t *testing.T) {
	for _, tc := range []struct {
		plan Plan
		want string
	}{
		{keepAll(), "no change"},
		{Plan{Register: Start}, "register: start"},
		{
			Plan{
				Registries: []Step{{Name: "s"}, {Name: "e", Action: Reopen}},
				Upstreams:  []Step{{Name: "users", Action: Restart, CarryNodes: true}, {Name: "orders", Action: Stop}},
				Listeners:  []Step{{Name: "users", Action: Bind}, {Name: "users", Action: Drain}},
				Register:   Replace,
			},
			"registries: reopen e; upstreams: restart users (with its nodes), stop orders; listeners: bind users, drain users; register: replace",
		},
	} {
		if got := tc.plan.String(); got != tc.want {
			t.Errorf("%+v: %q; want %q", tc.plan, got, tc.want)
		}
	}
}

// An edit elsewhere in the file moves an upstream's lines but must not
// rebuild it on reload; a changed option must.
func TestSameUpstreamIgnoresPositions(t *testing.T) {
	first := func(yml string) config.Upstream {
		t.Helper()
		return parse(t, yml, ".").Upstreams[0]
	}
	const body = `registries: [{name: s, type: static}]
upstreams:
  - name: users
    balancer: {policy: least_request, choice_count: 3}
    retry: {max_attempts: 3}
`
	a := first(body)
	for _, tc := range []struct {
		name, yml string
		same      bool
	}{
		{"lines moved", "# a comment\n\n" + body, true},
		{"a balancer option changed", strings.Replace(body, "choice_count: 3", "choice_count: 4", 1), false},
		{"the retry policy changed", strings.Replace(body, "max_attempts: 3", "max_attempts: 2", 1), false},
	} {
		if got := SameUpstream(a, first(tc.yml)); got != tc.same {
			t.Errorf("%s: SameUpstream = %v; want %v", tc.name, got, tc.same)
		}
	}
}

func TestInPlace(t *testing.T) {
	reg := func(yml string) config.Config { return *parse(t, yml, "here") }
	old := *reg(base).Register
	for _, tc := range []struct {
		name string
		yml  string
		want bool
	}{
		{"unchanged", base, true},
		{"metadata", edit(t, `metadata: {canary: "true"}`, "metadata: {}"), true},
		{"weight", edit(t, "weight: 100", "weight: 1"), true},
		{"deregister_delay", edit(t, "  weight: 100\n", "  weight: 100\n  deregister_delay: 5s\n"), true},
		{"id", edit(t, "id: app-1", "id: app-2"), false},
		{"address", edit(t, "address: 10.0.0.7", "address: 10.0.0.8"), false},
		{"port", edit(t, "port: 8080", "port: 9090"), false},
		{"health", edit(t, "path: /health", "path: /ready"), false},
	} {
		if got := InPlace(old, *reg(tc.yml).Register); got != tc.want {
			t.Errorf("%s: InPlace = %v; want %v", tc.name, got, tc.want)
		}
	}
}

// An upstream's tls is compared by what its files hold: a reload of an
// unchanged file keeps the upstream (its pools and watch), a rotated
// certificate or CA rebuilds it.
func TestSameUpstreamComparesTLSByContent(t *testing.T) {
	dir := t.TempDir()
	discoverytest.WriteCert(t, dir)
	const yml = `registries: [{name: s, type: static}]
upstreams:
  - name: users
    tls: {ca_file: cert.pem, cert_file: cert.pem, key_file: key.pem}
`
	load := func() config.Upstream { t.Helper(); return parse(t, yml, dir).Upstreams[0] }
	a := load()
	if !SameUpstream(a, load()) {
		t.Fatal("the same files loaded twice: SameUpstream = false; want true")
	}
	discoverytest.WriteCert(t, dir) // rotated: a new key and certificate
	if SameUpstream(a, load()) {
		t.Fatal("rotated files: SameUpstream = true; want false")
	}
}
