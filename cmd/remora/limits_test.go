package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/config"
)

func TestRequestLimits(t *testing.T) {
	b := startBackend(t, "b1")
	a := startRemora(t, staticConfig([]string{b.srv.Listener.Addr().String()}, "")+
		"proxy: {max_header_bytes: 4096, read_header_timeout: 200ms}\n")
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })

	t.Run("oversized headers get 431", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
		req.Host = "svc"
		req.Header.Set("X-Big", strings.Repeat("x", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d; want 431", resp.StatusCode)
		}
		if b.hits.Load() != 0 {
			t.Fatal("the oversized request reached the backend")
		}
	})

	t.Run("a slowloris client is cut off", func(t *testing.T) {
		c, err := net.Dial("tcp", a.addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: svc\r\n") // and never finishes
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = bufio.NewReader(c).ReadString('\n')
		if err == nil {
			// Go may answer 408 before closing; then the close follows.
			_, err = bufio.NewReader(c).ReadString('\n')
		}
		if took := time.Since(start); err == nil || took > 2*time.Second {
			t.Fatalf("the half-sent request was held %v (err %v)", took, err)
		}
	})
}

func TestAdminToken(t *testing.T) {
	if _, err := config.Parse([]byte("admin: {address: \"0.0.0.0:0\"}\n"), "."); err == nil || !strings.Contains(err.Error(), "admin.token: required") {
		t.Fatalf("an off-loopback admin without a token: %v", err)
	}
	const yml = "admin: {address: \"127.0.0.1:0\", token: s3cret}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n"
	a := startRemora(t, yml)
	get := func(path, auth string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("admin")+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/upstreams", "/metrics", "/config"} {
		if code := get(path, ""); code != 401 {
			t.Errorf("%s without the token: %d; want 401", path, code)
		}
		if code := get(path, "Bearer wrong"); code != 401 {
			t.Errorf("%s with a wrong token: %d; want 401", path, code)
		}
		if code := get(path, "Bearer s3cret"); code != 200 {
			t.Errorf("%s with the token: %d; want 200", path, code)
		}
	}
	if code := get("/healthz", ""); code != 200 {
		t.Errorf("/healthz must stay open for probes: %d", code)
	}

	// A reload rotates the token: the old one is refused from then on.
	rotated := strings.Replace(yml, "token: s3cret", "token: n3w", 1)
	if err := a.reload(mustParse(t, rotated)); err != nil {
		t.Fatal(err)
	}
	if code := get("/upstreams", "Bearer s3cret"); code != 401 {
		t.Errorf("the old token after a reload that rotated it: %d; want 401", code)
	}
	if code := get("/upstreams", "Bearer n3w"); code != 200 {
		t.Errorf("the new token after the reload: %d; want 200", code)
	}
}

// A reload names the settings it does not apply.
func TestRestartOnlySettings(t *testing.T) {
	const base = "upstreams: [{name: a, protocol: tcp, listen: \"127.0.0.1:0\"}]\nregistries: [{name: s, type: static}]\n"
	old := mustParse(t, base)
	for _, tc := range []struct{ prefix, want string }{
		{"", ""},
		{"proxy: {read_header_timeout: 3s}\n", "proxy.read_header_timeout"},
		{"proxy: {max_header_bytes: 4096}\n", "proxy.max_header_bytes"},
		{"proxy: {connect_timeout: 1s}\n", "proxy.connect_timeout (for tcp ports already bound)"},
		{"proxy: {max_response_header_bytes: 4096}\n", ""}, // applied: the upstreams restart
		{"access_log: {enabled: true}\n", "access_log"},
		{"admin: {metrics: {node_labels: false}}\n", "admin.metrics"},
		{"admin: {token: x}\n", ""}, // applied
	} {
		if got := strings.Join(restartOnly(old, mustParse(t, tc.prefix+base)), ", "); got != tc.want {
			t.Errorf("%q: restartOnly = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}
