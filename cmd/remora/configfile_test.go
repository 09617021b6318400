package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fileTestConfig is a config whose outbound listener is out, with the
// upstream users on backend and, when orders is set, orders too.
func fileTestConfig(adminAddr, out, backend string, orders bool) string {
	yml := fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_timeout: 2s
registries: [{name: s, type: static, static: {services: {users: [{address: %q}]}}}]
upstreams:
  - name: users
`, adminAddr, out, backend)
	if orders {
		yml += "  - {name: orders, service: users}\n"
	}
	return yml
}

// hostCode sends GET / with Host host to out and returns the status (0 on
// a transport error).
func hostCode(out, host string) int {
	req, _ := http.NewRequest(http.MethodGet, "http://"+out+"/", nil)
	req.Host = host
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// keepServing checks for d that users keeps answering 200 on out.
func keepServing(t *testing.T, out string, d time.Duration, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if code := hostCode(out, "users"); code != 200 {
			t.Fatalf("%s: users answered %d; the running config must keep serving", what, code)
		}
	}
}

// A config file truncated and then written (a reader may see it empty
// for an instant, or hold it empty for longer) is not applied while it is
// empty: the running config keeps serving, and the complete file, once
// written, is applied. SIGHUP on an empty file is a rejected reload.
func TestConfigFileTruncatedIsNotApplied(t *testing.T) {
	b := startBackend(t, "b1")
	adminAddr, out := freeAddr(t), freeAddr(t)
	backend := b.srv.Listener.Addr().String()
	p := startProcess(t, adminAddr, fileTestConfig(adminAddr, out, backend, false))
	eventually(t, 5*time.Second, "users served", func() bool { return hostCode(out, "users") == 200 })

	if err := os.Truncate(p.path, 0); err != nil {
		t.Fatal(err)
	}
	keepServing(t, out, 2500*time.Millisecond, "with the config file empty")
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "SIGHUP on the empty file rejected", func() bool {
		return strings.Contains(metricsText(t, adminAddr), "remora_config_last_reload_successful 0")
	})
	keepServing(t, out, 300*time.Millisecond, "after SIGHUP on the empty file")

	// Written in place, as a truncating writer does: applied.
	if err := os.WriteFile(p.path, []byte(fileTestConfig(adminAddr, out, backend, true)), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "orders routable once the file is written", func() bool { return hostCode(out, "orders") == 200 })
	if m := metricsText(t, adminAddr); !strings.Contains(m, "remora_config_last_reload_successful 1") {
		t.Fatalf("after a good reload: want remora_config_last_reload_successful 1")
	}
}

// The file deleted, then created again with another content: the running
// config keeps serving while it is missing, and the new one applies.
func TestConfigFileDeletedThenRecreated(t *testing.T) {
	b := startBackend(t, "b1")
	adminAddr, out := freeAddr(t), freeAddr(t)
	backend := b.srv.Listener.Addr().String()
	p := startProcess(t, adminAddr, fileTestConfig(adminAddr, out, backend, false))
	if err := os.Remove(p.path); err != nil {
		t.Fatal(err)
	}
	keepServing(t, out, 1500*time.Millisecond, "with the config file missing")
	f, err := os.Create(p.path) // empty for a moment, then written
	if err != nil {
		t.Fatal(err)
	}
	keepServing(t, out, 1500*time.Millisecond, "with the config file created empty")
	f.WriteString(fileTestConfig(adminAddr, out, backend, true))
	f.Close()
	eventually(t, 5*time.Second, "orders routable once the file is back", func() bool { return hostCode(out, "orders") == 200 })
}

// A Kubernetes ConfigMap volume: the file is a symlink to
// ..data/remora.yaml, and ..data a symlink swapped atomically to a new
// directory; the old directory is then removed.
func TestConfigMapSymlinkSwap(t *testing.T) {
	b := startBackend(t, "b1")
	adminAddr, out := freeAddr(t), freeAddr(t)
	backend := b.srv.Listener.Addr().String()
	dir := t.TempDir()
	version := func(name, yml string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "remora.yaml"), []byte(yml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_00_00_00.1", fileTestConfig(adminAddr, out, backend, false))
	path := filepath.Join(dir, "remora.yaml")
	if err := os.Symlink(filepath.Join("..data", "remora.yaml"), path); err != nil {
		t.Fatal(err)
	}
	p := startProcessAt(t, adminAddr, path)
	eventually(t, 5*time.Second, "users served", func() bool { return hostCode(out, "users") == 200 })
	version("..2026_01_01_00_01_00.2", fileTestConfig(adminAddr, out, backend, true))
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_00_00.1"))
	eventually(t, 5*time.Second, "orders routable after the swap", func() bool { return hostCode(out, "orders") == 200 })
	version("..2026_01_01_00_02_00.3", fileTestConfig(adminAddr, out, backend, false))
	os.RemoveAll(filepath.Join(dir, "..2026_01_01_00_01_00.2"))
	eventually(t, 5*time.Second, "orders gone after the second swap", func() bool { return hostCode(out, "orders") == 404 })
	keepServing(t, out, 200*time.Millisecond, "after the swaps")
	_ = p
}

// A file written in two steps (a valid prefix first) is not applied
// half-way: poll waits for the content to settle and applies the whole.
func TestFileWatchWaitsForAWriteToSettle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "remora.yaml")
	full := fileTestConfig("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:1", true)
	if err := os.WriteFile(path, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newFileWatch(path)
	w.settle = 300 * time.Millisecond
	prefix := full[:strings.Index(full, "upstreams:")] // valid on its own: no upstreams
	if err := os.WriteFile(path, []byte(prefix), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		os.WriteFile(path, []byte(full+"  - {name: more, service: users}\n"), 0o644)
	}()
	if data, changed := w.poll(testLogger()); changed {
		t.Fatalf("a file still being written was applied:\n%s", data)
	}
	data, changed := w.poll(testLogger())
	if !changed || !strings.Contains(string(data), "name: more") {
		t.Fatalf("the complete file: changed %v, content:\n%s", changed, data)
	}
}

// An invalid config written over the file is rejected with its line and
// field in the log; the running config keeps serving, the reload metric
// is 0 until a good config applies.
func TestInvalidConfigFileRejectedThenFixed(t *testing.T) {
	b := startBackend(t, "b1")
	adminAddr, out := freeAddr(t), freeAddr(t)
	backend := b.srv.Listener.Addr().String()
	p := startProcess(t, adminAddr, fileTestConfig(adminAddr, out, backend, false))
	p.write(t, fileTestConfig(adminAddr, out, backend, false)+"  - {name: orders, service: users, balancer: nope}\n")
	eventually(t, 4*time.Second, "the rejection logged with line and field", func() bool {
		logs := p.logs.String()
		return strings.Contains(logs, "configuration rejected") && strings.Contains(logs, "line 8") && strings.Contains(logs, "upstreams[1].balancer")
	})
	if m := metricsText(t, adminAddr); !strings.Contains(m, "remora_config_last_reload_successful 0") {
		t.Fatal("after a rejected reload: want remora_config_last_reload_successful 0")
	}
	keepServing(t, out, 200*time.Millisecond, "after the rejected reload")
	p.write(t, fileTestConfig(adminAddr, out, backend, true))
	eventually(t, 4*time.Second, "the good config applied", func() bool { return hostCode(out, "orders") == 200 })
	if m := metricsText(t, adminAddr); !strings.Contains(m, "remora_config_last_reload_successful 1") {
		t.Fatal("after a good reload: want remora_config_last_reload_successful 1")
	}
}

// A named pipe put in place of the config file is not read: reading it
// blocked the serve loop for good, and SIGTERM with it. The poll sees no
// change, and a reload is refused, saying why.
func TestFileWatchSkipsWhatIsNoRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "remora.yaml")
	if err := os.WriteFile(path, []byte(fileTestConfig("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:1", true)), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newFileWatch(path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if _, changed := w.poll(testLogger()); changed {
			done <- errors.New("a named pipe was applied")
			return
		}
		_, err := w.read()
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file but a named pipe") {
			t.Fatalf("read of a named pipe: %v; want it refused, naming it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch blocked on a named pipe")
	}
}

// A config file that holds no YAML document — blank, comments only, a
// bare "---" — is never applied: applied, it would stop every upstream.
// The poll sees no change, and a reload (SIGHUP) is refused, saying why.
func TestFileWatchSkipsAFileThatHoldsNoConfiguration(t *testing.T) {
	for _, content := range []string{"", " \n\t\n", "# being rewritten\n", "# a\n\n# b\n", "---\n", "--- # empty\n...\n"} {
		path := filepath.Join(t.TempDir(), "remora.yaml")
		if err := os.WriteFile(path, []byte(fileTestConfig("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:1", true)), 0o644); err != nil {
			t.Fatal(err)
		}
		w := newFileWatch(path)
		w.settle = time.Millisecond
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, changed := w.poll(testLogger()); changed {
			t.Errorf("%q was applied", content)
		}
		if _, err := w.read(); !errors.Is(err, errEmptyConfig) {
			t.Errorf("%q read for a reload: %v; want errEmptyConfig", content, err)
		}
	}
}
