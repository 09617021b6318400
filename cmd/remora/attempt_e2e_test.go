package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/pkg/admin"
)

// process is `remora run` in a child process (see TestMain), with its
// admin address, its config file and its log.
type process struct {
	admin  string
	path   string
	logs   *syncBuffer
	exited chan struct{} // closed when the process has exited
	proc   *os.Process
	err    error // how it exited (cmd.Wait's error), once exited is closed
}

// exitedOK reports whether the process exited with status 0.
func (p *process) exitedOK() bool {
	<-p.exited
	return p.err == nil
}

// startProcess writes yml (whose admin address must be admin) to a file,
// runs `remora run` on it and waits until /readyz answers 200.
func startProcess(t *testing.T, admin, yml string) *process {
	t.Helper()
	p := launchProcess(t, admin, yml)
	p.waitReady(t)
	return p
}

// launchProcess writes yml (whose admin address must be admin) to a file
// and runs `remora run` on it, waiting until the admin API answers
// /healthz. The process is killed when the test ends.
func launchProcess(t *testing.T, admin, yml string) *process {
	t.Helper()
	path := filepath.Join(t.TempDir(), "remora.yaml")
	(&process{path: path}).write(t, yml)
	return launchProcessAt(t, admin, path)
}

// startProcessAt runs `remora run` on the config file at path (whose
// admin address must be admin) and waits until /readyz answers 200.
func startProcessAt(t *testing.T, admin, path string) *process {
	t.Helper()
	p := launchProcessAt(t, admin, path)
	p.waitReady(t)
	return p
}

// launchProcessAt runs `remora run` on the config file at path, as
// launchProcess does.
func launchProcessAt(t *testing.T, admin, path string) *process {
	t.Helper()
	return launchProcessTo(t, admin, path, nil)
}

// launchProcessTo is launchProcessAt with the process's standard output
// (the access log) going to stdout, unless it is nil.
func launchProcessTo(t *testing.T, admin, path string, stdout io.Writer) *process {
	t.Helper()
	p := &process{admin: admin, path: path, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "REMORA_TEST_MAIN="+strings.Join([]string{"run", "-c", p.path, "--log-format", "json"}, "\n"))
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.proc = cmd.Process
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("remora's log:\n%s", p.logs.String())
		}
	})
	eventually(t, 10*time.Second, "remora's admin API answering", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("remora exited:\n%s", p.logs.String())
		default:
		}
		resp, err := http.Get("http://" + admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return p
}

// write replaces the process's config file with yml in one step (a
// running process reloads it within configPollInterval).
func (p *process) write(t *testing.T, yml string) {
	t.Helper()
	if err := os.WriteFile(p.path+".tmp", []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p.path+".tmp", p.path); err != nil {
		t.Fatal(err)
	}
}

// running reports whether the process has not exited.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitReady waits until /readyz answers 200.
func (p *process) waitReady(t *testing.T) {
	t.Helper()
	admin := p.admin
	eventually(t, 10*time.Second, "remora ready", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// upstreams reads the admin API's view of the upstreams.
func (p *process) upstreams(t *testing.T) []admin.UpstreamStatus {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []admin.UpstreamStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// echoNode answers each line on a connection with "name:line".
func echoNode(t *testing.T, name string) string {
	return testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			fmt.Fprintf(c, "%s:%s\n", name, sc.Text())
		}
	}).Addr().String()
}

// talk opens a connection to addr, sends a line and returns the answer
// ("" when the connection ends without one), leaving the connection open
// when keep is set.
func talk(t *testing.T, addr string, keep bool) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintln(c, "hi")
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !keep {
		c.Close()
	}
	return strings.TrimSpace(line), c
}

func tcpConfig(admin, listen, stable, canary, extra string) string {
	return fmt.Sprintf(`admin: {address: %q}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
access_log: {enabled: true}
registries:
  - name: s
    type: static
    static:
      services:
        svc:
          - {id: stable, address: %q}
          - {id: canary, address: %q, metadata: {canary: "true"}}
upstreams:
  - name: svc
    protocol: tcp
    listen: %q
%s`, admin, stable, canary, listen, extra)
}

// A tcp upstream takes the same attempt path as HTTP: its canary weight
// sends connections to the canary pool (also when only canary nodes are
// up), and every connection gets an access log line.
func TestProcessTCPUpstreamCanary(t *testing.T) {
	adminAddr, listen := freeAddr(t), freeAddr(t)
	stable, canaryNode := echoNode(t, "stable"), echoNode(t, "canary")
	p := startProcess(t, adminAddr, tcpConfig(adminAddr, listen, stable, canaryNode, "    canary: {weight: 100}\n"))
	for i := range 20 {
		if got, _ := talk(t, listen, false); got != "canary:hi" {
			t.Fatalf("connection %d: %q; want the canary's answer", i, got)
		}
	}
	eventually(t, 2*time.Second, "an access log line per connection", func() bool {
		return strings.Count(p.logs.String(), `"protocol":"tcp"`) >= 20
	})
	if !strings.Contains(p.logs.String(), `"pool":"canary"`) {
		t.Fatalf("the access log does not name the canary pool:\n%s", p.logs.String())
	}

	// Only the canary is up: connections still go through.
	dead := deadAddr(t)
	adminAddr, listen = freeAddr(t), freeAddr(t)
	startProcess(t, adminAddr, tcpConfig(adminAddr, listen, dead, canaryNode, "    canary: {weight: 100}\n"))
	for i := range 5 {
		if got, _ := talk(t, listen, false); got != "canary:hi" {
			t.Fatalf("with the stable node down, connection %d: %q", i, got)
		}
	}
}

// circuit_breaker.max_requests bounds a tcp upstream's connections.
func TestProcessTCPUpstreamCircuitBreaker(t *testing.T) {
	adminAddr, listen := freeAddr(t), freeAddr(t)
	stable := echoNode(t, "stable")
	startProcess(t, adminAddr, tcpConfig(adminAddr, listen, stable, stable, "    circuit_breaker: {max_requests: 1}\n"))
	got, first := talk(t, listen, true)
	if got != "stable:hi" {
		t.Fatalf("first connection: %q", got)
	}
	if got, _ := talk(t, listen, false); got != "" {
		t.Fatalf("a second connection while the first is open got %q; want it refused", got)
	}
	first.Close()
	eventually(t, 2*time.Second, "a connection after the first closed", func() bool {
		got, _ := talk(t, listen, false)
		return got == "stable:hi"
	})
}

func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Active probes speak to an h2/TLS upstream as its traffic does: over TLS
// with the upstream's CA and server name, over HTTP/2. Every node passes.
func TestProcessProbesUseTheUpstreamsTLS(t *testing.T) {
	c := &certs{dir: t.TempDir(), t: t}
	_, _, serverCert := c.issue("svc.internal", false)
	caFile := filepath.Join(c.dir, "ca.pem")
	os.WriteFile(caFile, c.caPEM, 0o600)
	var addrs []string
	for range 3 {
		b := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor != 2 {
				http.Error(w, "HTTP/2 only", http.StatusHTTPVersionNotSupported)
				return
			}
			io.WriteString(w, r.URL.Path)
		}))
		b.EnableHTTP2 = true
		b.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}}
		b.StartTLS()
		t.Cleanup(b.Close)
		addrs = append(addrs, b.Listener.Addr().String())
	}
	adminAddr := freeAddr(t)
	var nodes strings.Builder
	for i, a := range addrs {
		fmt.Fprintf(&nodes, "          - {id: n%d, address: %q}\n", i+1, a)
	}
	p := startProcess(t, adminAddr, fmt.Sprintf(`admin: {address: %q}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - name: s
    type: static
    static:
      services:
        svc:
%supstreams:
  - name: svc
    protocol: h2
    tls: {ca_file: %q, server_name: svc.internal}
    health:
      active: {type: http, path: /health, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
`, adminAddr, nodes.String(), caFile))
	// Several probe rounds: a probe that fails takes its node out at once.
	time.Sleep(600 * time.Millisecond)
	eventually(t, 3*time.Second, "every node passing its probes", func() bool {
		ups := p.upstreams(t)
		if len(ups) != 1 || ups[0].Panic || ups[0].Available != 3 {
			return false
		}
		for _, n := range ups[0].Nodes {
			if n.State != "available" || !n.ActiveHealthy || n.LastProbeError != "" {
				return false
			}
		}
		return true
	})
}
