package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/remora-mesh/remora/internal/testnet"
)

// staticConfig is a Remora on ephemeral ports with one static service
// "svc" of the given addresses and the upstream block extra.
func staticConfig(addrs []string, upstream string) string {
	instances := make([]string, len(addrs))
	for i, a := range addrs {
		instances[i] = fmt.Sprintf("{id: n%d, address: %q}", i+1, a)
	}
	return svcConfig(instances, upstream)
}

// grpcBackend is a gRPC server that names itself in a response header and
// can be told to answer UNAVAILABLE.
type grpcBackend struct {
	name        string
	addr        string
	calls       atomic.Int64
	unavailable atomic.Bool
}

func startGRPC(t *testing.T, name string) *grpcBackend {
	t.Helper()
	b := &grpcBackend{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	mark := func(ctx context.Context) error {
		b.calls.Add(1)
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", name))
		if b.unavailable.Load() {
			return status.Error(codes.Unavailable, "going away")
		}
		return nil
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := mark(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := mark(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	reflection.Register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return b
}

// gRPC unary and bidirectional streaming through Remora (h2c both ways),
// balanced over two backends; a backend answering UNAVAILABLE is ejected.
func TestGRPCThroughRemora(t *testing.T) {
	b1, b2 := startGRPC(t, "g1"), startGRPC(t, "g2")
	a := startRemora(t, staticConfig([]string{b1.addr, b2.addr}, `    protocol: h2c
    health: {passive: {consecutive_gateway_failure: 3, base_ejection_time: 1h, max_ejection_percent: 50}}
    retry: {statuses: []}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	conn, err := grpc.NewClient(a.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		var md metadata.MD
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("unary call %d: %v %v", i, resp, err)
		}
		seen[strings.Join(md.Get("x-backend"), "")]++
	}
	if seen["g1"] != 5 || seen["g2"] != 5 {
		t.Fatalf("unary calls spread %v; want 5 each", seen)
	}

	// Bidirectional streaming: 20 requests and responses on one stream.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil || len(resp.GetListServicesResponse().GetService()) == 0 {
			t.Fatalf("recv %d: %v %v", i, resp, err)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}

	// g2 answers UNAVAILABLE: after 3 in a row it is ejected.
	b2.unavailable.Store(true)
	for i := 0; i < 12; i++ {
		hc.Check(ctx, &healthpb.HealthCheckRequest{})
	}
	eventually(t, 2*time.Second, "g2 ejected", func() bool {
		for _, n := range a.Table().Lookup("svc").Snapshot().Nodes {
			if n.ID == "n2" {
				return n.Stats.Health.Ejected()
			}
		}
		return false
	})
	before := b2.calls.Load()
	for i := 0; i < 10; i++ {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("after ejection: %v", err)
		}
	}
	if b2.calls.Load() != before {
		t.Fatal("the ejected gRPC backend still got calls")
	}
}

func TestWebSocketThroughRemora(t *testing.T) {
	up := websocket.Upgrader{}
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	}))
	defer echo.Close()
	a := startRemora(t, staticConfig([]string{echo.Listener.Addr().String()}, ""))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", a.addr("outbound"))
	}}
	c, resp, err := d.Dial("ws://svc/ws", nil)
	if err != nil {
		t.Fatalf("dial through Remora: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := 0; i < 100; i++ {
		msg := fmt.Sprintf("message %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("message %d: %q %v", i, got, err)
		}
	}
	if n := a.Table().Lookup("svc").Snapshot().Nodes[0].Stats.InFlight.Load(); n != 1 {
		t.Fatalf("the WebSocket's node has %d in flight; the connection holds it", n)
	}
}

func TestTCPUpstream(t *testing.T) {
	echo := func(name string) (net.Listener, *atomic.Int64) {
		var n atomic.Int64
		ln := testnet.Serve(t, func(c net.Conn) {
			defer c.Close()
			n.Add(1)
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				fmt.Fprintf(c, "%s:%s\n", name, sc.Text())
			}
		})
		return ln, &n
	}
	l1, n1 := echo("e1")
	l2, n2 := echo("e2")
	defer l2.Close()
	listen := freeAddr(t)
	a := startRemora(t, staticConfig([]string{l1.Addr().String(), l2.Addr().String()}, `    protocol: tcp
    listen: "`+listen+`"
    health: {panic_threshold: 0}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	talk := func() string {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintln(c, "hi")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(line)
	}
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		got[talk()]++
	}
	if got["e1:hi"] != 5 || got["e2:hi"] != 5 {
		t.Fatalf("connections spread %v; want 5 each", got)
	}
	// One node down: new connections all go to the other.
	l1.Close()
	before := n2.Load()
	for i := 0; i < 10; i++ {
		if line := talk(); line != "e2:hi" {
			t.Fatalf("with e1 down: %q", line)
		}
	}
	if n2.Load()-before != 10 || n1.Load() != 5 {
		t.Fatalf("e2 took %d of 10 new connections", n2.Load()-before)
	}
}

// HTTP_PROXY mode: an application with HTTP_PROXY pointing at Remora calls
// http://svc/; anything else is refused and nothing is dialed.
func TestHTTPProxyMode(t *testing.T) {
	b := startBackend(t, "b1")
	elsewhere := testnet.Count(t)
	a := startRemora(t, staticConfig([]string{b.srv.Listener.Addr().String()}, ""))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })
	proxyURL, _ := url.Parse("http://" + a.addr("outbound"))
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	resp, err := client.Get("http://svc/hello")
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b1" {
		t.Fatalf("GET http://svc/ through HTTP_PROXY: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, target := range []string{"http://" + elsewhere.Addr().String() + "/", "http://example.com/"} {
		resp, err := client.Get(target)
		if err != nil || resp.StatusCode != 404 {
			t.Fatalf("GET %s through Remora: %v %v; want 404", target, resp, err)
		}
		resp.Body.Close()
	}
	// CONNECT to an unknown host is refused; to a known upstream it tunnels.
	for _, target := range []string{elsewhere.Addr().String(), "example.com:443"} {
		c, _ := net.Dial("tcp", a.addr("outbound"))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.HasPrefix(line, "HTTP/1.1 404") {
			t.Fatalf("CONNECT %s: %q; want a refusal", target, line)
		}
	}
	c, _ := net.Dial("tcp", a.addr("outbound"))
	defer c.Close()
	fmt.Fprintf(c, "CONNECT svc:80 HTTP/1.1\r\nHost: svc:80\r\n\r\nGET /tunnelled HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n")
	reply, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(reply), "HTTP/1.1 200 Connection Established") || !strings.Contains(string(reply), "b1") {
		t.Fatalf("CONNECT svc: %q", reply)
	}
	time.Sleep(50 * time.Millisecond)
	if n := elsewhere.Accepted(); n != 0 {
		t.Fatalf("%d connections reached the outside listener; want 0", n)
	}
}

// certs makes a CA and a certificate signed by it.
type certs struct {
	caPEM  []byte
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
	dir    string
	t      *testing.T
	once   sync.Once
}

func (c *certs) issue(name string, client bool) (certFile, keyFile string, tc tls.Certificate) {
	c.t.Helper()
	c.once.Do(func() {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		c.ca, _ = x509.ParseCertificate(der)
		c.caKey, c.caPEM = key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		c.serial = 1
	})
	c.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(c.serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.ca, &key.PublicKey, c.caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalECPrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	certFile, keyFile = filepath.Join(c.dir, name+".crt"), filepath.Join(c.dir, name+".key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	tc, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	return certFile, keyFile, tc
}

// hostGet sends GET / with Host host to out and returns the answer's
// status and body; it fails t when there is no answer.
func hostGet(t *testing.T, out, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+out+"/", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// mtlsNode is a TLS node (certificate for "svc") that requires a client
// certificate signed by its test CA, with the files of that CA and of a
// client certificate ("remora") for an upstream's tls.
type mtlsNode struct {
	node                          *httptest.Server
	certs                         *certs
	caFile, clientCert, clientKey string
}

// startMTLSNode starts an mtlsNode serving h; connState, if not nil, is
// its server's ConnState hook. It is closed at the end of the test.
func startMTLSNode(t *testing.T, h http.HandlerFunc, connState func(net.Conn, http.ConnState)) *mtlsNode {
	t.Helper()
	m := &mtlsNode{certs: &certs{dir: t.TempDir(), t: t}}
	_, _, serverCert := m.certs.issue("svc", false)
	m.clientCert, m.clientKey, _ = m.certs.issue("remora", true)
	m.caFile = filepath.Join(m.certs.dir, "ca.pem")
	os.WriteFile(m.caFile, m.certs.caPEM, 0o600)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(m.certs.caPEM)
	m.node = httptest.NewUnstartedServer(h)
	m.node.Config.ConnState = connState
	m.node.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	m.node.StartTLS()
	t.Cleanup(m.node.Close)
	return m
}

// mTLS: a backend that requires a client certificate is reached only when
// the upstream's certificate is configured.
func TestMutualTLSToUpstream(t *testing.T) {
	m := startMTLSNode(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}, nil)
	addr, caFile, clientCert, clientKey := m.node.Listener.Addr().String(), m.caFile, m.clientCert, m.clientKey

	get := func(a *app) (int, string) { return hostGet(t, a.addr("outbound"), "svc") }
	without := startRemora(t, staticConfig([]string{addr}, fmt.Sprintf("    tls: {ca_file: %q}\n    retry: {max_attempts: 1}\n", caFile)))
	eventually(t, 5*time.Second, "ready", func() bool { return without.Table().Lookup("svc").Snapshot().Available == 1 })
	if code, body := get(without); code != http.StatusBadGateway {
		t.Fatalf("without a client certificate: %d %q; want 502", code, body)
	}
	with := startRemora(t, staticConfig([]string{addr}, fmt.Sprintf("    tls: {ca_file: %q, cert_file: %q, key_file: %q}\n", caFile, clientCert, clientKey)))
	eventually(t, 5*time.Second, "ready", func() bool { return with.Table().Lookup("svc").Snapshot().Available == 1 })
	if code, body := get(with); code != 200 || body != "hello remora" {
		t.Fatalf("with the client certificate: %d %q", code, body)
	}
}

// A reload that leaves an upstream's tls files as they were keeps the
// upstream and its pooled connections; rotated files take effect on new
// connections.
func TestReloadKeepsAnUpstreamWithTLS(t *testing.T) {
	var conns atomic.Int64
	m := startMTLSNode(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s", r.TLS.PeerCertificates[0].SerialNumber)
	}, func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	})
	yml := staticConfig([]string{m.node.Listener.Addr().String()},
		fmt.Sprintf("    tls: {ca_file: %q, cert_file: %q, key_file: %q, server_name: svc}\n", m.caFile, m.clientCert, m.clientKey))
	a := startRemora(t, yml)
	get := func() string {
		t.Helper()
		code, body := hostGet(t, a.addr("outbound"), "svc")
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		return body
	}
	first := get()
	if err := a.reload(mustParse(t, yml)); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != first || conns.Load() != 1 {
		t.Fatalf("after a reload with the same files: client certificate %s (was %s), %d connections to the node; want the pooled one kept", got, first, conns.Load())
	}
	m.certs.issue("remora", true) // rotated in place
	if err := a.reload(mustParse(t, yml)); err != nil {
		t.Fatal(err)
	}
	if got := get(); got == first {
		t.Fatalf("after the client certificate was rotated: still serial %s", got)
	}
}
