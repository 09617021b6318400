package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
)

// The integration tests run against real Consul agents that this file
// starts: one plain agent shared by most tests (and restarted by the
// conformance suite), one with ACLs in default-deny mode. Both are started
// on first use, on free loopback ports, with DNS and gRPC off, and stopped in
// TestMain. The binary comes from $REMORA_CONSUL_BIN or is built (once, then
// cached) by scripts/consul-agent.sh. If it cannot be built or started, the
// tests that need it fail; they are never skipped.

// BinEnv names the environment variable with the path of a Consul binary.
const BinEnv = "REMORA_CONSUL_BIN"

func TestMain(m *testing.M) {
	// The adapter and the Consul API client read these; the tests decide.
	for _, k := range []string{TokenEnv, "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL",
		"CONSUL_NAMESPACE", "CONSUL_PARTITION", "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"} {
		os.Unsetenv(k)
	}
	code := m.Run()
	stopSharedAgents()
	os.Exit(code)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error

	sharedMu     sync.Mutex
	sharedAgents = map[string]*agent{}
	sharedErrs   = map[string]error{}
)

// consulBinary finds the agent binary: $REMORA_CONSUL_BIN, else the output
// of scripts/consul-agent.sh (which builds it on first use).
func consulBinary() (string, error) {
	binOnce.Do(func() {
		if p := os.Getenv(BinEnv); p != "" {
			if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				binErr = fmt.Errorf("$%s=%s is not an executable file (%v)", BinEnv, p, err)
				return
			}
			binPath = p
			return
		}
		script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "consul-agent.sh"))
		if err != nil {
			binErr = err
			return
		}
		var stderr bytes.Buffer
		cmd := exec.Command("bash", script)
		cmd.Stderr = io.MultiWriter(&stderr, os.Stderr) // a cold build takes minutes: show progress
		out, err := cmd.Output()
		if err != nil {
			binErr = fmt.Errorf("building the Consul agent with %s failed: %v\n%s\n(set $%s to a consul binary to use that instead)",
				script, err, tail(stderr.String(), 30), BinEnv)
			return
		}
		binPath = strings.TrimSpace(string(out))
	})
	return binPath, binErr
}

// sharedAgent returns the agent of that kind, starting it on first use.
func sharedAgent(t testing.TB, kind string, acl bool) *agent {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if a := sharedAgents[kind]; a != nil {
		return a
	}
	if err := sharedErrs[kind]; err != nil {
		t.Fatalf("Consul agent %q is not available: %v", kind, err)
	}
	a, err := startAgent(kind, acl)
	if err != nil {
		sharedErrs[kind] = err
		t.Fatalf("Consul agent %q is not available: %v", kind, err)
	}
	sharedAgents[kind] = a
	return a
}

func mainAgent(t testing.TB) *agent { return sharedAgent(t, "main", false) }
func aclAgent(t testing.TB) *agent  { return sharedAgent(t, "acl", true) }

func stopSharedAgents() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	for kind, a := range sharedAgents {
		if err := a.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping Consul agent %q: %v\n", kind, err)
		}
		os.RemoveAll(a.dir)
		delete(sharedAgents, kind)
	}
}

// agent is one Consul server agent process (a single-server cluster that
// keeps its data in dir, so a restart on the same ports keeps the catalog).
type agent struct {
	bin      string
	dir      string
	httpAddr string
	mgmt     string // management token when ACLs are on

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func startAgent(kind string, acl bool) (*agent, error) {
	bin, err := consulBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "remora-consul-"+kind+"-")
	if err != nil {
		return nil, err
	}
	ports := map[string]int{"dns": -1, "grpc": -1, "grpc_tls": -1, "https": -1}
	for _, p := range []string{"http", "server", "serf_lan", "serf_wan"} {
		if ports[p], err = freePort(); err != nil {
			return nil, err
		}
	}
	cfg := map[string]any{
		"node_name":            "remora-" + kind,
		"datacenter":           "dc1",
		"data_dir":             filepath.Join(dir, "data"),
		"server":               true,
		"bootstrap_expect":     1,
		"bind_addr":            "127.0.0.1",
		"client_addr":          "127.0.0.1",
		"advertise_addr":       "127.0.0.1",
		"ports":                ports,
		"performance":          map[string]any{"raft_multiplier": 1},
		"disable_update_check": true,
		"log_level":            "warn",
		"connect":              map[string]any{"enabled": false},
		"ui_config":            map[string]any{"enabled": false},
	}
	a := &agent{bin: bin, dir: dir, httpAddr: "127.0.0.1:" + strconv.Itoa(ports["http"])}
	if acl {
		a.mgmt = "6b9ee4d3-21f2-4b3e-9b1c-" + fmt.Sprintf("%012d", time.Now().UnixNano()%1e12)
		cfg["acl"] = map[string]any{
			"enabled":        true,
			"default_policy": "deny",
			"down_policy":    "extend-cache",
			"tokens":         map[string]any{"initial_management": a.mgmt, "agent": a.mgmt},
		}
	}
	js, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "agent.json"), js, 0o600); err != nil {
		return nil, err
	}
	if err := a.start(); err != nil {
		a.stop()
		os.RemoveAll(dir)
		return nil, err
	}
	return a, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (a *agent) logPath() string { return filepath.Join(a.dir, "agent.log") }

// start runs the agent and waits until it has a leader (and, with ACLs, a
// working management token).
func (a *agent) start() error {
	logf, err := os.OpenFile(a.logPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(a.bin, "agent", "-config-file", filepath.Join(a.dir, "agent.json"))
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("consul agent exited during start-up: %s; its log:\n%s", cmd.ProcessState, a.logTail())
		default:
		}
		if a.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul agent at %s not ready after 60s (no leader); its log:\n%s", a.httpAddr, a.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *agent) ready() bool {
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+a.httpAddr+path, nil)
		if a.mgmt != "" {
			req.Header.Set("X-Consul-Token", a.mgmt)
		}
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, leader := get("/v1/status/leader"); code != 200 || leader == "" || leader == `""` {
		return false
	}
	if a.mgmt != "" {
		if code, _ := get("/v1/acl/token/self"); code != 200 {
			return false
		}
	}
	// The agent's own node must be in the catalog, or services registered
	// now would show up without it.
	code, body := get("/v1/catalog/nodes")
	return code == 200 && strings.Contains(body, `"Node":"remora-`)
}

// stop ends the agent: SIGTERM, then SIGKILL after 10 s.
func (a *agent) stop() error {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	<-done
	return errors.New("did not exit within 10s of SIGTERM; killed")
}

func (a *agent) restart(t testing.TB) {
	t.Helper()
	if err := a.stop(); err != nil {
		t.Logf("stopping the agent: %v", err)
	}
	if err := a.start(); err != nil {
		t.Fatalf("restarting the Consul agent: %v", err)
	}
}

func (a *agent) logTail() string {
	b, _ := os.ReadFile(a.logPath())
	return tail(string(b), 25)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// api returns a Consul API client for the test's own calls (registering
// instances, managing ACLs), with the management token if there is one.
func (a *agent) api(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.httpAddr, Token: a.mgmt})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// open makes a registry on this agent through the "consul" factory, from an
// options block with the agent's address prepended.
func (a *agent) open(t *testing.T, extra string) discovery.Registry {
	t.Helper()
	o, err := parseYAML(t, "address: "+a.httpAddr+"\n"+extra)
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	reg, err := o.Open(discovery.Env{Name: "test", BaseDir: t.TempDir(), Log: testLog})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return reg
}

// testLog is the registries' logger: warnings go to stderr (shown when a
// test fails) and into testLogs, where tests look for leaked secrets.
var testLog, testLogs = func() (*logrus.Entry, *logtest.Hook) {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(os.Stderr)
	return logrus.NewEntry(l).WithField("test", "consul"), logtest.NewLocal(l)
}()

// serviceID is the Consul service ID the tests give instance id of service,
// unique per agent (Consul's service IDs are per agent, not per service).
func serviceID(service, id string) string { return service + "-" + id }

// register creates or replaces an instance through the agent API.
func (a *agent) register(t testing.TB, service string, in discovery.Instance, tags []string, check *api.AgentServiceCheck) {
	t.Helper()
	w := int(in.Weight)
	err := a.api(t).Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID:      serviceID(service, in.ID),
		Name:    service,
		Address: in.Address,
		Port:    in.Port,
		Tags:    tags,
		Meta:    in.Metadata,
		Weights: &api.AgentWeights{Passing: w, Warning: w},
		Check:   check,
	})
	if err != nil {
		t.Fatalf("registering %s/%s: %v", service, in.ID, err)
	}
}

func (a *agent) deregister(t testing.TB, service, id string) {
	t.Helper()
	if err := a.api(t).Agent().ServiceDeregister(serviceID(service, id)); err != nil {
		t.Fatalf("deregistering %s/%s: %v", service, id, err)
	}
}

// watch opens a registry and a watcher on service, both closed at cleanup.
func (a *agent) watch(t *testing.T, service, extra string) discovery.Watcher {
	t.Helper()
	reg := a.open(t, extra)
	t.Cleanup(func() { _ = reg.Close() })
	w, err := reg.Watch(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}
