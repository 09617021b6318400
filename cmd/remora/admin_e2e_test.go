package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// adminCall calls the admin API of a running Remora.
func adminCall(t *testing.T, a *app, method, path, token string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.addr("admin")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// A running Remora's admin API: /config in YAML and JSON behind the token,
// drain and undrain, the UI page and the text view of /upstreams.
func TestAdminAPIOfRunningRemora(t *testing.T) {
	a := startRemora(t, `
admin: {address: 127.0.0.1:0, token: t0ken-s3cret}
listeners: [{name: outbound, address: 127.0.0.1:0}]
registries: [{name: s, type: static, static: {services: {a: [{id: a1, address: "127.0.0.1:1"}]}}}]
upstreams: [{name: a, balancer: {policy: least_request, choice_count: 3}, timeouts: {connect: 250ms}}]
drain_delay: 2s
`)
	const tok = "t0ken-s3cret"
	for _, tc := range []struct {
		method, path, token string
		code                int
		ctype               string
		has                 []string
	}{
		{"GET", "/config", "", 401, "application/json", nil},
		{"GET", "/config", tok, 200, "application/yaml", []string{"choice_count: 3", "connect: 250ms", "drain_delay: 2s", "connect_timeout: 2s", "token: '[redacted]'"}},
		{"GET", "/config?format=json", tok, 200, "application/json", []string{`"choice_count": 3`, `"drain_delay": "2s"`}},
		{"GET", "/config?format=toml", tok, 400, "application/json", []string{"want yaml"}},
		{"GET", "/", "", 200, "text/html", []string{"<title>Remora admin</title>"}},
		{"GET", "/upstreams?format=text", tok, 200, "text/plain", []string{"UPSTREAM", "a1"}},
		{"POST", "/drain", tok, 200, "application/json", []string{`"draining": true`}},
		{"GET", "/readyz", "", 503, "application/json", []string{`"draining": true`}},
		{"POST", "/undrain", tok, 200, "application/json", []string{`"draining": false`}},
		{"GET", "/readyz", "", 200, "application/json", []string{`"ready": true`}},
	} {
		var code int
		var ctype, body string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			code, ctype, body = adminCall(t, a, tc.method, tc.path, tc.token)
			// readiness waits for the first node set
			if code == tc.code || tc.path != "/readyz" || time.Now().After(deadline) {
				break
			}
		}
		if code != tc.code || !strings.HasPrefix(ctype, tc.ctype) {
			t.Fatalf("%s %s: %d %q %s; want %d %q", tc.method, tc.path, code, ctype, body, tc.code, tc.ctype)
		}
		for _, h := range tc.has {
			if !strings.Contains(body, h) {
				t.Errorf("%s %s lacks %q:\n%s", tc.method, tc.path, h, body)
			}
		}
		if strings.Contains(body, "s3cret") {
			t.Errorf("%s %s shows the token:\n%s", tc.method, tc.path, body)
		}
		switch {
		case strings.HasPrefix(ctype, "application/yaml"):
			var v map[string]any
			if err := yaml.Unmarshal([]byte(body), &v); err != nil || v["proxy"] == nil {
				t.Errorf("%s %s: not the config in YAML (%v):\n%s", tc.method, tc.path, err, body)
			}
		case strings.HasPrefix(ctype, "application/json") && tc.path == "/config?format=json":
			var v map[string]any
			if err := json.Unmarshal([]byte(body), &v); err != nil || v["proxy"] == nil {
				t.Errorf("%s %s: not the config in JSON (%v):\n%s", tc.method, tc.path, err, body)
			}
		}
	}
}
