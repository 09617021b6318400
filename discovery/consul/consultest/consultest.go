// Package consultest runs real Consul agents for tests that need a Consul
// registry: single-server clusters on free loopback ports (HTTP, server
// RPC and Serf; DNS, gRPC and HTTPS off), optionally with ACLs in
// default-deny mode, and helpers to register instances with tags and
// checks, drive TTL checks and mint ACL tokens.
//
// The agent binary is the file named by $REMORA_CONSUL_BIN or else the one
// scripts/consul-agent.sh builds (once, into a cache outside the clone; the
// cold build takes minutes and prints its progress on stderr). If the agent
// cannot be built or started, the test fails with the reason and the tail
// of the agent's log; it is never skipped.
//
// An agent is a separate process, so every agent is stopped by its owner.
// Start starts an agent for one test (and its subtests) and closes it when
// the test ends, through t.Cleanup. Shared returns an agent shared by all
// the tests of a package, started on first use; it needs TestMain to run
// the tests through Main (or Run), which closes the shared agents after the
// last test, and fails the test otherwise:
//
//	func TestMain(m *testing.M) { consultest.Main(m) }
//
// On Linux an agent is also killed by the kernel when the test binary dies
// (a panic, a -timeout), so no agent outlives the tests.
package consultest

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testproc"
)

// BinEnv names the environment variable with the path of a Consul binary to
// use instead of building one.
const BinEnv = "REMORA_CONSUL_BIN"

// script is the build script, relative to the module root.
const script = "scripts/consul-agent.sh"

// Timeouts of the agent's life cycle.
const (
	readyTimeout = 60 * time.Second // start until a leader and the own node
	stopTimeout  = 10 * time.Second // SIGTERM until SIGKILL
)

var binary = testproc.Binary{Env: BinEnv, Script: script, What: "the Consul agent", Kind: "consul"}

// Binary returns the path of the Consul agent binary: $REMORA_CONSUL_BIN if
// set, else the output of scripts/consul-agent.sh, which builds the pinned
// version on first use and reuses it afterwards. The result (or error) is
// computed once per process.
func Binary() (string, error) { return binary.Path() }

// Config describes an agent.
type Config struct {
	// Name tells agents apart: the agent's node is called "remora-<Name>"
	// and its data lives in a temporary directory named after it. Empty
	// means "agent". Shared agents are keyed by it.
	Name string
	// ACL turns ACLs on with default policy "deny"; the agent's own token
	// and ManagementToken are a management token.
	ACL bool
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "agent"
	}
	return c
}

// Agent is one Consul server agent process: a single-server cluster that
// keeps its data in a directory of its own, so Restart on the same ports
// keeps the catalog. Its methods may be called from any goroutine.
type Agent struct {
	cfg      Config
	node     string
	bin      string
	dir      string
	httpAddr string
	mgmt     string // management token when ACLs are on

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   <-chan struct{} // closed when cmd has exited
	closed bool
}

// New starts an agent and waits until it is ready: it has a leader, its
// node is in the catalog and, with ACLs, the management token works. The
// caller must Close it. Most tests want Start or Shared instead.
func New(cfg Config) (*Agent, error) {
	cfg = cfg.withDefaults()
	bin, err := Binary()
	if err != nil {
		return nil, fmt.Errorf("consultest: no Consul agent binary for agent %q: %w", cfg.Name, err)
	}
	a, err := testproc.RetryPortClash(func() (*Agent, error) { return newAgent(cfg, bin) })
	if err != nil {
		return nil, fmt.Errorf("consultest: Consul agent %q: %w", cfg.Name, err)
	}
	return a, nil
}

func newAgent(cfg Config, bin string) (*Agent, error) {
	dir, err := os.MkdirTemp("", "remora-consul-"+cfg.Name+"-")
	if err != nil {
		return nil, err
	}
	ports := map[string]int{"dns": -1, "grpc": -1, "grpc_tls": -1, "https": -1}
	taken := map[int]bool{}
	for _, p := range []string{"http", "server", "serf_lan", "serf_wan"} {
		// Probed ports are released before the next probe, so the kernel
		// may hand the same one out twice: the agent refuses that.
		for ports[p] == 0 || taken[ports[p]] {
			if ports[p], err = testproc.FreePort(); err != nil {
				os.RemoveAll(dir)
				return nil, err
			}
		}
		taken[ports[p]] = true
	}
	a := &Agent{
		cfg: cfg, node: "remora-" + cfg.Name, bin: bin, dir: dir,
		httpAddr: "127.0.0.1:" + strconv.Itoa(ports["http"]),
	}
	agentCfg := map[string]any{
		"node_name":            a.node,
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
	if cfg.ACL {
		if a.mgmt, err = uuid(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		agentCfg["acl"] = map[string]any{
			"enabled":        true,
			"default_policy": "deny",
			"down_policy":    "extend-cache",
			"tokens":         map[string]any{"initial_management": a.mgmt, "agent": a.mgmt},
		}
	}
	js, _ := json.MarshalIndent(agentCfg, "", "  ")
	if err := os.WriteFile(a.configPath(), js, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := a.start(); err != nil {
		_ = a.Close()
		return nil, err
	}
	return a, nil
}

// Start starts an agent for t and closes it when t (with its subtests)
// ends; if t failed, the tail of the agent's log is logged first. It fails
// t if the agent cannot be built or started.
func Start(t testing.TB, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testproc.CloseAtEnd(t, "consultest", "Consul agent", a.cfg.Name, a.LogTail, a.Close)
	return a
}

var shared testproc.Shared[*Agent]

// Shared returns the package-wide agent named cfg.Name, starting it on the
// first call; later calls return the same agent (or fail at once with the
// first call's error). TestMain must run the tests through Main or Run,
// which close the shared agents: Shared fails t otherwise.
func Shared(t testing.TB, cfg Config) *Agent {
	t.Helper()
	cfg = cfg.withDefaults()
	if !shared.Active() {
		t.Fatalf("consultest.Shared: TestMain must run the tests through consultest.Main(m) (or Run), " +
			"which stops the shared agents; or use consultest.Start for an agent per test")
	}
	a, err := shared.Get(cfg.Name, func() (*Agent, error) { return New(cfg) })
	if err != nil {
		t.Fatalf("Consul agent %q is not available: %v", cfg.Name, err)
	}
	if a.cfg != cfg {
		t.Fatalf("consultest.Shared: agent %q was started as %+v, now asked for as %+v", cfg.Name, a.cfg, cfg)
	}
	return a
}

// Run runs the tests, closes the agents Shared started and returns the exit
// code, for a TestMain with more to do:
//
//	func TestMain(m *testing.M) {
//		setUp()
//		code := consultest.Run(m)
//		tearDown()
//		os.Exit(code)
//	}
func Run(m *testing.M) int { return shared.Run(m, CloseShared) }

// Main runs the tests, closes the agents Shared started and exits with the
// tests' code: the whole TestMain of a package that uses Shared.
func Main(m *testing.M) { os.Exit(Run(m)) }

// CloseShared closes every agent Shared started; Run calls it. Errors are
// printed on stderr.
func CloseShared() {
	shared.CloseAll(func(name string, a *Agent) {
		if err := a.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "consultest: closing Consul agent %q: %v\n", name, err)
		}
	})
}

// Addr returns the address of the agent's HTTP API, 127.0.0.1:port.
func (a *Agent) Addr() string { return a.httpAddr }

// Node returns the agent's node name, "remora-<Config.Name>".
func (a *Agent) Node() string { return a.node }

// ManagementToken returns the management token of an agent with ACLs, or ""
// without.
func (a *Agent) ManagementToken() string { return a.mgmt }

// ServiceID is the Consul service ID that Register gives instance id of
// service. Consul's service IDs are unique per agent, not per service, so
// the service name is part of it.
func ServiceID(service, id string) string { return service + "-" + id }

// InstanceID is the discovery.Instance ID under which the Consul adapter
// reports instance id of service registered on this agent:
// "<node>/<service ID>".
func (a *Agent) InstanceID(service, id string) string { return a.node + "/" + ServiceID(service, id) }

// Client returns a Consul API client of the agent for the test's own calls,
// with the management token when ACLs are on.
func (a *Agent) Client(t testing.TB) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: a.httpAddr, Token: a.mgmt})
	if err != nil {
		t.Fatalf("consultest: API client: %v", err)
	}
	return c
}

// Register creates or replaces instance in of service through the agent
// API, under the ID ServiceID(service, in.ID), with in's address and port,
// in.Metadata as Service.Meta, in.Weight as both the passing and the warning
// weight, the given tags and, if check is not nil, that check. It fails t
// on error.
func (a *Agent) Register(t testing.TB, service string, in discovery.Instance, tags []string, check *api.AgentServiceCheck) {
	t.Helper()
	w := int(in.Weight)
	err := a.Client(t).Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID:      ServiceID(service, in.ID),
		Name:    service,
		Address: in.Address,
		Port:    in.Port,
		Tags:    tags,
		Meta:    in.Metadata,
		Weights: &api.AgentWeights{Passing: w, Warning: w},
		Check:   check,
	})
	if err != nil {
		t.Fatalf("consultest: registering %s/%s: %v", service, in.ID, err)
	}
}

// Deregister removes instance id of service, failing t on error.
func (a *Agent) Deregister(t testing.TB, service, id string) {
	t.Helper()
	if err := a.Client(t).Agent().ServiceDeregister(ServiceID(service, id)); err != nil {
		t.Fatalf("consultest: deregistering %s/%s: %v", service, id, err)
	}
}

// UpdateTTL sets the status of TTL check checkID to status (api.HealthPassing,
// api.HealthWarning or api.HealthCritical), failing t on error.
func (a *Agent) UpdateTTL(t testing.TB, checkID, status string) {
	t.Helper()
	if err := a.Client(t).Agent().UpdateTTL(checkID, "set by the test", status); err != nil {
		t.Fatalf("consultest: setting check %s to %s: %v", checkID, status, err)
	}
}

// NewReadToken creates, on an agent with ACLs, a policy that may read the
// given services and every node (what a watcher of the services needs) and
// a token with that policy, failing t on error. The policy's name is unique
// per call.
func (a *Agent) NewReadToken(t testing.TB, services ...string) *api.ACLToken {
	t.Helper()
	if a.mgmt == "" {
		t.Fatalf("consultest: NewReadToken on Consul agent %q, which has no ACLs", a.cfg.Name)
	}
	var rules strings.Builder
	for _, s := range services {
		fmt.Fprintf(&rules, "service %q { policy = \"read\" }\n", s)
	}
	rules.WriteString(`node_prefix "" { policy = "read" }`)
	suffix, err := uuid()
	if err != nil {
		t.Fatal(err)
	}
	acl := a.Client(t).ACL()
	policy, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: "read-" + suffix, Rules: rules.String()}, nil)
	if err != nil {
		t.Fatalf("consultest: creating an ACL policy: %v", err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatalf("consultest: creating an ACL token: %v", err)
	}
	return tok
}

// Restart stops the agent and starts it again on the same ports with its
// data kept, failing t if it does not come back.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	if err := a.Stop(); err != nil {
		t.Logf("consultest: stopping Consul agent %q: %v", a.cfg.Name, err)
	}
	a.mu.Lock()
	closed := a.closed
	a.mu.Unlock()
	if closed {
		t.Fatalf("consultest: Restart of Consul agent %q after Close", a.cfg.Name)
	}
	if err := a.start(); err != nil {
		t.Fatalf("consultest: restarting Consul agent %q: %v", a.cfg.Name, err)
	}
}

// RestartFresh kills the agent (SIGKILL) and starts a new one on the same
// ports without any state: its data directory is emptied first, as for an
// agent rescheduled onto a fresh node or a dev agent restarted. The ACL
// management token, if any, stays the same. It fails t if the new agent
// does not come up.
func (a *Agent) RestartFresh(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	cmd, done, closed := a.cmd, a.done, a.closed
	a.cmd = nil
	a.mu.Unlock()
	if closed {
		t.Fatalf("consultest: RestartFresh of Consul agent %q after Close", a.cfg.Name)
	}
	if cmd != nil {
		testproc.Stop(cmd, done, syscall.SIGKILL, stopTimeout)
	}
	if err := os.RemoveAll(filepath.Join(a.dir, "data")); err != nil {
		t.Fatalf("consultest: removing the data of Consul agent %q: %v", a.cfg.Name, err)
	}
	if err := a.start(); err != nil {
		t.Fatalf("consultest: starting Consul agent %q afresh: %v", a.cfg.Name, err)
	}
}

// Stop stops the agent process (SIGTERM, then SIGKILL after 10 s) and keeps
// its data, so that Restart can bring it back. It is a no-op on a stopped
// agent. The error says whether the agent had to be killed.
func (a *Agent) Stop() error {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if !testproc.Stop(cmd, done, syscall.SIGTERM, stopTimeout) {
		return nil
	}
	return fmt.Errorf("did not exit within %v of SIGTERM; killed", stopTimeout)
}

// Close stops the agent and removes its data directory. It is idempotent.
func (a *Agent) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	err := a.Stop()
	if rmErr := os.RemoveAll(a.dir); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// LogTail returns the last lines of the agent's log (its stdout and
// stderr, at level warn).
func (a *Agent) LogTail() string {
	b, _ := os.ReadFile(a.logPath())
	return testproc.Tail(string(b), 25)
}

func (a *Agent) configPath() string { return filepath.Join(a.dir, "agent.json") }
func (a *Agent) logPath() string    { return filepath.Join(a.dir, "agent.log") }

// start runs the agent process and waits until it is ready.
func (a *Agent) start() error {
	cmd := exec.Command(a.bin, "agent", "-config-file", a.configPath())
	done, err := testproc.Start(cmd, a.logPath())
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()

	switch testproc.WaitReady(done, readyTimeout, a.ready) {
	case testproc.ErrExited:
		return fmt.Errorf("consul agent exited during start-up: %s; its log:\n%s", cmd.ProcessState, a.LogTail())
	case testproc.ErrNotReady:
		return fmt.Errorf("consul agent at %s not ready after %v (no leader); its log:\n%s", a.httpAddr, readyTimeout, a.LogTail())
	}
	return nil
}

// ready reports whether the agent has a leader, its own node in the catalog
// (or services registered now would show up without it) and, with ACLs, a
// working management token.
func (a *Agent) ready() bool {
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.httpAddr+path, nil)
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
	code, body := get("/v1/catalog/nodes")
	return code == 200 && strings.Contains(body, `"Node":"`+a.node+`"`)
}

// uuid returns a random version-4 UUID, the form Consul wants for tokens.
func uuid() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
