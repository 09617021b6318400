package config_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	_ "github.com/remora-mesh/remora/discovery/etcd"
	_ "github.com/remora-mesh/remora/discovery/static"
	_ "github.com/remora-mesh/remora/pkg/balancer/all"
	"github.com/remora-mesh/remora/pkg/config"
)

const good = `
registries:
  - name: main
    type: static
    static:
      services:
        user-service: [{address: 127.0.0.1, port: 8081}]
upstreams:
  - name: user-service
  - name: orders
    service: order-service
    health:
      passive: {consecutive_gateway_failure: 3, base_ejection_time: 10s}
      active: {path: /healthz, interval: 2s}
    retry: {max_attempts: 3}
    timeouts: {per_try: 1s, total: 5s}
    circuit_breaker: {max_requests: 100}
    listen: 127.0.0.1:18080
    balancer: {policy: round_robin}
    initial_sync_timeout: 3s
`

func TestDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(good), "/etc/remora")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Address != "127.0.0.1:15000" || len(cfg.Listeners) != 1 || cfg.Listeners[0].Address != "127.0.0.1:15001" {
		t.Fatalf("admin %q listeners %+v", cfg.Admin.Address, cfg.Listeners)
	}
	u := cfg.Upstreams[0]
	if u.Service != "user-service" || u.Registry != "main" || u.Balancer.Policy != "round_robin" || u.Balancer.Builder == nil || u.InitialSyncTimeout != 10*time.Second {
		t.Fatalf("upstream defaults: %+v", u)
	}
	o := cfg.Upstreams[1]
	if o.Health.Active == nil || o.Health.Active.Path != "/healthz" || o.Health.Active.UnhealthyThreshold != 3 || *o.Health.Passive.ConsecutiveGatewayFailure != 3 ||
		o.Retry.MaxAttempts != 3 || o.Timeouts.Total != 5*time.Second || o.CircuitBreaker.MaxRequests != 100 || u.Retry.MaxAttempts != 2 || *u.Health.PanicThreshold != 50 {
		t.Fatalf("health/policy: %+v %+v", o.Health, o.Policy)
	}
	if o.Service != "order-service" || o.InitialSyncTimeout != 3*time.Second || o.Listen != "127.0.0.1:18080" {
		t.Fatalf("upstream: %+v", o)
	}
	if cfg.Registries[0].Options == nil || cfg.DrainTimeout != 15*time.Second || cfg.Proxy.ConnectTimeout != 2*time.Second {
		t.Fatalf("config: %+v", cfg)
	}
}

func TestErrorsNameFieldAndValue(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown policy", `
registries: [{name: main, type: static}]
upstreams: [{name: a}, {name: b, balancer: rr}]`, []string{`upstreams[1].balancer: unknown policy "rr"; known: `, "round_robin"}},
		{"unknown registry type", `
registries: [{name: main, type: zookeeper}]`, []string{`registries[0].type: unknown registry type "zookeeper"; known: `, "static"}},
		{"unknown registry reference", `
registries: [{name: main, type: static}, {name: other, type: static}]
upstreams: [{name: a, registry: mian}, {name: b}]`, []string{`upstreams[0].registry: unknown registry "mian"; known: "main", "other"`, `upstreams[1].registry: missing; there are 2 registries`}},
		{"no registries", `upstreams: [{name: a}]`, []string{"upstreams[0].registry: missing, and no registries are configured"}},
		{"bad upstream name", `
registries: [{name: main, type: static}]
upstreams: [{name: User_Service}, {name: ""}]`, []string{`upstreams[0].name: "User_Service" is not a lower-case host name`, "upstreams[1].name: missing"}},
		{"duplicate upstream", `
registries: [{name: main, type: static}]
upstreams: [{name: a}, {name: a}]`, []string{`upstreams[1].name: duplicate upstream name "a"`}},
		{"bad addresses", `
admin: {address: "15000"}
listeners: [{name: out, address: "127.0.0.1:99999"}]`, []string{`admin.address: "15000": want host:port`, `listeners[0].address: "127.0.0.1:99999": bad port`}},
		{"address clash", `
listeners: [{name: out, address: "127.0.0.1:15000"}]`, []string{`listeners[0].address: address "127.0.0.1:15000" is already used by admin.address`}},
		{"adapter option error", `
registries: [{name: main, type: static, static: {services: {a: [{address: h}]}}}]`, []string{"line 2, column 65: registries[0].static.services.a[0].port: missing; set port, or write the address as host:port"}},
		{"adapter unknown option", `
registries: [{name: main, type: static, static: {servics: {}}}]`, []string{"line 2, column 50: registries[0].static.servics: unknown field; did you mean services?"}},
		{"options under the wrong key", `
registries: [{name: main, type: static, etcd: {endpoints: [x]}}]`, []string{`line 2, column 41: registries[0].etcd: a static registry takes its options under static:, not etcd:`}},
		{"unknown top-level field", `upstream: []`, []string{`line 1, column 1: upstream: unknown field; did you mean upstreams?`}},
		{"bad duration", `drain_timeout: soon`, []string{"drain_timeout", "soon"}},
		{"negative duration", `drain_timeout: -1s`, []string{"drain_timeout: -1s is negative"}},
		{"health and policy errors", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    health: {panic_threshold: 150, passive: {max_ejection_percent: -1}, active: {type: icmp}}
    retry: {max_attempts: 20, statuses: [99]}
    timeouts: {per_try: -1s}`, []string{"upstreams[0].health.panic_threshold: 150", "upstreams[0].health.passive.max_ejection_percent: -1 is negative",
			`upstreams[0].health.active.type: unknown probe type "icmp"`, "upstreams[0].retry.max_attempts: 20", "upstreams[0].retry.statuses[0]: 99", "upstreams[0].timeouts.per_try: -1s is negative"}},
		{"a probe's Host in its headers", `
registries: [{name: main, type: static}]
upstreams: [{name: a, health: {active: {type: http, headers: {host: api.internal}}}}]`, []string{
			`line 3, column 63: upstreams[0].health.active.headers.host: a probe's Host is set by host:, not headers; write host: "api.internal"`}},
		{"probe headers a probe would not send as written", `
registries: [{name: main, type: static}]
upstreams: [{name: a, health: {active: {headers: {Connection: close, "x y": "1", X-Probe: "1", x-probe: "2"}}}}]`, []string{
			"line 3, column 51: upstreams[0].health.active.headers.Connection: Connection belongs to the connection, not the probe's request; it cannot be set",
			`upstreams[0].health.active.headers: "x y": not a header name`,
			"upstreams[0].health.active.headers.x-probe: the same header as X-Probe; write it once"}},
		{"register health errors", `
registries: [{name: e, type: etcd, etcd: {endpoints: [127.0.0.1:2379]}}]
register:
  service: app
  port: 8080
  health: {type: grpc, path: /x, expected_statuses: ["200"], headers: {host: a}}`, []string{
			"line 6, column 30: register.health.path: a grpc probe calls grpc.health.v1.Health/Check",
			"line 6, column 53: register.health.expected_statuses: a grpc probe passes on SERVING only",
			`line 6, column 72: register.health.headers.host: a probe's Host is set by host:, not headers; write host: "a"`}},
		{"probe fields their type does not use", `
registries: [{name: main, type: static}]
upstreams:
  - {name: a, health: {active: {type: tcp, path: /ready, host: a.internal, headers: {x-probe: "1"}, expected_statuses: ["200"]}}}
  - {name: b, health: {active: {type: grpc, path: /ready, expected_statuses: ["200"], headers: {grpc-timeout: 1S, ":authority": b.internal}}}}
  - {name: c, health: {active: {service: users}}}`, []string{
			"line 4, column 50: upstreams[0].health.active.path: a tcp probe only connects; path is for http probes",
			"upstreams[0].health.active.host: a tcp probe only connects; host is for http probes (Host) and grpc probes (:authority)",
			"upstreams[0].health.active.headers: a tcp probe only connects; headers are for http probes and grpc probes (metadata)",
			"upstreams[0].health.active.expected_statuses: a tcp probe only connects; expected_statuses is for http probes",
			"line 5, column 51: upstreams[1].health.active.path: a grpc probe calls grpc.health.v1.Health/Check; path is for http probes (name the service with service:)",
			"upstreams[1].health.active.expected_statuses: a grpc probe passes on SERVING only; expected_statuses is for http probes",
			"upstreams[1].health.active.headers.grpc-timeout: names that begin with grpc- are gRPC's own",
			`line 5, column 96: upstreams[1].health.active.headers: ":authority": a grpc probe's :authority is set by host:, not headers; write host: "b.internal"`,
			"upstreams[2].health.active.service: the grpc.health.v1 service name is for grpc probes"}},
		{"unknown health field", `
registries: [{name: main, type: static}]
upstreams: [{name: a, health: {pasive: {}}}]`, []string{`line 3, column 32: upstreams[0].health.pasive: unknown field; did you mean passive?`}},
		{"route errors", `
registries: [{name: main, type: static}]
listeners:
  - name: out
    address: 127.0.0.1:15001
    forwarded: sometimes
    routes:
      - {upstream: a}
      - {match: {path: /x, path_prefix: /y}, upstream: nope}
      - {match: {path_regex: "(", methods: ["G T"], headers: [{name: "x y", value: a, regex: b}]}, upstream: a}
      - {match: {path: /z}, upstream: a, rewrite: {strip_prefix: true}, request_headers: {set: {Host: x}, remove: [Connection]}}
upstreams:
  - name: a
    routes: [{upstream: a}]`, []string{
			`listeners[0].forwarded: "sometimes"; want keep, append or drop`,
			"listeners[0].routes[0].match: matches every request, so the routes after it are never used; put it last",
			"listeners[0].routes[1].match: set at most one of path, path_prefix and path_regex",
			`listeners[0].routes[1].upstream: unknown upstream "nope"`,
			"listeners[0].routes[2].match.path_regex: error parsing regexp",
			`listeners[0].routes[2].match.methods[0]: "G T" is not a method`,
			`listeners[0].routes[2].match.headers[0].name: "x y" is not a header name`,
			"listeners[0].routes[2].match.headers[0]: set one of value, regex and present",
			"listeners[0].routes[3].rewrite.strip_prefix: needs match.path_prefix",
			"listeners[0].routes[3].request_headers.set.Host: Host belongs to the connection",
			"listeners[0].routes[3].request_headers.remove[0]: Connection belongs to the connection",
			"upstreams[0].routes: routes need the upstream's own http listen port"}},
		{"mirror errors", `
registries: [{name: main, type: static}]
upstreams:
  - {name: a, mirror: {upstream: a, percent: 10}}
  - {name: b, mirror: {upstream: nope, percent: 0}}
  - {name: c, mirror: {percent: 10}}
  - {name: d, canary: {disabled: true}, mirror: {canary: true, percent: 10}}
  - {name: e, canary: {disabled: true}, mirror: {upstream: e, percent: 10}}`, []string{
			`upstreams[0].mirror.upstream: "a" is this upstream`,
			`upstreams[1].mirror.upstream: unknown upstream "nope"`, "upstreams[1].mirror.percent: 0; want a share above 0",
			"upstreams[2].mirror.upstream: set either upstream",
			`line 7, column 58: upstreams[3].mirror.canary: upstream "d" has canary.disabled: true, so it has no canary pool and every copy would be dropped; mirror to another upstream (mirror.upstream), or remove canary.disabled`,
			`upstreams[4].mirror.upstream: "e" is this upstream; mirror to another upstream (its canary pool is disabled)`}},
		{"routes and copies to a tcp upstream", `
registries: [{name: main, type: static}]
listeners:
  - {name: out, address: 127.0.0.1:15001, routes: [{match: {path_prefix: /db}, upstream: db}]}
upstreams:
  - {name: db, protocol: tcp, listen: 127.0.0.1:15432}
  - {name: a, listen: 127.0.0.1:15002, routes: [{upstream: db}], mirror: {upstream: db, percent: 10}}`, []string{
			`listeners[0].routes[0].upstream: "db" is a tcp upstream`,
			`upstreams[1].routes[0].upstream: "db" is a tcp upstream`,
			`upstreams[1].mirror.upstream: "db" is a tcp upstream`}},
		{"rate limit and gRPC retry errors", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    retry: {grpc_statuses: [UNAVAILABLE, NOT_A_CODE, "17"]}
    rate_limit: {requests_per_second: 0}
  - name: b
    rate_limit: {requests_per_second: 10, burst: -1}`, []string{
			`upstreams[0].retry.grpc_statuses[1]: "NOT_A_CODE" is not a gRPC code`, `upstreams[0].retry.grpc_statuses[2]: "17" is not a gRPC code`,
			"upstreams[0].rate_limit.requests_per_second: 0; want a positive rate", "upstreams[1].rate_limit.burst: -1 is negative"}},
		{"settings a tcp upstream cannot honour", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    protocol: tcp
    listen: 127.0.0.1:0
    retry: {max_attempts: 3, statuses: [503]}
    timeouts: {per_try: 1s}
    tls: {insecure_skip_verify: true}
    health: {passive: {consecutive_5xx: 3, error_statuses: ["500-599"]}}
    canary: {header: x-c, match: [{header: x-beta, value: "1"}], hash_on: {cookie: s}, rollback: {latency_p99_margin: 0.5}}
    balancer: {policy: maglev, hash_on: {header: x-user}}`, []string{
			"upstreams[0].canary.rollback.latency_p99_margin: a tcp connection has no answer to time",
			"upstreams[0].retry.max_attempts: has no meaning for a tcp upstream", "upstreams[0].retry.statuses: has no meaning",
			"upstreams[0].timeouts.per_try: a tcp connection has no response", "upstreams[0].tls: a tcp upstream relays bytes",
			"upstreams[0].health.passive.consecutive_5xx:", "upstreams[0].health.passive.error_statuses:",
			"upstreams[0].canary.header:", "upstreams[0].canary.match:", "upstreams[0].canary.hash_on:",
			"upstreams[0].balancer.hash_on: a tcp connection has no request to hash; use source_ip"}},
		{"an access log sample of 0", `
registries: [{name: main, type: static}]
access_log: {enabled: true, sample: 0}
upstreams: [{name: a}]`, []string{"access_log.sample: 0 would log nothing; set access_log.enabled: false for that, or a share above 0 up to 1"}},
		{"canary disabled with other fields", `
registries: [{name: main, type: static}]
upstreams: [{name: a, canary: {disabled: true, weight: 10, match: [{header: x, value: y}]}}]`, []string{
			"upstreams[0].canary.disabled: the canary rule is off, so weight and match cannot apply; remove them or disabled"}},
		{"balancer option error", `
registries: [{name: main, type: static}]
upstreams: [{name: a, balancer: {policy: round_robin, bogus: 1}}]`, []string{"line 3, column 55: upstreams[0].balancer.bogus: unknown field; no fields are allowed here"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml), ".")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// Addresses that would clash when bound are refused however they are
// written: the same address spelled two ways, or a wildcard and any other
// address on its port, across admin, listeners and dedicated ports.
func TestAddressClashes(t *testing.T) {
	for _, tc := range []struct {
		name, admin, listener, listen string
		want                          string // "" means accepted
	}{
		{"distinct ports", "127.0.0.1:15000", "127.0.0.1:15001", "127.0.0.1:18080", ""},
		{"same address", "127.0.0.1:15000", "127.0.0.1:15000", "", `listeners[0].address: address "127.0.0.1:15000" is already used by admin.address`},
		{"wildcard then specific", "127.0.0.1:15000", "0.0.0.0:15001", "127.0.0.1:15001",
			`upstreams[0].listen: "127.0.0.1:15001" clashes with listeners[0].address, "0.0.0.0:15001", which takes port 15001 on every address`},
		{"specific then wildcard", "127.0.0.1:15000", "127.0.0.1:15001", "0.0.0.0:15001",
			`upstreams[0].listen: "0.0.0.0:15001" takes port 15001 on every address, so it clashes with listeners[0].address, "127.0.0.1:15001"`},
		{"no host is a wildcard", "127.0.0.1:15000", ":15001", "10.1.2.3:15001", `clashes with listeners[0].address, ":15001"`},
		{"IPv6 wildcard and IPv4 wildcard", "127.0.0.1:15000", "[::]:15001", "0.0.0.0:15001", `"0.0.0.0:15001" takes port 15001 on every address`},
		{"IPv6 wildcard and loopback", "127.0.0.1:15000", "[::]:15001", "[::1]:15001", `"[::1]:15001" clashes with listeners[0].address, "[::]:15001"`},
		{"localhost is 127.0.0.1", "localhost:15000", "127.0.0.1:15000", "", `listeners[0].address: "127.0.0.1:15000" is the same address as admin.address, "localhost:15000"`},
		{"mapped IPv4", "127.0.0.1:15000", "[::ffff:127.0.0.1]:15000", "", `is the same address as admin.address`},
		{"host names by name", "127.0.0.1:15000", "proxy.local:15001", "proxy.local:015001", `"proxy.local:015001" is the same address as listeners[0].address`},
		{"IPv4 and IPv6 loopback differ", "127.0.0.1:15000", "127.0.0.1:15001", "[::1]:15001", ""},
		{"port 0 never clashes", "127.0.0.1:15000", "0.0.0.0:0", "127.0.0.1:0", ""},
		{"the default listener", "127.0.0.1:15000", "", "0.0.0.0:15001",
			`upstreams[0].listen: "0.0.0.0:15001" takes port 15001 on every address, so it clashes with listeners[0].address (the default), "127.0.0.1:15001"`},
		{"the default admin address, reported where written", "", "", "127.0.0.1:15000",
			`upstreams[0].listen: address "127.0.0.1:15000" is already used by admin.address (the default)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := "registries: [{name: main, type: static}]\n"
			if tc.admin != "" {
				yml += fmt.Sprintf("admin: {address: %q, token: t}\n", tc.admin)
			}
			if tc.listener != "" {
				yml += fmt.Sprintf("listeners: [{name: out, address: %q}]\n", tc.listener)
			}
			yml += "upstreams: [{name: a}]\n"
			if tc.listen != "" {
				yml = strings.Replace(yml, "{name: a}", fmt.Sprintf("{name: a, listen: %q}", tc.listen), 1)
			}
			_, err := config.Parse([]byte(yml), ".")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "":
			case err == nil:
				t.Fatal("accepted")
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			case strings.Count(err.Error(), "\n") != 0:
				t.Fatalf("more than one error: %v", err)
			}
		})
	}
}

// register: needs a registry whose type can announce an instance; validate
// refuses the others as run does, naming the field.
func TestRegisterNeedsARegistryThatCanRegister(t *testing.T) {
	const refused = "which cannot register instances"
	for _, tc := range []struct {
		name, yaml string
		want       string // "" means accepted
	}{
		{"the only registry is static", `
registries: [{name: files, type: static}]
register: {service: a, address: 127.0.0.1, port: 8080}`,
			`register.registry: registry "files" is of type static, which cannot register instances; use `},
		{"a static registry named", `
registries: [{name: main, type: etcd, etcd: {endpoints: ["127.0.0.1:2379"]}}, {name: files, type: static}]
register: {registry: files, service: a, address: 127.0.0.1, port: 8080}`,
			`register.registry: registry "files" is of type static, which cannot register instances; use consul, etcd or nacos`},
		{"etcd", `
registries: [{name: main, type: etcd, etcd: {endpoints: ["127.0.0.1:2379"]}}, {name: files, type: static}]
register: {registry: main, service: a, address: 127.0.0.1, port: 8080}`, ""},
		{"an unknown registry is reported as unknown only", `
registries: [{name: files, type: static}, {name: other, type: static}]
register: {registry: nope, service: a, address: 127.0.0.1, port: 8080}`, `register.registry: unknown registry "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseWants(t, tc.yaml, tc.want)
			if strings.Contains(tc.want, "unknown") && strings.Contains(err.Error(), refused) {
				t.Fatalf("error %q also says the unknown registry cannot register", err)
			}
		})
	}
}

// kubeconfig writes a kubeconfig file for an API server at server.
func kubeconfig(t *testing.T, server string) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// validate refuses register: on exactly the registry types whose opened
// registries are not a discovery.Registrar (which run refuses), for every
// type this test binary imports.
func TestRegisterRefusalMatchesTheCapability(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String() // nothing answers here: an etcd client only retries
	ln.Close()
	options := map[string]string{"static": "{}", "etcd": fmt.Sprintf("{endpoints: [%q]}", closed),
		"consul": fmt.Sprintf("{address: %q}", closed), "nacos": fmt.Sprintf("{servers: [%q]}", closed),
		"dns": fmt.Sprintf("{resolver: %q}", closed), "kubernetes": fmt.Sprintf("{kubeconfig: %q}", kubeconfig(t, "http://"+closed))}
	for _, typ := range discovery.Types() {
		t.Run(typ, func(t *testing.T) {
			opts, ok := options[typ]
			if !ok {
				t.Fatalf("no options for registry type %q; add them to this test", typ)
			}
			plain, err := config.Parse([]byte(fmt.Sprintf("registries: [{name: r, type: %s, %s: %s}]\n", typ, typ, opts)), ".")
			if err != nil {
				t.Fatal(err)
			}
			reg, err := plain.Registries[0].Options.Open(discovery.Env{Name: "r"})
			if err != nil {
				t.Fatal(err)
			}
			_, registrar := reg.(discovery.Registrar)
			reg.Close()
			_, err = config.Parse([]byte(fmt.Sprintf("registries: [{name: r, type: %s, %s: %s}]\nregister: {service: a, address: 127.0.0.1, port: 8080}\n", typ, typ, opts)), ".")
			if refused := err != nil && strings.Contains(err.Error(), "cannot register instances"); refused == registrar {
				t.Fatalf("opened registry is a Registrar: %v; validate: %v", registrar, err)
			}
		})
	}
}

// Every upstream has the canary rule: the default one without a canary:
// block, the block's when there is one, none with canary: {disabled: true}.
func TestCanaryRuleByDefault(t *testing.T) {
	for _, tc := range []struct {
		name, upstream string
		rule           string // "none", "default" or "block"
		weight         float64
		selector       string // the selector's canary label
	}{
		{"no canary block", `{name: a}`, "default", 0, "true"},
		{"a tcp upstream", `{name: a, protocol: tcp, listen: "127.0.0.1:0"}`, "default", 0, "true"},
		{"an empty block", `{name: a, canary: {}}`, "block", 0, "true"},
		{"disabled: false", `{name: a, canary: {disabled: false}}`, "block", 0, "true"},
		{"a block overrides", `{name: a, canary: {weight: 5, selector: {canary: "yes"}}}`, "block", 5, "yes"},
		{"disabled", `{name: a, canary: {disabled: true}}`, "none", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("registries: [{name: main, type: static}]\nupstreams: ["+tc.upstream+"]\n"), ".")
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Upstreams[0].CanaryRule
			switch {
			case tc.rule == "none" && r != nil:
				t.Fatalf("rule %+v; want none", r.Config())
			case tc.rule == "none":
			case r == nil:
				t.Fatal("no canary rule")
			case r.IsDefault() != (tc.rule == "default"):
				t.Fatalf("IsDefault = %v; want the %s rule", r.IsDefault(), tc.rule)
			case r.Config().Weight != tc.weight || r.Config().Selector["canary"] != tc.selector || r.Config().WeightKey != "canary-weight":
				t.Fatalf("rule %+v", r.Config())
			}
		})
	}
}

// Header rules may not touch a hop-by-hop header (RFC 9110's, all of which
// ReverseProxy and the h1 codec drop) or the framing ones, in any of the
// four places rules are written and in any of set, add and remove; the
// error names the place and the header.
func TestHeaderRulesRefuseConnectionHeaders(t *testing.T) {
	places := []struct{ name, yaml, path string }{
		{"upstream request", "upstreams: [{name: a, request_headers: RULES}]", "upstreams[0].request_headers"},
		{"upstream response", "upstreams: [{name: a, response_headers: RULES}]", "upstreams[0].response_headers"},
		{"route request", "upstreams: [{name: a}]\nlisteners: [{name: out, address: 127.0.0.1:15001, routes: [{upstream: a, request_headers: RULES}]}]", "listeners[0].routes[0].request_headers"},
		{"route response", "upstreams: [{name: a, listen: 127.0.0.1:15002, routes: [{upstream: a, response_headers: RULES}]}]", "upstreams[0].routes[0].response_headers"},
	}
	for _, h := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"} {
		for _, pl := range places {
			for _, rule := range []struct{ yaml, field string }{
				{"{set: {" + strings.ToLower(h) + ": x}}", "set." + strings.ToLower(h)},
				{"{add: {" + h + ": x}}", "add." + h},
				{"{remove: [" + strings.ToUpper(h) + "]}", "remove[0]"},
			} {
				t.Run(h+"/"+pl.name+"/"+rule.field, func(t *testing.T) {
					src := "registries: [{name: main, type: static}]\n" + strings.ReplaceAll(pl.yaml, "RULES", rule.yaml)
					_, err := config.Parse([]byte(src), ".")
					dir := "request"
					if strings.HasSuffix(pl.path, "response_headers") {
						dir = "response"
					}
					want := fmt.Sprintf("%s.%s: %s belongs to the connection, not the %s; it cannot be changed", pl.path, rule.field, h, dir)
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("error %v\nwant %q", err, want)
					}
				})
			}
		}
	}
}

// A tcp upstream takes what applies to a relayed connection.
func TestTCPUpstreamSettings(t *testing.T) {
	_, err := config.Parse([]byte(`
registries: [{name: main, type: static}]
upstreams:
  - name: a
    protocol: tcp
    listen: 127.0.0.1:0
    timeouts: {connect: 1s, idle: 30s, total: 1h}
    circuit_breaker: {max_requests: 10, max_requests_per_node: 2}
    health: {passive: {consecutive_local_origin_failure: 2}, active: {type: http, port: 9901}}
    canary: {weight: 10, hash_on: {source_ip: true}}
    balancer: {policy: maglev, hash_on: {source_ip: true}}
`), ".")
	if err != nil {
		t.Fatal(err)
	}
}

// An upstream hashing on source_ip behind loopback listeners only gets a
// warning: every request comes from the application's own address.
func TestSourceIPBehindLoopbackWarns(t *testing.T) {
	for _, tc := range []struct {
		name, listener, listen string
		warn                   bool
	}{
		{"loopback listener", "127.0.0.1:15001", "", true},
		{"loopback dedicated port too", "127.0.0.1:15001", "127.0.0.1:18080", true},
		{"a dedicated port others reach", "127.0.0.1:15001", "0.0.0.0:18080", false},
		{"an outside listener", "0.0.0.0:15001", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yml := "registries: [{name: main, type: static}]\nlisteners: [{name: out, address: \"" + tc.listener + "\"}]\n" +
				"upstreams:\n  - name: a\n    balancer: {policy: maglev, hash_on: {source_ip: true}}\n"
			if tc.listen != "" {
				yml += "    listen: \"" + tc.listen + "\"\n"
			}
			cfg, err := config.Parse([]byte(yml), ".")
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(cfg.Warnings, "\n")
			if warned := strings.Contains(got, "upstreams[0].balancer.hash_on.source_ip: every listener that reaches \"a\" is on loopback"); warned != tc.warn {
				t.Fatalf("warnings %q; want a source_ip warning: %v", got, tc.warn)
			}
		})
	}
}

func TestLoadPrefixesFileName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "remora.yaml")
	if err := os.WriteFile(path, []byte("registries: [{name: main, type: static}]\nupstreams: [{name: a, balancer: rr}, {name: a}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !regexp.MustCompile(`^remora\.yaml: line 2, column \d+: upstreams\[`).MatchString(line) {
			t.Errorf("line %q does not start with the file, the line and the field", line)
		}
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("upstreams: [{name: a, balancer: {policy: x}}]"))
	f.Add([]byte("registries: [{name: m, type: static, static: {file: x}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data, ".")
		if err == nil && cfg == nil {
			t.Fatal("nil config without an error")
		}
	})
}

// validate refuses a register: block its registry would refuse whatever
// its state (discovery.RegistrationValidator), naming the field and
// quoting the value; the run would otherwise retry it, refused, for good.
// And an upstream's service its registry's Watch refuses.
func TestRegistryRefusesWhatItCannotHold(t *testing.T) {
	const (
		etcd   = `registries: [{name: r, type: etcd, etcd: {endpoints: ["127.0.0.1:2379"]}}]` + "\n"
		consul = `registries: [{name: r, type: consul, consul: {address: "127.0.0.1:8500"}}]` + "\n"
		nacos  = `registries: [{name: r, type: nacos, nacos: {servers: ["127.0.0.1:8848"]}}]` + "\n"
		reg    = "register: {address: 127.0.0.1, port: 8080, "
	)
	for _, tc := range []struct {
		name, yaml string
		want       string // "" means accepted
	}{
		{"etcd: a plain registration", etcd + reg + "service: users, id: pod-1}", ""},
		{"etcd: a / in the service", etcd + reg + "service: shop/users, id: pod-1}", `register.service: "shop/users": an etcd service name is one segment`},
		{"etcd: a / in the id", etcd + reg + "service: users, id: pod/1}", `register.id: "pod/1": an etcd instance ID`},
		{"etcd: a / in an upstream's service", etcd + "upstreams: [{name: users, service: shop/users}]", `upstreams[0].service: "shop/users": an etcd service name`},
		{"consul: plain labels", consul + reg + "service: users, metadata: {version: v2, canary: \"true\", build_id: a-1}}", ""},
		{"consul: a dot in a label's key", consul + reg + "service: users, metadata: {version.major: \"2\"}}", `register.metadata: key "version.major": Consul takes letters, digits`},
		{"consul: a / in a label's key", consul + reg + "service: users, metadata: {app.kubernetes.io/version: v2}}", `register.metadata: key "app.kubernetes.io/version"`},
		{"consul: Consul's own prefix", consul + reg + "service: users, metadata: {consul-x: a}}", `register.metadata: key "consul-x": the prefix "consul-" is Consul's own`},
		{"consul: a long value", consul + reg + "service: users, metadata: {a: " + strings.Repeat("v", 513) + "}}", `register.metadata: the value of "a" is 513 characters`},
		{"consul: a weight over 65535", consul + reg + "service: users, weight: 70000}", `register.weight: 70000; Consul's weights are 1..65535`},
		{"nacos: plain", nacos + reg + "service: users, weight: 100}", ""},
		{"nacos: group and one cluster", nacos + reg + "service: \"pay@@users@@hz-a\"}", ""},
		{"nacos: two clusters", nacos + reg + "service: \"pay@@users@@hz-a,hz-b\"}", `register.service: service "pay@@users@@hz-a,hz-b" names 2 clusters; an instance is in one cluster`},
		{"nacos: a weight over Nacos' maximum", nacos + reg + "service: users, weight: 20000}", `register.weight: 20000 / weight_scale 1 = 20000 is above Nacos' maximum 10000`},
		{"nacos: too many @@ in an upstream's service", nacos + "upstreams: [{name: users, service: \"g@@users@@a@@b\"}]", `upstreams[0].service: service "g@@users@@a@@b": too many "@@"`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseWants(t, tc.yaml, tc.want) })
	}
}

// parseWants parses yml and fails t unless it is accepted (want "") or
// refused with an error containing want, which it returns.
func parseWants(t *testing.T, yml, want string) error {
	t.Helper()
	_, err := config.Parse([]byte(yml), ".")
	switch {
	case want == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case want == "":
	case err == nil:
		t.Fatal("accepted")
	case !strings.Contains(err.Error(), want):
		t.Fatalf("error %q\ndoes not contain %q", err, want)
	}
	return err
}

// An admin token file that is empty (or blank) is a config error, not
// "no token": on a loopback address that would leave the admin API open
// to every container of the pod. One with a token sets it.
func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"a token", "s3cret\n", ""},
		{"empty", "", "admin.token_file: " + filepath.Join(dir, "empty") + " is empty"},
		{"blank", " \n\t\n", "admin.token_file: " + filepath.Join(dir, "blank") + " is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.Fields(tc.name)[len(strings.Fields(tc.name))-1])
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			yml := fmt.Sprintf("admin: {address: \"127.0.0.1:15000\", token_file: %q}\n", file)
			cfg, err := config.Parse([]byte(yml), dir)
			switch {
			case tc.want == "" && (err != nil || cfg.Admin.Token != "s3cret"):
				t.Fatalf("%v, token %q", err, cfg.Admin.Token)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}
