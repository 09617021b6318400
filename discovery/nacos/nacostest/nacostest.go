// Package nacostest runs a real Nacos-protocol server for tests that need
// one: Polaris (github.com/polarismesh/polaris), which serves the Nacos v1
// HTTP and v2 gRPC client APIs, started with only its Nacos API server (and
// the internal gRPC server it registers itself with) on free loopback
// ports, its data in a directory of its own. Instances are registered as
// applications do it: each by its own nacos-sdk-go client over gRPC, as an
// ephemeral instance bound to that client's connection.
//
// The server binary is the file named by $REMORA_POLARIS_BIN (with Polaris'
// release/conf directory beside it, as conf/) or else the one
// scripts/polaris-server.sh builds (once, into a cache outside the clone;
// the cold build takes minutes and prints its progress on stderr). If the
// server cannot be built or started, the test fails with the reason and the
// tail of the server's log; it is never skipped.
//
// A server is a separate process, so every server is stopped by its owner.
// Start starts one for a test (and its subtests) and closes it when the
// test ends. Shared returns a server shared by all the tests of a package,
// started on first use; it needs TestMain to run the tests through Main (or
// Run), which closes the shared servers after the last test:
//
//	func TestMain(m *testing.M) { nacostest.Main(m) }
//
// On Linux a server is also killed by the kernel when the test binary dies
// (a panic, a -timeout), so no server outlives the tests.
package nacostest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"go.yaml.in/yaml/v3"

	"github.com/remora-mesh/remora/internal/testproc"
)

// BinEnv names the environment variable with the path of a polaris-server
// binary to use instead of building one; its configuration directory must
// be conf/ beside it.
const BinEnv = "REMORA_POLARIS_BIN"

// script is the build script, relative to the module root.
const script = "scripts/polaris-server.sh"

// Timeouts of the server's life cycle.
const (
	readyTimeout = 60 * time.Second // start until the Nacos API answers
	stopTimeout  = 10 * time.Second // SIGTERM until SIGKILL (Polaris takes ~7 s)
)

// GRPCPortOffset is the distance between the Nacos HTTP and gRPC ports, as
// in Nacos 2.x.
const GRPCPortOffset = 1000

var binary = testproc.Binary{Env: BinEnv, Script: script, What: "the Polaris server", Kind: "polaris-server"}

// Binary returns the path of the polaris-server binary: $REMORA_POLARIS_BIN
// if set, else the output of scripts/polaris-server.sh, which builds the
// pinned version on first use and reuses it afterwards. The result (or
// error) is computed once per process.
func Binary() (string, error) { return binary.Path() }

// Config describes a server.
type Config struct {
	// Name tells servers apart in logs and temporary directory names;
	// shared servers are keyed by it. Empty means "polaris".
	Name string
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "polaris"
	}
	return c
}

// Server is one Polaris server process with its own data directory, so
// Restart on the same ports keeps its data. Its methods may be called from
// any goroutine.
type Server struct {
	cfg      Config
	bin      string
	dir      string // state: conf, boltdb, logs, clients' caches
	httpPort int    // Nacos HTTP API; gRPC on httpPort + GRPCPortOffset
	ctlPort  int    // Polaris' own gRPC API (it registers itself there)

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    <-chan struct{} // closed when cmd has exited
	closed  bool
	clients map[string]*client // registered instances, by service and ID
	dropped map[string]*client // closed by Stop or Kill, registered again by Resume

	httpInstances map[string]vo.RegisterInstanceParam // registered by RegisterHTTP, by service and ID
}

// New starts a server and waits until its Nacos API answers. The caller
// must Close it. Most tests want Start or Shared instead.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	s, err := testproc.RetryPortClash(func() (*Server, error) { return newServer(cfg, bin) })
	if err != nil {
		return nil, fmt.Errorf("nacostest: Polaris server %q: %w", cfg.Name, err)
	}
	return s, nil
}

func newServer(cfg Config, bin string) (*Server, error) {
	dir, err := os.MkdirTemp("", "remora-polaris-"+cfg.Name+"-")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, bin: bin, dir: dir, clients: map[string]*client{}, dropped: map[string]*client{},
		httpInstances: map[string]vo.RegisterInstanceParam{}}
	if s.httpPort, err = freePortPair(GRPCPortOffset); err == nil {
		// A probed port can come back twice: keep the three distinct.
		for s.ctlPort == 0 || s.ctlPort == s.httpPort || s.ctlPort == s.httpPort+GRPCPortOffset {
			if s.ctlPort, err = testproc.FreePort(); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = s.writeConfig()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.start(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// writeConfig adapts Polaris' default configuration (conf/ beside the
// binary): only the Nacos API server and Polaris' own gRPC server, on
// loopback and the chosen ports; self_address 127.0.0.1; logs and the
// boltdb store relative to the state directory (the working directory).
func (s *Server) writeConfig() error {
	src := filepath.Join(filepath.Dir(s.bin), "conf")
	b, err := os.ReadFile(filepath.Join(src, "polaris-server.yaml"))
	if err != nil {
		return fmt.Errorf("reading Polaris' default configuration (conf/ beside %s; scripts/polaris-server.sh puts it there): %w", s.bin, err)
	}
	var conf map[string]any
	if err := yaml.Unmarshal(b, &conf); err != nil {
		return fmt.Errorf("parsing %s: %w", filepath.Join(src, "polaris-server.yaml"), err)
	}
	servers, _ := conf["apiservers"].([]any)
	var kept []any
	for _, a := range servers {
		m, _ := a.(map[string]any)
		opt, _ := m["option"].(map[string]any)
		if opt == nil {
			continue
		}
		switch m["name"] {
		case "service-nacos":
			opt["listenPort"] = s.httpPort
		case "service-grpc":
			opt["listenPort"] = s.ctlPort
		default:
			continue // eureka, xds, the HTTP console, config: not needed
		}
		opt["listenIP"] = "127.0.0.1"
		kept = append(kept, m)
	}
	if len(kept) != 2 {
		return fmt.Errorf("%s has no service-nacos and service-grpc api servers", filepath.Join(src, "polaris-server.yaml"))
	}
	conf["apiservers"] = kept
	boot, _ := conf["bootstrap"].(map[string]any)
	ps, _ := boot["polaris_service"].(map[string]any)
	if ps == nil {
		return fmt.Errorf("%s has no bootstrap.polaris_service", filepath.Join(src, "polaris-server.yaml"))
	}
	ps["self_address"] = "127.0.0.1"
	out, err := yaml.Marshal(conf)
	if err != nil {
		return err
	}
	if err := os.CopyFS(filepath.Join(s.dir, "conf"), os.DirFS(src)); err != nil {
		return err
	}
	return os.WriteFile(s.configPath(), out, 0o600)
}

// Start starts a server for t and closes it when t (with its subtests)
// ends; if t failed, the tail of the server's log is logged first. It fails
// t if the server cannot be built or started.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testproc.CloseAtEnd(t, "nacostest", "Polaris server", s.cfg.Name, s.LogTail, s.Close)
	return s
}

var shared testproc.Shared[*Server]

// Shared returns the package-wide server named cfg.Name, starting it on
// the first call; later calls return the same server (or fail at once with
// the first call's error). TestMain must run the tests through Main or
// Run, which close the shared servers: Shared fails t otherwise.
func Shared(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg = cfg.withDefaults()
	if !shared.Active() {
		t.Fatalf("nacostest.Shared: TestMain must run the tests through nacostest.Main(m) (or Run), " +
			"which stops the shared servers; or use nacostest.Start for a server per test")
	}
	s, err := shared.Get(cfg.Name, func() (*Server, error) { return New(cfg) })
	if err != nil {
		t.Fatalf("Polaris server %q is not available: %v", cfg.Name, err)
	}
	return s
}

// Run runs the tests, closes the servers Shared started and returns the
// exit code, for a TestMain with more to do.
func Run(m *testing.M) int { return shared.Run(m, CloseShared) }

// Main runs the tests, closes the servers Shared started and exits with
// the tests' code: the whole TestMain of a package that uses Shared.
func Main(m *testing.M) { os.Exit(Run(m)) }

// CloseShared closes every server Shared started; Run calls it. Errors are
// printed on stderr.
func CloseShared() {
	shared.CloseAll(func(name string, s *Server) {
		if err := s.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "nacostest: closing Polaris server %q: %v\n", name, err)
		}
	})
}

// Addr returns the address of the server's Nacos HTTP API, 127.0.0.1:port
// (what the adapter's servers option takes); gRPC is on port + 1000.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.httpPort) }

// HTTPPort and GRPCPort are the ports of the Nacos APIs.
func (s *Server) HTTPPort() int { return s.httpPort }
func (s *Server) GRPCPort() int { return s.httpPort + GRPCPortOffset }

// Dir is the server's state directory; it is removed by Close. Tests may
// keep files of their own under it.
func (s *Server) Dir() string { return s.dir }

// Restart stops the server (SIGTERM, see Stop) and starts it again on the
// same ports with its data kept (see Resume), failing t if it does not
// come back.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Logf("nacostest: stopping Polaris server %q: %v", s.cfg.Name, err)
	}
	if err := s.Resume(); err != nil {
		t.Fatalf("nacostest: restarting Polaris server %q: %v", s.cfg.Name, err)
	}
}

// RestartFresh stops the server (SIGTERM, see Stop), removes its store
// (polaris.bolt: every service and instance it knew) and starts it again
// on the same ports, as a server without a persistent volume comes back;
// the instances of the clients Stop closed are registered again (see
// Resume), as their applications' clients would. It fails t if the server
// does not come back.
func (s *Server) RestartFresh(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Logf("nacostest: stopping Polaris server %q: %v", s.cfg.Name, err)
	}
	if err := os.Remove(filepath.Join(s.dir, "polaris.bolt")); err != nil {
		t.Fatalf("nacostest: removing the store of Polaris server %q: %v", s.cfg.Name, err)
	}
	if err := s.Resume(); err != nil {
		t.Fatalf("nacostest: starting Polaris server %q afresh: %v", s.cfg.Name, err)
	}
}

// Resume starts a stopped server again on its ports, with its data, and
// registers the instances of the clients Stop or Kill closed again, each
// by a new client (as their applications' clients would after
// reconnecting). It is a no-op on a running server.
func (s *Server) Resume() error {
	s.mu.Lock()
	closed, running := s.closed, s.cmd != nil
	s.mu.Unlock()
	switch {
	case closed:
		return errors.New("the server is closed")
	case running:
		return nil
	}
	if err := s.start(); err != nil {
		return err
	}
	s.mu.Lock()
	dropped := s.dropped
	s.dropped = map[string]*client{}
	s.mu.Unlock()
	return s.registerAgain(dropped)
}

// Stop stops the server process (SIGTERM, then SIGKILL after 10 s) and
// keeps its data, so that Resume can bring it back. The clients of the
// registered instances are closed (Resume registers the instances again).
// It is a no-op on a stopped server. The error says whether the server had
// to be killed.
func (s *Server) Stop() error { return s.halt(syscall.SIGTERM) }

// halt stops the process with sig and closes the registering clients
// (while the server is down, so none of them reconnects: the SDK's
// reconnect path has data races that would fail tests run with -race);
// Resume registers their instances again.
func (s *Server) halt(sig syscall.Signal) error {
	err := s.stop(sig)
	dropped := s.dropClients()
	s.mu.Lock()
	for k, c := range dropped {
		s.dropped[k] = c
	}
	s.mu.Unlock()
	return err
}

// Kill stops the server process at once (SIGKILL), keeping its data (the
// boltdb store commits every write), for tests that need the server down
// and cannot wait for a graceful stop (~7 s). The registering clients are
// closed; Resume then registers their instances again with new clients.
func (s *Server) Kill() { _ = s.halt(syscall.SIGKILL) }

func (s *Server) stop(sig syscall.Signal) error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if !testproc.Stop(cmd, done, sig, stopTimeout) {
		return nil
	}
	return fmt.Errorf("did not exit within %v of %v; killed", stopTimeout, sig)
}

// Close closes the registering clients, kills the server (its data is
// discarded, so there is nothing to shut down gracefully) and removes its
// directory. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	clients := s.clients
	s.clients = map[string]*client{}
	s.mu.Unlock()
	for _, c := range clients {
		c.close()
	}
	if os.Getenv(KeepEnv) != "" {
		// Debugging: a goroutine dump into the server's log, and the
		// state directory kept.
		err := s.stop(syscall.SIGQUIT)
		fmt.Fprintf(os.Stderr, "nacostest: $%s is set: kept %s\n", KeepEnv, s.dir)
		return err
	}
	err := s.stop(syscall.SIGKILL)
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	return err
}

// KeepEnv names an environment variable that, when set, makes Close dump
// the server's goroutines into its log (SIGQUIT) and keep its directory,
// for debugging.
const KeepEnv = "REMORA_POLARIS_KEEP"

// LogTail returns the last lines of the server's output and of its Nacos
// API server's log.
func (s *Server) LogTail() string {
	out, _ := os.ReadFile(s.logPath())
	nacos, _ := os.ReadFile(filepath.Join(s.dir, "log", "runtime", "nacos-apiserver.log"))
	return "stdout/stderr:\n" + testproc.Tail(string(out), 15) + "\nlog/runtime/nacos-apiserver.log:\n" + testproc.Tail(string(nacos), 15)
}

func (s *Server) configPath() string { return filepath.Join(s.dir, "conf", "polaris-server.yaml") }
func (s *Server) logPath() string    { return filepath.Join(s.dir, "polaris-server.out") }

// start runs the server process and waits until it is ready.
func (s *Server) start() error {
	cmd := exec.Command(s.bin, "start", "-c", s.configPath())
	cmd.Dir = s.dir
	done, err := testproc.Start(cmd, s.logPath())
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	switch testproc.WaitReady(done, readyTimeout, s.ready) {
	case testproc.ErrExited:
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return fmt.Errorf("polaris-server exited during start-up: %s; %s", cmd.ProcessState, s.LogTail())
	case testproc.ErrNotReady:
		_ = s.stop(syscall.SIGKILL)
		return fmt.Errorf("polaris-server's Nacos API at %s not ready after %v; %s", s.Addr(), readyTimeout, s.LogTail())
	}
	return nil
}

// ready reports whether the Nacos HTTP API answers an instance query and
// the gRPC port accepts connections.
func (s *Server) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.Addr() + "/nacos/v1/ns/instance/list?serviceName=nacostest-ready")
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.GRPCPort()), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// freePortPair returns a port p such that p and p+offset were both free.
func freePortPair(offset int) (int, error) {
	for range 50 {
		p, err := testproc.FreePort()
		if err != nil {
			return 0, err
		}
		if p+offset > 65535 {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+offset))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port p with p+%d free after 50 tries", offset)
}
