package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	return len(ents)
}

// rssKiB is the resident memory of process pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}

// 50 reloads in a row, alternating two configs that differ in a
// registry's options, an upstream's balancer, the proxy's client
// settings (every upstream gets a new transport), an upstream with a
// dedicated port and one without, under steady load: no request fails,
// and file descriptors and memory come back to where they were.
func TestReloadStormUnderLoad(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	adminAddr, out, port := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := func(odd bool) string {
		balancer, extra, other, idle := "round_robin", "", "", "90s"
		if odd {
			balancer, idle = "random", "80s"
			extra = fmt.Sprintf("  - {name: orders, service: users, listen: %q}\n", port)
			other = ", other: [{address: \"127.0.0.1:1\"}]"
		}
		return fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_timeout: 2s
proxy: {idle_conn_timeout: %s, max_idle_conns_per_host: 1}
registries: [{name: s, type: static, static: {services: {users: [{id: b1, address: %q}, {id: b2, address: %q}]%s}}}]
upstreams:
  - {name: users, balancer: %s}
%s`, adminAddr, out, idle, b1.srv.Listener.Addr(), b2.srv.Listener.Addr(), other, balancer, extra)
	}
	p := startProcess(t, adminAddr, cfg(false))
	pid := p.proc.Pid
	reloads := func() int { return strings.Count(p.logs.String(), "configuration reloaded") }
	reload := func(odd bool) {
		t.Helper()
		n := reloads()
		p.write(t, cfg(odd))
		if err := p.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the reload applied", func() bool { return reloads() > n })
	}
	// Warm up: both configs once, so that every lazily made thing exists.
	reload(true)
	reload(false)
	// At rest: one idle connection to each node.
	for range 4 {
		hostCode(out, "users")
	}
	fds := openFDs(t, pid)
	load := startLoadTo(out, "users", 8, 2*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	rss := rssKiB(t, pid)
	for i := range 50 {
		reload(i%2 == 0)
	}
	load.finish(t)
	// The last reload went back to the first config: what the other
	// added (a port, connections to its nodes) is gone, and so are the
	// connections of the transports each reload replaced (the proxy
	// settings changed), those in use at the time included.
	var after int
	deadline := time.Now().Add(5 * time.Second)
	for after = openFDs(t, pid); after > fds+2 && time.Now().Before(deadline); after = openFDs(t, pid) {
		time.Sleep(50 * time.Millisecond)
	}
	if after > fds+2 {
		t.Fatalf("open file descriptors: %d before the reloads, %d after:\n%s", fds, after, strings.Join(fdTargets(pid), "\n"))
	}
	if r := rssKiB(t, pid); r > rss+16<<10 {
		t.Errorf("resident memory grew from %d KiB to %d KiB over 50 reloads", rss, r)
	}
	t.Logf("fds %d → %d, rss %d KiB → %d KiB", fds, after, rss, rssKiB(t, pid))
	if m := metricsText(t, adminAddr); !strings.Contains(m, "remora_config_last_reload_successful 1") {
		t.Error("remora_config_last_reload_successful is not 1 after good reloads")
	}
}

// The same storm in process: the goroutine count comes back to where it
// was (no controller, watcher, listener or transport left behind).
func TestReloadStormLeavesNoGoroutines(t *testing.T) {
	b1 := startBackend(t, "b1")
	port := freeAddr(t)
	cfg := func(odd bool) string {
		extra := ""
		if odd {
			extra = fmt.Sprintf("    balancer: random\n  - {name: orders, service: users, listen: %q}\n", port)
		}
		return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
drain_timeout: 2s
registries: [{name: s, type: static, static: {services: {users: [{id: b1, address: %q}]}}}]
upstreams:
  - name: user-service
    service: users
%s`, b1.srv.Listener.Addr(), extra)
	}
	a := startRemora(t, cfg(false))
	for _, odd := range []bool{true, false} {
		if err := a.reload(mustParse(t, cfg(odd))); err != nil {
			t.Fatal(err)
		}
	}
	load := startLoad(t, a, 4)
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := range 50 {
		if err := a.reload(mustParse(t, cfg(i%2 == 0))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	load.finish(t)
	var now int
	eventually(t, 5*time.Second, "goroutines back", func() bool { now = runtime.NumGoroutine(); return now <= before })
	t.Logf("goroutines %d → %d", before, now)
}

// fdTargets lists what process pid's file descriptors point at, with
// each TCP socket's local and remote address, for a failure's message.
func fdTargets(pid int) []string {
	byInode := map[string]string{}
	for _, f := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + f)
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 9 {
				byInode[f[9]] = f[1] + "->" + f[2] + " st=" + f[3]
			}
		}
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(dir + "/" + e.Name())
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			target += " " + byInode[strings.TrimSuffix(inode, "]")]
		}
		out = append(out, target)
	}
	return out
}
