// Package kubetest runs a real Kubernetes API server for tests that need
// one: kube-apiserver on a free loopback port, backed by an etcd embedded in
// the test process (go.etcd.io/etcd/server/v3/embed, as etcdtest runs it),
// with no controller manager, scheduler or kubelet. Tests write
// EndpointSlices, Pods and other objects themselves, as the controllers
// would. The API refuses loopback addresses in EndpointSlices, and tests
// reach only loopback backends: ApplySlice writes such a slice into the
// server's storage, from where the server serves and watches it as any
// other (see ApplySlice).
//
// # Authentication and authorization
//
// The server serves HTTPS only, with a certificate for 127.0.0.1 and
// localhost signed by a CA made for it (Server.CA). Authorization is RBAC,
// as in a real cluster. Two ways in:
//
//   - the admin: a static bearer token (--token-auth-file) for the user
//     "remora-admin" in the group system:masters, which RBAC allows
//     everything (Server.RESTConfig, Server.Kubeconfig);
//   - service accounts: tokens minted through the TokenRequest API
//     (Server.ServiceAccountToken), signed with a key made for the server,
//     so a test can prove that a Role grants what a component needs.
//
// The binary is the file named by $REMORA_KUBE_APISERVER_BIN or else the
// one scripts/kube-apiserver.sh builds (once, into a cache outside the
// clone; the cold build takes minutes and prints its progress on stderr).
// If the server cannot be built or started, the test fails with the reason
// and the tail of the server's log; it is never skipped.
//
// The API server is a separate process, so every server is stopped by its
// owner. Start starts one for a test (and its subtests) and closes it when
// the test ends. Shared returns a server shared by all the tests of a
// package, started on first use; it needs TestMain to run the tests through
// Main (or Run), which closes the shared servers after the last test:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
// On Linux the API server is also killed by the kernel when the test binary
// dies (a panic, a -timeout), and its etcd dies with the test binary, so
// neither outlives the tests.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"k8s.io/client-go/rest"

	"github.com/remora-mesh/remora/internal/testproc"
)

// BinEnv names the environment variable with the path of a kube-apiserver
// binary to use instead of building one.
const BinEnv = "REMORA_KUBE_APISERVER_BIN"

// script is the build script, relative to the module root.
const script = "scripts/kube-apiserver.sh"

// Timeouts of the server's life cycle.
const (
	readyTimeout = 90 * time.Second // start until /readyz answers ok (about 5 s on an idle machine)
	// SIGTERM until SIGKILL: the API server waits up to a minute for the
	// watches still open when it is told to stop; its objects are in etcd,
	// so a kill loses nothing.
	stopTimeout = 5 * time.Second
)

// AdminUser is the user name of the admin token, in group system:masters.
const AdminUser = "remora-admin"

var binary = testproc.Binary{Env: BinEnv, Script: script, What: "kube-apiserver", Kind: "kube-apiserver"}

// Binary returns the path of the kube-apiserver binary:
// $REMORA_KUBE_APISERVER_BIN if set, else the output of
// scripts/kube-apiserver.sh, which builds the pinned version on first use and
// reuses it afterwards. The result (or error) is computed once per process.
func Binary() (string, error) { return binary.Path() }

// Config describes a server.
type Config struct {
	// Name tells servers apart in messages and names the temporary
	// directory; empty means "apiserver". Shared servers are keyed by it.
	Name string
	// Args are extra kube-apiserver flags, e.g. "--watch-cache=false".
	Args []string
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "apiserver"
	}
	return c
}

func (c Config) same(o Config) bool {
	return c.Name == o.Name && strings.Join(c.Args, "\x00") == strings.Join(o.Args, "\x00")
}

// Server is one kube-apiserver process with its embedded etcd. The etcd
// keeps running across Stop and Restart of the API server, so objects
// survive them. Its methods may be called from any goroutine.
type Server struct {
	cfg   Config
	bin   string
	dir   string
	addr  string // 127.0.0.1:port of the API server
	token string // the admin's bearer token
	ca    []byte // PEM of the CA that signed the serving certificate
	etcd  *embed.Etcd

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   <-chan struct{} // closed when cmd has exited
	closed bool
}

// New starts etcd and an API server and waits until the server is ready.
// The caller must Close it. Most tests want Start or Shared instead.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	bin, err := Binary()
	if err != nil {
		return nil, fmt.Errorf("kubetest: no kube-apiserver binary for server %q: %w", cfg.Name, err)
	}
	dir, err := os.MkdirTemp("", "remora-kube-"+cfg.Name+"-")
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, bin: bin, dir: dir}
	if err := s.writeFiles(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kubetest: server %q: %w", cfg.Name, err)
	}
	if s.etcd, err = testproc.RetryPortClash(s.startEtcd); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kubetest: etcd of server %q: %w", cfg.Name, err)
	}
	_, err = testproc.RetryPortClash(func() (struct{}, error) {
		port, err := testproc.FreePort()
		if err != nil {
			return struct{}{}, err
		}
		s.addr = "127.0.0.1:" + strconv.Itoa(port)
		return struct{}{}, s.start()
	})
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("kubetest: kube-apiserver %q: %w", cfg.Name, err)
	}
	return s, nil
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
	testproc.CloseAtEnd(t, "kubetest", "kube-apiserver", s.cfg.Name, s.LogTail, s.Close)
	return s
}

var shared testproc.Shared[*Server]

// Shared returns the package-wide server named cfg.Name, starting it on the
// first call; later calls return the same server (or fail at once with the
// first call's error). TestMain must run the tests through Main or Run,
// which close the shared servers: Shared fails t otherwise.
func Shared(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg = cfg.withDefaults()
	if !shared.Active() {
		t.Fatalf("kubetest.Shared: TestMain must run the tests through kubetest.Main(m) (or Run), " +
			"which stops the shared servers; or use kubetest.Start for a server per test")
	}
	s, err := shared.Get(cfg.Name, func() (*Server, error) { return New(cfg) })
	if err != nil {
		t.Fatalf("kube-apiserver %q is not available: %v", cfg.Name, err)
	}
	if !s.cfg.same(cfg) {
		t.Fatalf("kubetest.Shared: server %q was started as %+v, now asked for as %+v", cfg.Name, s.cfg, cfg)
	}
	return s
}

// Run runs the tests, closes the servers Shared started and returns the
// exit code, for a TestMain with more to do.
func Run(m *testing.M) int { return shared.Run(m, CloseShared) }

// Main runs the tests, closes the servers Shared started and exits with the
// tests' code: the whole TestMain of a package that uses Shared.
func Main(m *testing.M) { os.Exit(Run(m)) }

// CloseShared closes every server Shared started; Run calls it. Errors are
// printed on stderr.
func CloseShared() {
	shared.CloseAll(func(name string, s *Server) {
		if err := s.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: closing kube-apiserver %q: %v\n", name, err)
		}
	})
}

// Addr returns the API server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return s.addr }

// URL returns the API server's base URL, https://127.0.0.1:port.
func (s *Server) URL() string { return "https://" + s.addr }

// CA returns the PEM of the CA that signed the server's certificate.
func (s *Server) CA() []byte { return s.ca }

// AdminToken returns the admin's bearer token (user AdminUser, group
// system:masters).
func (s *Server) AdminToken() string { return s.token }

// EtcdEndpoint returns the embedded etcd's client address, host:port.
func (s *Server) EtcdEndpoint() string { return s.etcd.Clients[0].Addr().String() }

// RESTConfig returns a client config for the admin. Each call returns a
// new value the caller may modify.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            s.URL(),
		BearerToken:     s.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.ca},
		QPS:             100,
		Burst:           200,
		Timeout:         30 * time.Second,
	}
}

// Kubeconfig writes a kubeconfig file into dir for a user with the bearer
// token token (the admin's when empty), with namespace as its context's
// namespace (none when empty), and returns its path.
func (s *Server) Kubeconfig(dir, token, namespace string) (string, error) {
	if token == "" {
		token = s.token
	}
	ns := ""
	if namespace != "" {
		ns = "\n    namespace: " + namespace
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kubetest
  user:
    token: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: kubetest%s
current-context: kubetest
`, s.URL(), b64(s.ca), token, ns)
	f, err := os.CreateTemp(dir, "kubeconfig-")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(kc); err != nil {
		return "", err
	}
	return f.Name(), f.Close()
}

// Stop stops the API server process: SIGTERM, then SIGKILL after 5 s (it
// would wait up to a minute for open watches). Its etcd keeps running, so
// Up and Restart bring the same objects back. It is a no-op on a stopped
// server.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		testproc.Stop(cmd, done, syscall.SIGTERM, stopTimeout)
	}
}

// Up starts a stopped API server again on the same port and waits until it
// is ready, failing t if it does not come back.
func (s *Server) Up(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running, closed := s.cmd != nil, s.closed
	s.mu.Unlock()
	switch {
	case closed:
		t.Fatalf("kubetest: Up of kube-apiserver %q after Close", s.cfg.Name)
	case running:
		return
	}
	// The port of a server stopped a moment ago may be in TIME_WAIT; the
	// API server sets SO_REUSEADDR, so it binds at once.
	if err := s.start(); err != nil {
		t.Fatalf("kubetest: starting kube-apiserver %q again: %v", s.cfg.Name, err)
	}
}

// Restart stops the API server and starts it again on the same port, its
// objects kept, failing t if it does not come back.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.Up(t)
}

// Close stops the API server and etcd and removes their data. It is
// idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.Stop()
	var err error
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = rmErr
	}
	return err
}

// LogTail returns the last lines of the API server's log.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.path("apiserver.log"))
	return testproc.Tail(string(b), 30)
}

func (s *Server) path(name string) string { return filepath.Join(s.dir, name) }

// startEtcd starts the embedded etcd on free loopback ports.
func (s *Server) startEtcd() (*embed.Etcd, error) {
	client, err := testproc.FreePort()
	if err != nil {
		return nil, err
	}
	peer, err := testproc.FreePort()
	for err == nil && peer == client {
		peer, err = testproc.FreePort()
	}
	if err != nil {
		return nil, err
	}
	cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(client)}
	pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peer)}
	cfg := embed.NewConfig()
	cfg.Name = "kubetest"
	cfg.Dir = s.path("etcd")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(cfg.Dir)
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(30 * time.Second):
		e.Close()
		os.RemoveAll(cfg.Dir)
		return nil, errors.New("embedded etcd not ready after 30s")
	}
}

// start runs the API server process and waits until it is ready.
func (s *Server) start() error {
	_, port, _ := net.SplitHostPort(s.addr)
	args := []string{
		"--etcd-servers=http://" + s.EtcdEndpoint(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + port,
		"--cert-dir=" + s.path("certs"),
		"--tls-cert-file=" + s.path("serving.crt"),
		"--tls-private-key-file=" + s.path("serving.key"),
		"--token-auth-file=" + s.path("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + s.path("sa.pub"),
		"--service-account-signing-key-file=" + s.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller maintains the "kubernetes" Service's endpoints
		// here, and nothing reaches them: no reconciler.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		// JSON in etcd, so that ApplySlice can store what the API's
		// validation refuses (loopback addresses).
		"--storage-media-type=application/json",
		"--v=1",
	}
	args = append(args, s.cfg.Args...)
	cmd := exec.Command(s.bin, args...)
	done, err := testproc.Start(cmd, s.path("apiserver.log"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	client := s.httpClient()
	defer client.CloseIdleConnections()
	switch testproc.WaitReady(done, readyTimeout, func() bool { return s.ready(client) }) {
	case testproc.ErrExited:
		return fmt.Errorf("kube-apiserver exited during start-up: %s; its log:\n%s", cmd.ProcessState, s.LogTail())
	case testproc.ErrNotReady:
		testproc.Stop(cmd, done, syscall.SIGKILL, stopTimeout)
		return fmt.Errorf("kube-apiserver at %s not ready after %v; its log:\n%s", s.addr, readyTimeout, s.LogTail())
	}
	return nil
}

func (s *Server) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = pool
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}
}

// ready reports whether /readyz answers "ok": every post-start hook has
// run (the RBAC bootstrap roles and the default namespaces exist).
func (s *Server) ready(c *http.Client) bool {
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.TrimSpace(b.String()) == "ok"
}

// writeFiles writes the serving certificate, the service-account signing
// key and the token file into the server's directory.
func (s *Server) writeFiles() error {
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	s.token = hex.EncodeToString(tok)
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", s.token, AdminUser, AdminUser)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	s.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":      s.ca,
		"serving.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":  []byte(tokens),
	}
	for name, b := range files {
		if err := os.WriteFile(s.path(name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ctx returns a context for one API call of a helper.
func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
