package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMetricsAccessLogAndConfig(t *testing.T) {
	var access syncBuffer
	accessLogOutput = &access
	defer func() { accessLogOutput = os.Stdout }()
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
access_log: {enabled: true}
registries:
  - {name: s, type: static, static: {services: {user-service: [{id: b1, address: %q}, {id: b2, address: %q}]}}}
  - {name: e, type: etcd, etcd: {endpoints: ["127.0.0.1:1"], username: remora, password: hunter2}}
upstreams: [{name: user-service, registry: s}]
`, b1.srv.Listener.Addr(), b2.srv.Listener.Addr()))
	eventually(t, 5*time.Second, "ready", func() bool { return available(a) == 2 })
	if counts := send(t, a, 10); counts["b1"] != 5 || counts["b2"] != 5 {
		t.Fatalf("spread %v", counts)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
	req.Host = "nowhere"
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()

	resp, err := http.Get("http://" + a.addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`remora_requests_total{code="2xx",pool="stable",upstream="user-service"} 10`,
		`remora_request_duration_seconds_count{pool="stable",upstream="user-service"} 10`,
		`remora_node_requests_total{node="b1",upstream="user-service"} 5`,
		`remora_node_requests_total{node="b2",upstream="user-service"} 5`,
		`remora_nodes{state="available",upstream="user-service"} 2`,
		`remora_registry_updates_total{upstream="user-service"} 1`,
		`remora_active_requests{upstream="user-service"} 0`,
		`remora_registry_stale{upstream="user-service"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	lines := strings.Split(strings.TrimSpace(access.String()), "\n")
	if len(lines) != 11 {
		t.Fatalf("%d access log lines; want 11 (10 proxied, 1 unknown host):\n%s", len(lines), access.String())
	}
	var entry, notFound map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatal(err)
	}
	if entry["upstream"] != "user-service" || entry["status"] != 200.0 || entry["pool"] != "stable" || entry["attempts"] != 1.0 || entry["node"] == "" ||
		entry["request_id"] == nil || entry["upstream_addr"] == nil {
		t.Fatalf("access log entry %v", entry)
	}
	if err := json.Unmarshal([]byte(lines[10]), &notFound); err != nil {
		t.Fatal(err)
	}
	if notFound["status"] != 404.0 || notFound["reason"] != "no_route" || notFound["flag"] != "NR" || notFound["host"] != "nowhere" {
		t.Fatalf("the unknown host's access log entry %v", notFound)
	}

	resp, err = http.Get("http://" + a.addr("admin") + "/config")
	if err != nil {
		t.Fatal(err)
	}
	cfgBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(cfgBody, []byte("hunter2")) || !bytes.Contains(cfgBody, []byte("[redacted]")) || !bytes.Contains(cfgBody, []byte("user-service")) {
		t.Fatalf("/config does not redact the password or lacks the config:\n%s", cfgBody)
	}
}
