package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
	"github.com/remora-mesh/remora/proxy/client"
	"github.com/remora-mesh/remora/proxy/server"
)

// backend is a real HTTP server on loopback that names itself.
type backend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s body=%s", name, r.Method, r.URL.RequestURI(), r.Host, body)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) instance() discovery.Instance {
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	var p int
	fmt.Sscan(port, &p)
	return discovery.Instance{ID: b.name, Address: host, Port: p, Weight: 1, Healthy: true}
}

// deadInstance is an address where nothing listens.
func deadInstance(t testing.TB, id string) discovery.Instance {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return discovery.Instance{ID: id, Address: "127.0.0.1", Port: port, Weight: 1, Healthy: true}
}

// fixture is a proxy with upstreams fed from a manual registry.
type fixture struct {
	reg   *discoverytest.Registry
	proxy *proxy.Proxy
	ups   map[string]*upstream.Upstream
	log   *logtest.Hook
	front *front
}

// front is a proxy listener served as Remora serves them: proxy.Server's
// direct path, net/http for the rest.
type front struct {
	URL      string
	Listener net.Listener
}

func serveFront(t testing.TB, h http.Handler) *front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{}, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() { // like httptest's Close: answer what is in flight
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		srv.Close()
		<-done
	})
	return &front{URL: "http://" + ln.Addr().String(), Listener: ln}
}

func newFixture(t testing.TB, names ...string) *fixture {
	t.Helper()
	cfgs := make([]upstream.Config, len(names))
	for i, name := range names {
		cfgs[i] = upstream.Config{Name: name}
	}
	return newFixtureCfg(t, cfgs...)
}

// newFixtureCfg is newFixture with full upstream configs.
func newFixtureCfg(t testing.TB, cfgs ...upstream.Config) *fixture {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	f := &fixture{reg: discoverytest.NewRegistry(), ups: map[string]*upstream.Upstream{}, log: hook}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var routes []proxy.Route
	for _, cfg := range cfgs {
		name := cfg.Name
		u := upstream.New(cfg)
		w, _ := f.reg.Watch(ctx, name)
		go u.Run(ctx, w)
		f.ups[name] = u
		// As remora run builds them: timeouts.per_try bounds the wait for
		// the answer's head.
		routes = append(routes, proxy.Route{Upstream: u, Client: client.Options{ResponseHeaderTimeout: u.Policy().Timeouts.PerTry}})
	}
	f.proxy = proxy.New(proxy.Options{Log: logrus.NewEntry(logger)})
	f.proxy.SetRoutes(routes...)
	f.front = serveFront(t, f.proxy)
	t.Cleanup(f.proxy.Close)
	return f
}

// set publishes instances and waits until the upstream's snapshot has them.
func (f *fixture) set(t testing.TB, name string, set ...discovery.Instance) {
	t.Helper()
	before := f.ups[name].Snapshot().Version
	f.reg.Set(name, set...)
	deadline := time.Now().Add(5 * time.Second)
	for f.ups[name].Snapshot().Version == before {
		if time.Now().After(deadline) {
			t.Fatalf("upstream %s did not take the new set", name)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fixture) get(t testing.TB, host, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+path, nil)
	req.Host = host
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestRoutesByHostAndSpreadsEvenly(t *testing.T) {
	f := newFixture(t, "users", "orders")
	b1, b2, b3 := newBackend(t, "u1", nil), newBackend(t, "u2", nil), newBackend(t, "u3", nil)
	o1 := newBackend(t, "o1", nil)
	f.set(t, "users", b1.instance(), b2.instance(), b3.instance())
	f.set(t, "orders", o1.instance())
	for i := 0; i < 30; i++ {
		resp, body := f.get(t, "users:8080", "/p?q=1")
		if resp.StatusCode != 200 || !strings.Contains(body, "GET /p?q=1 host=users:8080") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
	for _, b := range []*backend{b1, b2, b3} {
		if got := b.hits.Load(); got != 10 {
			t.Errorf("%s got %d of 30 requests; round robin gives 10 each", b.name, got)
		}
	}
	if resp, body := f.get(t, "ORDERS", "/"); resp.StatusCode != 200 || !strings.HasPrefix(body, "o1 ") {
		t.Fatalf("Host ORDERS: %d %q", resp.StatusCode, body)
	}
	if o1.hits.Load() != 1 {
		t.Fatalf("orders backend hits = %d", o1.hits.Load())
	}
}

func TestUnknownHostIs404AndDialsNothing(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "u1", nil).instance())
	// "Anywhere else": a listener that counts every connection it gets.
	elsewhere := testnet.Count(t)
	for _, host := range []string{elsewhere.Addr().String(), "example.com", "users.example.com", "localhost"} {
		resp, body := f.get(t, host, "/")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("Host %q: status %d; want 404", host, resp.StatusCode)
		}
		if !strings.Contains(body, "no upstream named") || !strings.Contains(body, "known upstreams: users") {
			t.Fatalf("Host %q: body %q does not name the host and the known upstreams", host, body)
		}
	}
	// Absolute-form request line to the other listener.
	conn, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", elsewhere.Addr(), elsewhere.Addr())
	reply, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(reply, []byte("HTTP/1.1 404")) {
		t.Fatalf("absolute-form request: %q", reply)
	}
	time.Sleep(50 * time.Millisecond)
	if n := elsewhere.Accepted(); n != 0 {
		t.Fatalf("the outside listener received %d connections; want 0", n)
	}
}

func TestNoAvailableNodeIs503(t *testing.T) {
	f := newFixture(t, "users")
	never := upstream.New(upstream.Config{Name: "never"}) // no registry feeds it
	f.proxy.SetTable(upstream.NewTable(f.ups["users"], never))
	drained := newBackend(t, "drained", nil).instance()
	drained.Weight = 0
	sick := newBackend(t, "sick", nil).instance()
	sick.Healthy = false
	f.set(t, "users", drained, sick)
	resp, body := f.get(t, "users", "/")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"users" has no available node (2 known)`) {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	resp, body = f.get(t, "never", "/")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "not received its nodes") {
		t.Fatalf("unsynced upstream: got %d %q", resp.StatusCode, body)
	}
}

func TestConnectErrorIsRetriedOnAnotherNode(t *testing.T) {
	f := newFixture(t, "users")
	live := newBackend(t, "live", nil)
	f.set(t, "users", live.instance(), deadInstance(t, "dead"))
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/echo", strings.NewReader("payload"))
		req.Host = "users"
		resp, body := do(t, req)
		if resp.StatusCode != 200 || !strings.HasSuffix(body, "body=payload") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	var dead *upstream.Snapshot = f.ups["users"].Snapshot()
	for _, n := range dead.Nodes {
		if n.ID == "dead" && n.Stats.Failures.Load() == 0 {
			t.Fatal("the dead node was never tried; the test proves nothing")
		}
		if n.Stats.InFlight.Load() != 0 {
			t.Fatalf("node %s in-flight = %d after all requests ended", n.ID, n.Stats.InFlight.Load())
		}
	}
	if live.hits.Load() != 20 {
		t.Fatalf("live backend hits = %d; want 20", live.hits.Load())
	}
}

func TestAllNodesDownIs502(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", deadInstance(t, "d1"), deadInstance(t, "d2"))
	resp, body := f.get(t, "users", "/")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "connection refused") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestClientGoneIs499AndNotChargedToNode(t *testing.T) {
	f := newFixture(t, "users")
	release := make(chan struct{})
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	f.set(t, "users", slow.instance())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the request should have been cancelled")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var found bool
		for _, e := range f.log.AllEntries() {
			if e.Data["status"] == proxy.StatusClientClosedRequest && e.Data["upstream"] == "users" {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no log entry with status 499 for the cancelled request")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := f.ups["users"].Snapshot().Nodes[0]
	if got := n.Stats.Failures.Load(); got != 0 {
		t.Fatalf("a client cancellation was charged to the node: failures = %d", got)
	}
	if got := n.Stats.InFlight.Load(); got != 0 {
		t.Fatalf("in-flight = %d after the cancelled request", got)
	}
}

func TestDedicatedListenerIgnoresHost(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "u1", nil).instance())
	front := httptest.NewServer(f.proxy.ForUpstream("users"))
	defer front.Close()
	req, _ := http.NewRequest(http.MethodGet, front.URL+"/x", nil)
	req.Host = "whatever.example"
	resp, body := do(t, req)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "u1 GET /x host=whatever.example") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestHopByHopHeadersAreNotForwarded(t *testing.T) {
	f := newFixture(t, "users")
	var got http.Header
	f.set(t, "users", newBackend(t, "u1", func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() }).instance())
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "1")
	req.Header.Set("X-App", "kept")
	if resp, _ := do(t, req); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	if got.Get("X-Secret") != "" || got.Get("X-App") != "kept" {
		t.Fatalf("forwarded headers: %v", got)
	}
}

// BenchmarkProxyRequest measures one whole request through the proxy
// handler to a keep-alive loopback backend: routing, pick, forward, copy.
func BenchmarkProxyRequest(b *testing.B) {
	f := newFixture(b, "users")
	be := newBackend(b, "u1", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	f.set(b, "users", be.instance())
	req := httptest.NewRequest(http.MethodGet, "http://users/bench", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		f.proxy.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// Trailers and 1xx answers pass through both direct paths (proxy.Server
// and proxy.Transport) and ReverseProxy between them.
func TestTrailersAndEarlyHintsPassThrough(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "t1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Checksum")
		_, _ = io.WriteString(w, "part1 ")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Unannounced", "late")
	}).instance())
	var early []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		early = append(early, code)
		return nil
	}}
	for i := 0; i < 2; i++ { // the second on kept-alive connections
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, f.front.URL+"/", nil)
		req.Host = "users"
		resp, body := do(t, req)
		if body != "part1 part2" || resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("X-Unannounced") != "late" {
			t.Fatalf("request %d: %q trailers %v", i, body, resp.Trailer)
		}
	}
	if len(early) != 2 || early[0] != http.StatusEarlyHints {
		t.Fatalf("1xx answers seen: %v", early)
	}
}

// rawBackend answers every request on a keep-alive connection with a fixed
// 2-byte answer, allocating nothing per request: a benchmark's allocations
// are then the proxy's own.
func rawBackend(b *testing.B) string {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
	return testnet.ServeHeads(b, func(c net.Conn, _ *bufio.Reader) bool {
		_, err := c.Write(answer)
		return err == nil
	}).Addr().String()
}

// BenchmarkDirectPath measures one request through a proxy listener as
// Remora serves it (package server's direct path, the proxy, package client's transport)
// on a keep-alive connection, to a backend and from a client that allocate
// nothing: allocs/op are Remora's per proxied request.
func BenchmarkDirectPath(b *testing.B) {
	f := newFixture(b, "users")
	benchDirect(b, f, f.front.Listener.Addr().String())
}

// BenchmarkDirectPathListener is BenchmarkDirectPath through a listener
// as `remora run` configures one: request IDs on (the request has none),
// the application's forwarding headers kept, and routes that the request
// does not match.
func BenchmarkDirectPathListener(b *testing.B) {
	f := newFixture(b, "users", "api")
	h := f.proxy.Listener("bench", proxy.ListenerOptions{RequestID: true, Routes: []proxy.Rule{
		{Name: "api", PathPrefix: "/api/", Upstream: "api"},
		{Name: "admin", Host: "admin", Upstream: "api"},
	}})
	benchDirect(b, f, serveFront(b, h).Listener.Addr().String())
}

func benchDirect(b *testing.B, f *fixture, addr string) {
	host, port, _ := net.SplitHostPort(rawBackend(b))
	var p int
	fmt.Sscan(port, &p)
	f.set(b, "users", discovery.Instance{ID: "raw", Address: host, Port: p, Weight: 1, Healthy: true})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /bench HTTP/1.1\r\nHost: users\r\nUser-Agent: bench\r\n\r\n")
	body := make([]byte, 2)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		length := -1
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if len(line) == 2 {
				break
			}
			if bytes.HasPrefix(line, []byte("Content-Length: ")) {
				length = int(line[16] - '0')
			}
		}
		if length != 2 {
			b.Fatalf("answer without Content-Length: 2")
		}
		if _, err := io.ReadFull(br, body); err != nil || string(body) != "ok" {
			b.Fatalf("body %q: %v", body, err)
		}
	}
}
