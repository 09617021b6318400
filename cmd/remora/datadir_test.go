package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/config"
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

// A reload that sets, moves or removes data_dir applies it: the
// upstreams' snapshots are written to the new place from then on, and no
// longer to the old one.
func TestReloadMovesTheDataDir(t *testing.T) {
	b := startBackend(t, "b1")
	dir := t.TempDir()
	yml := func(dataDir string) string {
		return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
%sregistries: [{name: s, type: static, static: {services: {user-service: [{address: %q}]}}}]
upstreams: [{name: user-service}]
`, dataDir, b.srv.Listener.Addr().String())
	}
	parse := func(yml string) *config.Config { // in one directory: only data_dir moves
		cfg, err := config.Parse([]byte(yml), dir)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a, err := startApp(context.Background(), parse(yml("")), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	snapshot := func(dataDir string) string { return filepath.Join(dir, dataDir, "snapshots", "user-service.json") }
	for _, dataDir := range []string{"first", "second"} {
		if err := a.reload(parse(yml(fmt.Sprintf("data_dir: %s\n", dataDir)))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the snapshot written under "+dataDir, func() bool {
			_, err := os.Stat(snapshot(dataDir))
			return err == nil
		})
	}
	if err := os.Remove(snapshot("second")); err != nil {
		t.Fatal(err)
	}
	if err := a.reload(parse(yml(""))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(snapshot("second")); err == nil {
		t.Fatal("a snapshot was written under the data_dir a reload removed")
	}
}
