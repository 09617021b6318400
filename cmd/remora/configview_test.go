package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/discovery/consul"
	"github.com/remora-mesh/remora/discovery/dns"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/nacos"
	"github.com/remora-mesh/remora/discovery/static"
	"github.com/remora-mesh/remora/pkg/balancer/leastrequest"
	"github.com/remora-mesh/remora/pkg/balancer/ringhash"
	"github.com/remora-mesh/remora/pkg/config"
)

// richConfig sets every block of the schema: listeners with routes and
// header rules, each registry type with its secrets, balancer options,
// health with credentials in probe headers, canary with rollback,
// locality, mirror, register and the top-level durations.
const richConfig = `
admin:
  address: 127.0.0.1:15000
  token: admin-s3cret
  metrics: {node_labels: false}
access_log: {enabled: true, sample: 0.5}
listeners:
  - name: outbound
    address: 127.0.0.1:15001
    forwarded: append
    routes:
      - name: api-v2
        match:
          host: api.internal
          path_prefix: /api/v2/
          methods: [GET, POST]
          headers: [{name: x-beta, value: "1"}, {name: x-debug, present: true}]
        upstream: users
        rewrite: {strip_prefix: true, prefix_rewrite: /v2/}
        request_headers: {add: {x-from: app}, set: {authorization: "Bearer route-s3cret"}, remove: [x-secret]}
        rate_limit: {requests_per_second: 50, burst: 10}
registries:
  - name: main
    type: static
    static:
      services:
        users: [{address: "127.0.0.1:1", metadata: {zone: a}}, {id: u2, address: 127.0.0.2, port: 2, weight: 3, healthy: false}]
        orders: [{address: "127.0.0.1:3"}]
  - name: etcd
    type: etcd
    etcd: {endpoints: [127.0.0.1:2379], username: remora, password: etcd-s3cret, dial_timeout: 3s}
  - name: consul
    type: consul
    consul: {address: 127.0.0.1:8500, token: consul-s3cret, wait_time: 30s}
  - name: nacos
    type: nacos
    nacos: {servers: [127.0.0.1:8848], username: remora, password: nacos-s3cret, access_key: AK, secret_key: nacos-key-s3cret}
  - name: dns
    type: dns
    dns: {resolver: 127.0.0.1:53, timeout: 2s}
  - name: files
    type: static
    static: {file: instances.yaml, poll_interval: 2s}
upstreams:
  - name: users
    registry: main
    balancer: {policy: least_request, choice_count: 3, slow_start: {window: 30s, aggression: 1.5, min_weight_percent: 10}}
    request_headers: {set: {X-Api-Key: key-s3cret, x-tenant: a}}
    response_headers: {remove: [server]}
    health:
      panic_threshold: 0
      passive: {consecutive_5xx: 3, failure_percentage: {threshold: 90}}
      active: {path: /ready, headers: {Authorization: "Bearer probe-s3cret", X-Env: prod}, interval: 2s}
    retry: {max_attempts: 3, statuses: [503]}
    timeouts: {connect: 250ms, per_try: 1s, total: 5s}
    circuit_breaker: {max_requests: 100}
    rate_limit: {requests_per_second: 100}
    locality: {zone: a, min_cluster_size: 1}
    mirror: {upstream: orders, percent: 12.5}
    canary:
      selector: {track: canary}
      weight: 10
      match: [{header: x-user-group, value: beta}]
      hash_on: {header: x-user-id}
      rollback: {error_rate_margin: 5, window: 30s, min_requests: 100}
  - name: orders
    registry: main
    balancer: {policy: ring_hash, hash_on: {header: x-user}, points_per_weight: 10, min_ring_size: 512, max_ring_size: 4096}
    canary: {disabled: true}
  - name: payments
    registry: etcd
    balancer: ewma
    canary: {service: payments-v2}
  - name: search
    registry: consul
    listen: 127.0.0.1:18080
    protocol: tcp
  - name: web
    registry: dns
    service: web.internal:8080
drain_delay: 5s
drain_timeout: 20s
zone: a
register:
  registry: etcd
  service: app
  port: 8080
  metadata: {version: v2}
  health: {type: http, path: /health, headers: {Cookie: "session=cookie-s3cret"}}
  deregister_delay: 3s
`

// /config writes the configuration in its own schema, secrets redacted,
// and what it writes is a configuration: validate accepts it and loading
// it renders the same (a fixed point), in YAML and in JSON.
func TestConfigViewRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		files  map[string]string // beside the config
		want   []string          // in the YAML
		absent []string          // not in either form
	}{
		{"every block", richConfig, map[string]string{"instances.yaml": "services: {a: [{address: \"127.0.0.1:1\"}]}\n"}, []string{
			"connect_timeout: 2s", "drain_delay: 5s", "drain_timeout: 20s", "idle_conn_timeout: 1m30s",
			"choice_count: 3", "min_ring_size: 512", "balancer: ewma", "register:", "deregister_delay: 3s",
			"token: '[redacted]'", "password: '[redacted]'", "secret_key: '[redacted]'", "access_key: AK",
			"Authorization: '[redacted]'", "X-Env: prod", "Cookie: '[redacted]'", "X-Api-Key: '[redacted]'",
			"x-tenant: a", "authorization: '[redacted]'", "x-from: app",
			"panic_threshold: 0", "base_ejection_time: 30s", "weight_key: canary-weight", "percent: 12.5",
			"dial_timeout: 3s", "wait_time: 30s", "max_refresh: 5m\n", "max_ejection_time: 5m\n", "poll_interval: 2s", "sample: 0.5", "disabled: true",
		}, []string{"s3cret", "ConnectTimeout", "000000000"}},
		{"token file and defaults", "admin: {token_file: admin.token}\nregistries: [{name: s, type: static, static: {services: {a: [{address: \"127.0.0.1:1\"}]}}}]\nupstreams: [{name: a}]\n",
			map[string]string{"admin.token": "file-s3cret\n"},
			[]string{"token_file: admin.token", "address: 127.0.0.1:15001", "balancer: round_robin", "max_attempts: 2", "initial_sync_timeout: 10s", "drain_delay: 0s"},
			[]string{"s3cret", "token:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			orig := filepath.Join(dir, "remora.yaml")
			if err := os.WriteFile(orig, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(orig)
			if err != nil {
				t.Fatal(err)
			}
			out := render(t, cfg, "yaml")
			js := render(t, cfg, "json")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("/config lacks %q", w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) || strings.Contains(js, a) {
					t.Errorf("/config shows %q", a)
				}
			}
			// The JSON form is the YAML form's data.
			var fromYAML, fromJSON any
			if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(js), &fromJSON); err != nil {
				t.Fatal(err)
			}
			y, _ := json.Marshal(fromYAML)
			j, _ := json.Marshal(fromJSON)
			if !bytes.Equal(y, j) {
				t.Errorf("the JSON form differs from the YAML form:\nyaml %s\njson %s", y, j)
			}

			// Written beside the original (relative paths stay valid),
			// validate accepts it and it loads into the same config.
			for _, form := range []struct{ name, text string }{{"printed.yaml", out}, {"printed.json", js}} {
				printed := filepath.Join(dir, form.name)
				if err := os.WriteFile(printed, []byte(form.text), 0o600); err != nil {
					t.Fatal(err)
				}
				var stdout, stderr bytes.Buffer
				if code := run([]string{"validate", printed}, &stdout, &stderr); code != 0 {
					t.Fatalf("remora validate %s: exit %d\n%s%s\n%s", form.name, code, stdout.String(), stderr.String(), numbered(form.text))
				}
				again, err := config.Load(printed)
				if err != nil {
					t.Fatal(err)
				}
				if got := render(t, again, "yaml"); got != out {
					t.Errorf("%s does not load into the same config:\nfirst:\n%s\nthen:\n%s", form.name, out, got)
				}
			}
			if testing.Verbose() {
				t.Logf("/config:\n%s", out)
			}
		})
	}
}

func render(t *testing.T, cfg *config.Config, format string) string {
	t.Helper()
	b, err := renderConfig(cfg, format)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(s, "\n") {
		b.WriteString(strings.TrimSpace(strings.Repeat(" ", 4)+string(rune('0'+i%10))) + " " + l + "\n")
	}
	return b.String()
}

// Every field of the schema, the adapters' and policies' options
// included, shows in /config when richConfig sets its block: nothing is
// dropped. (A balancer's options show as written, so richConfig writes
// them all.)
func TestConfigViewKeepsEveryField(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "instances.yaml"), []byte("services: {a: [{address: \"127.0.0.1:1\"}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(richConfig), dir)
	if err != nil {
		t.Fatal(err)
	}
	out := render(t, cfg, "yaml")
	var keys []string
	for _, typ := range []any{config.Config{}, static.Options{}, etcd.Options{}, consul.Options{}, nacos.Options{}, dns.Options{},
		leastrequest.Options{}, ringhash.Options{}} {
		yamlKeys(reflect.TypeOf(typ), "", map[reflect.Type]bool{}, &keys)
	}
	var missing []string
	for _, k := range keys {
		leaf := k[strings.LastIndexByte(k, '.')+1:]
		if !strings.Contains(out, " "+leaf+":") && !strings.HasPrefix(out, leaf+":") && !strings.Contains(out, "\n"+leaf+":") {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("/config of richConfig lacks %d fields:\n%s", len(missing), strings.Join(missing, "\n"))
	}
}
