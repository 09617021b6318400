package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/remora-mesh/remora/discovery/consul"
	_ "github.com/remora-mesh/remora/discovery/dns"
	_ "github.com/remora-mesh/remora/discovery/kubernetes"
	_ "github.com/remora-mesh/remora/discovery/nacos"
	"github.com/remora-mesh/remora/pkg/config"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestErrorGolden")

// badConfigs are configurations with mistakes an operator makes; the
// errors each gives are compared in full with testdata/errors/NAME.golden
// (go test ./pkg/config -run TestErrorGolden -update rewrites them), so that a change
// to any message shows in review. Every error must name the field path,
// and the line of the bad value when the file writes it.
var badConfigs = []struct{ name, yaml string }{
	{"registry-credentials", `
registries:
  - {name: e, type: etcd, etcd: {endpoints: ["http://root:s3cret@127.0.0.1:2379"]}}
  - {name: c, type: consul, consul: {address: "http://bob:s3cret@127.0.0.1:8500"}}
  - {name: n, type: nacos, nacos: {servers: ["nacos:s3cret@127.0.0.1:8848"]}}
upstreams: [{name: a, registry: e}, {name: b, registry: c}, {name: d, registry: n}]
`},
	{"registry-files", `
registries:
  - {name: c, type: consul, consul: {token_file: no-such.token}}
  - {name: e, type: etcd, etcd: {endpoints: [127.0.0.1:2379], username: u, password_file: no-such.pw}}
  - {name: k, type: kubernetes, kubernetes: {kubeconfig: no-such.kubeconfig}}
upstreams: [{name: a, registry: c}, {name: b, registry: e}, {name: d, registry: k, service: "shop/d"}]
`},
	{"service-names", `
registries:
  - {name: k8s, type: kubernetes, kubernetes: {namespace: shop}}
  - {name: dns, type: dns, dns: {}}
upstreams:
  - {name: web, registry: k8s, service: "shop/web:http"}
  - {name: api, registry: k8s, service: "Shop/api"}
  - {name: pay, registry: k8s, service: "shop/pay", canary: {service: "shop/pay canary"}}
  - {name: users, registry: dns}
  - {name: orders, registry: dns, service: "orders.svc:99999"}
  - {name: srv, registry: dns, service: "_http._tcp.srv.example"}
`},
	{"wrong-types-hide-nothing", `
registries:
  - name: main
    type: static
    static:
      services:
        orders: [{address: 127.0.0.1, port: 8081}]
upstreams:
  - name: orders
    registry: mian
    retry: {max_attempts: "two", statuses: [503, "5xx"]}
    timeouts: {per_try: 5, total: 1h}
    circuit_breaker: {max_requests: -1}
    health:
      panic_threshold: 150
`},
	{"typos", `
registry:
  - name: main
    type: static
upstreams:
  - name: orders
    servcie: order-service
    timeout: {total: 5s}
    max_attempts: 3
    health:
      pasive: {consecutive_5xx: 3}
      active: {path: /healthz, intervall: 2s}
`},
	{"bad-durations", `
drain_timeout: soon
drain_delay: 5
proxy:
  connect_timeout: "250"
  idle_conn_timeout: -1s
  read_header_timeout: [10s]
registries: [{name: main, type: static}]
upstreams:
  - name: a
    initial_sync_timeout: 1.5
    timeouts: {connect: 1 s, idle: 30}
`},
	{"numbers-and-booleans", `
admin:
  metrics: {node_labels: maybe}
access_log: {enabled: yes, sample: "half"}
proxy:
  max_idle_conns_per_host: 1.5
  max_header_bytes: 99999999999999999999
  max_response_header_bytes: "65536"
registries: [{name: main, type: static}]
upstreams: [{name: a}]
`},
	{"shapes", `
listeners:
  name: out
  address: 127.0.0.1:15001
registries: [{name: main, type: static}]
upstreams:
  - name: a
    retry: 3
    balancer: [round_robin]
  - b
`},
	{"etcd-options", `
registries:
  - name: main
    type: etcd
    etcd:
      endpoint: [10.0.0.1:2379]
      prefix: services
      dial_timeout: 5
      username: remora
      password: secret
      password_file: etcd.pass
      tls: {cert_file: client.pem}
upstreams: [{name: a}]
`},
	{"etcd-endpoints-not-a-list", `
registries:
  - name: main
    type: etcd
    etcd: {endpoints: 10.0.0.1:2379, dial_timeout: 10m}
`},
	{"consul-options", `
registries:
  - name: dc1
    type: consul
    consul:
      address: consul.internal
      scheme: gopher
      wait_time: 30
      include_warning: sometimes
      token: abc
      token_file: consul.token
      tls: {key_file: client-key.pem}
`},
	{"nacos-options", `
registries:
  - name: nacos
    type: nacos
    nacos:
      servers: [nacos-1:8848, "ftp://nacos-2:8848", nacos-1:8848]
      group: "a@@b"
      clusters: [hz-a, hz-a]
      timeout: 10
      weight_scale: "x"
      username: remora
      namespace_id: dev
`},
	{"static-options", `
registries:
  - name: files
    type: static
    static:
      services:
        orders:
          - {address: 10.0.0.1, port: x}
          - {address: "10.0.0.2:80", port: 81}
          - {port: 80}
          - {address: 10.0.0.3, port: 80, weight: -2, healthy: maybe}
          - {address: 10.0.0.3, port: 80}
      poll_intervall: 1s
`},
	{"registry-blocks", `
registries:
  - name: main
    type: static
    etcd: {endpoints: [10.0.0.1:2379]}
    nmae: other
  - name: main
    type: zookeeper
    zookeeper: {hosts: [zk:2181]}
  - type: etcd
    etcd: {endpoints: [10.0.0.1:2379]}
  - name: x
upstreams: [{name: a, registry: main}]
`},
	{"unknown-policies", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    balancer: rr
  - name: b
    balancer: {policy: least_requests, choice_count: 2}
  - name: c
    balancer: {policy: round_robin, choice_count: 2}
`},
	{"balancer-options", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    balancer: {policy: least_request, choice_count: "two", slow_start: {window: 10, aggression: 0}}
  - name: b
    balancer: {policy: ewma, decay: 1ms, choice_count: 17}
  - name: c
    balancer:
      policy: random
      slow_start:
        window: 30s
        min_weight: 10
  - name: d
    balancer: {policy: weighted_round_robin, slow_start: {window: 2h}}
`},
	{"hash-policies", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    balancer: {policy: maglev, table_size: 1000}
  - name: b
    balancer:
      policy: ring_hash
      hash_on: {header: "x user", cookie: session}
      points_per_weight: 0.5
      min_ring_size: 100
      max_ring_size: 10
  - name: c
    balancer: {policy: ring_hash, hashon: {header: x-user}}
`},
	{"clash-wildcard-and-specific", `
admin: {address: "127.0.0.1:15000"}
listeners:
  - {name: out, address: "0.0.0.0:15001"}
  - {name: local, address: "127.0.0.1:15001"}
registries: [{name: main, type: static}]
upstreams:
  - name: a
    listen: ":15001"
`},
	{"clash-localhost", `
admin: {address: "localhost:15000"}
listeners: [{name: out, address: "127.0.0.1:15000"}]
registries: [{name: main, type: static}]
upstreams: [{name: a, listen: "localhost:0"}, {name: b, listen: "127.0.0.1:0"}]
`},
	{"clash-ipv6", `
admin: {address: "[::1]:15000", token: t}
listeners:
  - {name: v6, address: "[::]:15001"}
  - {name: v4, address: "0.0.0.0:15001"}
registries: [{name: main, type: static}]
upstreams:
  - {name: a, listen: "[::1]:15001"}
  - {name: b, listen: "127.0.0.1:15002"}
  - {name: c, listen: "[::ffff:127.0.0.1]:15002"}
`},
	{"clash-default-listener", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    listen: 0.0.0.0:15001
  - name: b
    listen: 127.0.0.1:15000
`},
	{"bad-addresses", `
admin: {address: "15000"}
listeners:
  - {name: out, address: "127.0.0.1:99999"}
  - {name: out, address: "not a host:80"}
registries: [{name: main, type: static}]
upstreams: [{name: a, listen: "127.0.0.1"}]
`},
	{"bad-routes", `
registries: [{name: main, type: static}]
listeners:
  - name: out
    address: 127.0.0.1:15001
    forwarded: sometimes
    routes:
      - {upstream: a}
      - match: {path: x, path_prefix: /y}
        upstream: nope
      - match: {path_regex: "(", methods: ["G T"], headers: [{name: "x y", value: a, regex: b}]}
        upstream: a
      - match: {path: /z}
        upstream: a
        rewrite: {strip_prefix: true}
        request_headers: {set: {Host: x}, remove: [Connection]}
      - match: {host: example.com, paths: [/a]}
        upstream: a
upstreams:
  - name: a
    routes: [{upstream: a}]
`},
	{"upstream-errors", `
registries:
  - {name: main, type: static}
  - {name: other, type: static}
upstreams:
  - name: User_Service
    registry: main
  - name: orders
  - name: orders
    registry: main
    protocol: http3
  - name: grpc
    registry: main
    protocol: h2
  - name: tcp
    registry: main
    protocol: tcp
`},
	{"tcp-settings", `
registries: [{name: main, type: static}]
upstreams:
  - name: db
    protocol: tcp
    listen: 127.0.0.1:15432
    retry: {max_attempts: 3, statuses: [503]}
    timeouts: {per_try: 1s}
    request_headers: {add: {x-a: b}}
    health: {passive: {consecutive_5xx: 3}}
    canary: {header: x-canary}
    balancer: {policy: maglev, hash_on: {header: x-user}}
`},
	{"register-and-canary", `
registries: [{name: files, type: static}]
register:
  service: orders
  address: 127.0.0.1
  port: "eighty"
  wieght: 10
upstreams:
  - name: a
    canary: {disabled: true, weight: 10, selector: {canary: "yes"}}
  - name: b
    canary: {weight: 150, match: [{header: x-beta}]}
`},
	{"duplicate-keys", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    retry: {max_attempts: 2}
    retry: {max_attempts: 3}
    balancer: {policy: random, policy: round_robin}
`},
	{"anchors", `
defaults: &defaults
  retry: {max_attempts: lots}
  timeouts: {total: 5}
registries: [{name: main, type: static}]
upstreams:
  - name: a
    <<: *defaults
  - name: b
    <<: *defaults
`},
	{"syntax-error", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    retry: {max_attempts: 3
  - name: b
`},
	{"not-a-mapping", `
- registries
- upstreams
`},
	{"header-rules", `
registries: [{name: main, type: static}]
upstreams:
  - name: a
    request_headers:
      set: {Transfer-Encoding: chunked, "bad header": x}
      add: {x-ok: [1, 2]}
      remove: [Connection, x-fine]
    response_headers: {sett: {x: y}}
`},
}

func TestErrorGolden(t *testing.T) {
	if len(badConfigs) < 20 {
		t.Fatalf("%d bad configs; keep at least 20", len(badConfigs))
	}
	seen := map[string]bool{}
	for _, tc := range badConfigs {
		if seen[tc.name] {
			t.Fatalf("two cases named %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			src := strings.TrimPrefix(tc.yaml, "\n")
			_, err := config.Parse([]byte(src), "testdata")
			if err == nil {
				t.Fatal("accepted")
			}
			got := golden(src, err)
			path := filepath.Join("testdata", "errors", tc.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, readErr := os.ReadFile(path)
			if readErr != nil {
				t.Fatalf("%v (run go test ./pkg/config -run TestErrorGolden -update to write it)", readErr)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				for _, bad := range []string{"!!", "cannot unmarshal", "not found in type", "config.", "time.Duration", "int64", "uint32", "yaml:"} {
					if strings.Contains(line, bad) {
						t.Errorf("error %q says %q", line, bad)
					}
				}
			}
		})
	}
}

// golden shows the input with line numbers, so that a reviewer can check
// every error's line, then the errors.
func golden(src string, err error) string {
	var b strings.Builder
	b.WriteString("# input\n")
	for i, line := range strings.Split(strings.TrimSuffix(src, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d | %s\n", i+1, line)
	}
	b.WriteString("# errors\n")
	b.WriteString(err.Error())
	b.WriteString("\n")
	return b.String()
}

// FuzzParseErrors checks the error path of Parse on arbitrary documents,
// seeded with the bad configs: every error is an Error with a line inside
// the document (or none, for a value the file does not write), and no
// message speaks in Go's or YAML's own terms.
func FuzzParseErrors(f *testing.F) {
	for _, tc := range badConfigs {
		f.Add(tc.yaml)
	}
	f.Fuzz(func(t *testing.T, src string) {
		_, err := config.Parse([]byte(src), "testdata")
		if err == nil {
			return
		}
		var es config.Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("%T %v: not Errors", err, err)
		}
		lines := strings.Count(src, "\n") + 2
		for _, e := range es {
			if e.Line < 0 || e.Line > lines {
				t.Fatalf("error %q: line %d of %d", e, e.Line, lines)
			}
			for _, bad := range []string{"!!", "cannot unmarshal", "not found in type", "config.", "time.Duration", "int64", "uint32", "yaml:"} {
				if strings.Contains(e.Msg, bad) && !strings.Contains(src, bad) {
					t.Fatalf("error %q says %q", e, bad)
				}
			}
		}
	})
}
