package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/rafthttp"
	"go.uber.org/zap"
)

// Cluster is an embedded etcd cluster of several members, each with its
// own data directory and loopback ports, sharing one InitialCluster. Its
// methods are called from the test's goroutine.
//
// Clients reach each member through a front: a loopback TCP relay owned by
// the test, at the address Endpoint gives. Kill cuts a member's front and
// stops its raft at once, as a crash would; embedded etcd's own Close is a
// graceful stop (a leader hands its leadership over first, and open watch
// streams are drained for up to the request timeout), which no client sees
// when a member dies.
type Cluster struct {
	t       testing.TB
	members []*member
	clients map[int]*clientv3.Client // by member; -1: all live members
}

// member is one member of a Cluster.
type member struct {
	name      string
	dir       string
	clientURL url.URL // the member's own; clients use front
	peerURL   url.URL
	etcd      *embed.Etcd // nil once killed
	front     *front
}

// StartCluster starts an n-member cluster, waits until every member serves
// and stops it when the test ends. It fails the test if the cluster does
// not form.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, clients: map[int]*clientv3.Client{}}
	t.Cleanup(c.stop)
	var initial []string
	for i := range n {
		m := &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       t.TempDir(),
			clientURL: url.URL{Scheme: "http", Host: freeAddr(t)},
			peerURL:   url.URL{Scheme: "http", Host: freeAddr(t)},
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	for _, m := range c.members {
		cfg := embedConfig(m.name, m.dir, m.clientURL, m.peerURL)
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "remora-test-cluster"
		cfg.ClusterState = embed.ClusterStateFlagNew
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatalf("etcdtest: starting cluster member %s on %s: %v", m.name, m.clientURL.Host, err)
		}
		m.etcd = e
		m.front = startFront(t, m.clientURL.Host)
	}
	deadline := time.After(30 * time.Second)
	for _, m := range c.members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case <-deadline:
			t.Fatalf("etcdtest: cluster member %s on %s not ready after 30s", m.name, m.clientURL.Host)
		}
	}
	return c
}

// embedConfig is the configuration of a member named name with its data in
// dir, serving clients on client and peers on peer, as a cluster of its
// own.
func embedConfig(name, dir string, client, peer url.URL) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Passwords hashed at bcrypt's lowest cost (4): each authentication
	// then takes about a millisecond instead of most of a second under
	// the race detector.
	cfg.BcryptCost = 4
	return cfg
}

// Endpoint returns the client address (host:port) of member i.
func (c *Cluster) Endpoint(i int) string { return c.members[i].front.addr() }

// Endpoints returns every member's client address, in member order.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i := range c.members {
		out[i] = c.Endpoint(i)
	}
	return out
}

// Leader returns the index of the member that leads, as the live members
// see it, waiting up to 10 s for one; it fails the test if there is none.
func (c *Cluster) Leader() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range c.members {
			if m.etcd != nil && m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("etcdtest: the cluster has no leader after 10s")
	return -1
}

// Kill stops member i as a crash would: every client connection to it is
// cut and its port refuses new ones, and its raft stops without handing
// over leadership; the remaining members elect a leader if it led. It is
// idempotent.
func (c *Cluster) Kill(i int) {
	m := c.members[i]
	m.front.cut()
	if cli := c.clients[i]; cli != nil {
		cli.Close()
		delete(c.clients, i)
	}
	if m.etcd != nil {
		m.etcd.Server.HardStop()
		m.etcd.Close()
		m.etcd = nil
	}
}

// Client returns a client of member i alone (i >= 0), or of every member
// still live (i = -1), closed when the test ends.
func (c *Cluster) Client(i int) *clientv3.Client {
	c.t.Helper()
	if cli := c.clients[i]; cli != nil {
		return cli
	}
	var eps []string
	for j, m := range c.members {
		if (i == -1 || i == j) && m.etcd != nil {
			eps = append(eps, c.Endpoint(j))
		}
	}
	if len(eps) == 0 {
		c.t.Fatalf("etcdtest: no live member for a client of %d", i)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatalf("etcdtest: client: %v", err)
	}
	c.clients[i] = cli
	return cli
}

// Put writes key=value through the live members, trying again for up to
// 15 s (a write forwarded to a leader that has just died is lost, and
// answered only by a timeout), and fails the test if it cannot.
func (c *Cluster) Put(key, value string, opts ...clientv3.OpOption) {
	c.t.Helper()
	c.refreshAll()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Client(-1).Put(ctx, key, value, opts...)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("etcdtest: put %s: %v", key, err)
		}
	}
}

// refreshAll drops the client of all members if it includes a killed one.
func (c *Cluster) refreshAll() {
	cli := c.clients[-1]
	if cli == nil {
		return
	}
	for _, ep := range cli.Endpoints() {
		for j, m := range c.members {
			if m.etcd == nil && ep == c.Endpoint(j) {
				cli.Close()
				delete(c.clients, -1)
				return
			}
		}
	}
}

// stop closes the clients and stops the live members (gracefully: a crash
// leaves peer connections to wind down for seconds).
func (c *Cluster) stop() {
	for _, cli := range c.clients {
		cli.Close()
	}
	clear(c.clients)
	for _, m := range c.members {
		m.front.cut()
		if m.etcd != nil {
			m.etcd.Close()
			m.etcd = nil
		}
	}
	waitPeerConnsClosed()
}

// waitPeerConnsClosed waits until the stopped members' peer connections
// have closed. A member's Close leaves the server side of a peer connection
// whose client went idle reading until the peer read timeout (its
// listener's timeoutConn sets a new read deadline on every read, so
// net/http cannot cut the read short); the tests' goroutine leak checks
// would see it.
func waitPeerConnsClosed() {
	deadline := time.Now().Add(rafthttp.ConnReadTimeout + time.Second)
	buf := make([]byte, 1<<20)
	for time.Now().Before(deadline) {
		n := runtime.Stack(buf, true)
		if !bytes.Contains(buf[:n], []byte("go.etcd.io/etcd/client/pkg/v3/transport.timeoutConn.Read")) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// front relays TCP connections from its own loopback port to a member's
// client port, and can cut them all at once.
type front struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func startFront(t testing.TB, target string) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: front of %s: %v", target, err)
	}
	f := &front{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Go(f.accept)
	return f
}

func (f *front) addr() string { return f.ln.Addr().String() }

func (f *front) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Go(func() { f.relay(c) })
	}
}

// relay copies between c and a new connection to the member until either
// side ends or the front is cut.
func (f *front) relay(c net.Conn) {
	m, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, m) {
		return
	}
	var once sync.Once
	end := func() {
		once.Do(func() {
			c.Close()
			m.Close()
			f.untrack(c, m)
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(m, c); end() })
	wg.Go(func() { io.Copy(c, m); end() })
	wg.Wait()
}

// track records the connections; false (having closed them) once cut.
func (f *front) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *front) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		delete(f.conns, c)
	}
}

// cut closes the port and every relayed connection, with a reset rather
// than an orderly close where the system allows, and waits for the relays
// to end. It is idempotent.
func (f *front) cut() {
	f.mu.Lock()
	f.closed = true
	f.ln.Close()
	for c := range f.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
