package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A data_dir Remora cannot use, or snapshots it cannot trust, never stop
// it: it starts, serves what it can (a static upstream; an etcd upstream
// whose etcd is down has nothing), and says why in a warning.
func TestProcessStartsWithABadDataDir(t *testing.T) {
	b := startBackend(t, "b1")
	backend := b.srv.Listener.Addr().String()
	leftover := func(dir string) {
		// A crashed Remora's temporary file and a snapshot of another
		// Remora sharing the directory.
		os.MkdirAll(filepath.Join(dir, "snapshots"), 0o755)
		os.WriteFile(filepath.Join(dir, "snapshots", "users.json.tmp-123"), []byte(`{"version":1,`), 0o644)
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string) string // returns the data_dir
		warn  string
	}{
		{"data_dir is a file", func(dir string) string {
			f := filepath.Join(dir, "file")
			os.WriteFile(f, []byte("x"), 0o644)
			return f
		}, "not a directory"},
		{"corrupt snapshot", func(dir string) string {
			leftover(dir)
			os.WriteFile(filepath.Join(dir, "snapshots", "users.json"), []byte("{\"version\":1,\"serv"), 0o644)
			return dir
		}, "ignoring the on-disk snapshot"},
		{"another service's snapshot", func(dir string) string {
			leftover(dir)
			os.WriteFile(filepath.Join(dir, "snapshots", "users.json"),
				[]byte(`{"version":1,"upstream":"users","service":"other","saved_at":"2026-01-01T00:00:00Z","instances":[]}`), 0o644)
			return dir
		}, "written for service"},
		{"empty snapshot", func(dir string) string {
			leftover(dir)
			os.WriteFile(filepath.Join(dir, "snapshots", "users.json"), nil, 0o644)
			return dir
		}, "ignoring the on-disk snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adminAddr, out := freeAddr(t), freeAddr(t)
			dataDir := tc.setup(t.TempDir())
			yml := fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
data_dir: %q
drain_timeout: 1s
registries:
  - {name: s, type: static, static: {services: {local: [{address: %q}]}}}
  - {name: e, type: etcd, etcd: {endpoints: ["127.0.0.1:1"]}}
upstreams:
  - {name: local, registry: s}
  - {name: users, registry: e, initial_sync_timeout: 200ms}
`, adminAddr, out, dataDir, backend)
			p := launchProcess(t, adminAddr, yml)
			eventually(t, 5*time.Second, "the static upstream served", func() bool { return hostCode(out, "local") == 200 })
			eventually(t, 5*time.Second, "a warning: "+tc.warn, func() bool { return strings.Contains(p.logs.String(), tc.warn) })
			if code, waiting := p.readyz(t); code != 503 || len(waiting) != 1 || waiting[0] != "users" {
				t.Fatalf("/readyz: %d waiting for %v; want 503 for users", code, waiting)
			}
			if !p.running() {
				t.Fatal("remora exited")
			}
		})
	}
}
