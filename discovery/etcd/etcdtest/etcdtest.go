// Package etcdtest runs real etcd servers inside the test process, on free
// loopback ports, for tests that need a registry: a single member (Start,
// New) or a cluster of several (StartCluster).
package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/remora-mesh/remora/internal/testproc"
)

// Server is an embedded single-member etcd cluster. Its methods are called
// from the test's goroutine.
type Server struct {
	dir        string
	clientURL  url.URL
	peerURL    url.URL
	etcd       *embed.Etcd
	t          testing.TB
	clientConn *clientv3.Client
	user, pass string // the test client's credentials once auth is on
}

// Start starts etcd with its data in a temporary directory and stops it
// when the test ends. It fails the test if etcd does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	s := New(t)
	s.start()
	return s
}

// New reserves a server's ports and data directory without starting it:
// Endpoint is known at once, Up starts it. It is stopped when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:         t,
		dir:       t.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: freeAddr(t)},
		peerURL:   url.URL{Scheme: "http", Host: freeAddr(t)},
	}
	t.Cleanup(s.Stop)
	return s
}

// Up starts a server made by New, or stopped by Stop, on its ports with its
// data, and waits until it serves. It fails the test if etcd does not come
// up.
func (s *Server) Up() {
	s.t.Helper()
	if s.etcd == nil {
		s.start()
	}
}

func (s *Server) start() {
	s.t.Helper()
	cfg := embedConfig("remora-test", s.dir, s.clientURL, s.peerURL)
	var (
		e   *embed.Etcd
		err error
	)
	// The port of a server stopped a moment ago may not be free yet.
	for attempt := 0; attempt < 50; attempt++ {
		e, err = embed.StartEtcd(cfg)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("etcdtest: starting embedded etcd on %s: %v", s.clientURL.Host, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		s.t.Fatalf("etcdtest: embedded etcd on %s not ready after 30s", s.clientURL.Host)
	}
	s.etcd = e
}

// Endpoint returns the client address, host:port.
func (s *Server) Endpoint() string { return s.clientURL.Host }

// Client returns a client of the server, closed when the test ends; after
// EnableAuth it authenticates as root.
func (s *Server) Client() *clientv3.Client {
	s.t.Helper()
	if s.clientConn == nil {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
			Username: s.user, Password: s.pass,
			// Reconnect at once after Restart (gRPC's default backoff
			// grows to seconds).
			DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.2, MaxDelay: 200 * time.Millisecond},
			})},
		})
		if err != nil {
			s.t.Fatalf("etcdtest: client: %v", err)
		}
		s.clientConn = cli
		s.t.Cleanup(func() { cli.Close() })
	}
	return s.clientConn
}

// EnableAuth turns authentication on: a root user with rootPassword, and a
// user who may read and write everything under prefix with password. The
// test's Client authenticates as root from then on.
func (s *Server) EnableAuth(rootPassword, user, password, prefix string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := s.Client()
	steps := []struct {
		what string
		do   func() error
	}{
		{"adding user root", func() error { _, err := cli.UserAdd(ctx, "root", rootPassword); return err }},
		{"adding role root", func() error { _, err := cli.RoleAdd(ctx, "root"); return err }},
		{"granting root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"adding role " + user, func() error { _, err := cli.RoleAdd(ctx, user); return err }},
		{"granting " + prefix + " to role " + user, func() error {
			_, err := cli.RoleGrantPermission(ctx, user, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"adding user " + user, func() error { _, err := cli.UserAdd(ctx, user, password); return err }},
		{"granting role " + user, func() error { _, err := cli.UserGrantRole(ctx, user, user); return err }},
		{"enabling auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			s.t.Fatalf("etcdtest: %s: %v", st.what, err)
		}
	}
	cli.Close()
	s.clientConn, s.user, s.pass = nil, "root", rootPassword
}

// Put writes key=value, failing the test on error.
func (s *Server) Put(key, value string, opts ...clientv3.OpOption) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client().Put(ctx, key, value, opts...); err != nil {
		s.t.Fatalf("etcdtest: put %s: %v", key, err)
	}
}

// Delete removes key, failing the test on error.
func (s *Server) Delete(key string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client().Delete(ctx, key); err != nil {
		s.t.Fatalf("etcdtest: delete %s: %v", key, err)
	}
}

// Stop stops the server, keeping its data; it is idempotent. Up or Restart
// start it again.
func (s *Server) Stop() {
	if s.user != "" && s.clientConn != nil {
		// Its token dies with the server (simple tokens live in memory);
		// a new client authenticates afresh.
		s.clientConn.Close()
		s.clientConn = nil
	}
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Restart stops the server and starts it again on the same ports with the
// same data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// RestartFresh stops the server and starts a new cluster on the same
// ports without any data, as an etcd without a persistent volume comes
// back: revisions from 1 again, no keys, no leases, but the same cluster
// ID and member ID, which etcd derives from the peer URLs and the cluster
// token, both unchanged.
func (s *Server) RestartFresh() {
	s.t.Helper()
	s.Stop()
	if err := os.RemoveAll(s.dir); err != nil {
		s.t.Fatalf("etcdtest: removing the data of etcd on %s: %v", s.clientURL.Host, err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		s.t.Fatalf("etcdtest: %v", err)
	}
	s.start()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}
