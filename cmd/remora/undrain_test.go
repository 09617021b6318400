package main

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUndrainCannotUndoShutdown: after SIGTERM, while drain_delay keeps
// Remora serving, POST /undrain is refused (409) and /readyz stays 503 —
// a drain asked for on the admin API can be undone, a shutdown cannot.
func TestUndrainCannotUndoShutdown(t *testing.T) {
	adminAddr := freeAddr(t)
	p := startProcess(t, adminAddr, `
admin: {address: `+adminAddr+`}
listeners: [{name: outbound, address: 127.0.0.1:0}]
registries: [{name: s, type: static, static: {services: {a: [{id: a1, address: "127.0.0.1:1"}]}}}]
upstreams: [{name: a}]
drain_delay: 3s
`)
	call := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+adminAddr+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Drain and undrain work while running.
	if code, body := call("POST", "/drain"); code != 200 {
		t.Fatalf("POST /drain: %d %s", code, body)
	}
	if code, body := call("POST", "/undrain"); code != 200 {
		t.Fatalf("POST /undrain: %d %s", code, body)
	}
	if code, body := call("GET", "/readyz"); code != 200 {
		t.Fatalf("GET /readyz after undrain: %d %s; want 200", code, body)
	}

	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "readiness off after SIGTERM", func() bool {
		code, _ := call("GET", "/readyz")
		return code == 503
	})
	code, body := call("POST", "/undrain")
	if code != http.StatusConflict || !strings.Contains(body, "shutting down") {
		t.Errorf("POST /undrain during shutdown: %d %s; want 409 naming the shutdown", code, body)
	}
	if code, body := call("GET", "/readyz"); code != 503 {
		t.Errorf("GET /readyz after a refused undrain: %d %s; want 503", code, body)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("remora did not exit after drain_delay")
	}
}

// A second SIGTERM ends a draining Remora at once.
func TestSecondSignalEndsTheDrain(t *testing.T) {
	adminAddr := freeAddr(t)
	p := startProcess(t, adminAddr, `
admin: {address: `+adminAddr+`}
listeners: [{name: outbound, address: 127.0.0.1:0}]
registries: [{name: s, type: static, static: {services: {a: [{id: a1, address: "127.0.0.1:1"}]}}}]
upstreams: [{name: a}]
drain_delay: 30s
`)
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "draining", func() bool { return strings.Contains(p.logs.String(), "signal received; shutting down") })
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGTERM during the 30 s drain_delay did not end Remora")
	}
}
