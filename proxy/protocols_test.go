package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/net/http2"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
	"github.com/remora-mesh/remora/proxy/client"
)

// newFixtureClient is newFixture with the upstreams' client options
// (protocol: h2c, say).
func newFixtureClient(t testing.TB, opts client.Options, names ...string) *fixture {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	f := &fixture{reg: discoverytest.NewRegistry(), ups: map[string]*upstream.Upstream{}, log: hook}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var routes []proxy.Route
	for _, name := range names {
		u := upstream.New(upstream.Config{Name: name})
		w, _ := f.reg.Watch(ctx, name)
		go u.Run(ctx, w)
		f.ups[name] = u
		routes = append(routes, proxy.Route{Upstream: u, Client: opts})
	}
	f.proxy = proxy.New(proxy.Options{Log: logrus.NewEntry(logger)})
	f.proxy.SetRoutes(routes...)
	f.front = serveFront(t, f.proxy)
	t.Cleanup(f.proxy.Close)
	return f
}

// newH2CBackend is newBackend serving HTTP/1.1 and h2c (prior knowledge).
func newH2CBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	b.srv.Config.Protocols = new(http.Protocols)
	b.srv.Config.Protocols.SetHTTP1(true)
	b.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	return b
}

// exchangeRaw writes msg on a new connection to addr and returns all it
// reads until the connection ends or wait passes.
func exchangeRaw(t *testing.T, addr, msg string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, _ := io.ReadAll(c)
	return string(b)
}

// What follows a CONNECT's head is the client's tunnel. A CONNECT that is
// refused must end the connection: the bytes the client sent for the
// tunnel (pipelined, or announced as a body) must never be read as
// requests and sent on to an upstream.
func TestRefusedCONNECTEndsTheConnection(t *testing.T) {
	f := newFixture(t, "users")
	b := newBackend(t, "u1", nil)
	f.set(t, "users", b.instance())
	lf, lurl := listenerFixture(t, proxy.ListenerOptions{})
	lf.set(t, "users", b.instance()) // a second node of the listener's users
	const tunnelled = "GET /smuggled HTTP/1.1\r\nHost: users\r\n\r\n"
	for _, tc := range []struct{ name, addr, head string }{
		{"unknown host", f.front.URL, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\n\r\n"},
		{"unknown host, with a body", f.front.URL, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\nContent-Length: 5\r\n\r\nhello"},
		{"unknown host through a listener", lurl, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\n\r\n"},
		{"dedicated port", serveFront(t, f.proxy.ForUpstream("nowhere")).URL, "CONNECT users:80 HTTP/1.1\r\nHost: users:80\r\n\r\n"},
	} {
		before := b.hits.Load()
		out := exchangeRaw(t, strings.TrimPrefix(tc.addr, "http://"), tc.head+tunnelled, 2*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 404 ") {
			t.Errorf("%s: %q; want 404", tc.name, out)
		}
		if strings.Count(out, "HTTP/1.1 ") != 1 || b.hits.Load() != before {
			t.Errorf("%s: the tunnel's bytes were read as a request: %q", tc.name, out)
		}
	}
}

// An Upgrade header that the Connection header does not list asks for
// nothing (RFC 9110 section 7.8; ReverseProxy drops it as hop-by-hop):
// the request goes to an h2c upstream as any other, not answered 501.
func TestStrayUpgradeHeaderToH2CUpstreamIsForwarded(t *testing.T) {
	f := newFixtureClient(t, client.Options{H2C: true}, "users")
	f.set(t, "users", newH2CBackend(t, "u1", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" upgrade="+r.Header.Get("Upgrade"))
	}).instance())
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	req.Header.Set("Upgrade", "websocket")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK || body != "HTTP/2.0 upgrade=" {
		t.Fatalf("%d %q; want the node's answer over HTTP/2, without Upgrade", resp.StatusCode, body)
	}
	req.Header.Set("Connection", "Upgrade") // a real one: HTTP/2 cannot carry it
	if resp, body := do(t, req); resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("a real Upgrade: %d %q; want 501", resp.StatusCode, body)
	}
}

// An h2c node that refuses every stream, or goes away before each, beside
// a healthy one: every request, a POST too (nothing was processed), is
// answered by the healthy node at once, as after a connect failure; none
// waits out the minute net/http's HTTP/2 code spends sending it to the
// same node again.
func TestH2CNodeThatProcessesNothingIsPassedOver(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer testnet.H2Answer
	}{
		{"refuses every stream", func(fr *http2.Framer, _ func(string), id uint32, _, _ int) {
			_ = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		}},
		{"goes away before every stream", func(fr *http2.Framer, _ func(string), _ uint32, _, _ int) {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureClient(t, client.Options{H2C: true}, "users")
			addr, _ := testnet.ServeH2(t, tc.answer)
			host, port, _ := net.SplitHostPort(addr)
			p, _ := strconv.Atoi(port)
			good := newH2CBackend(t, "good", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
			f.set(t, "users", discovery.Instance{ID: "refuser", Address: host, Port: p, Weight: 1, Healthy: true}, good.instance())
			for i, method := range []string{"GET", "GET", "POST", "POST"} {
				req, _ := http.NewRequest(method, f.front.URL+"/", strings.NewReader("body"))
				req.Host = "users"
				start := time.Now()
				resp, body := do(t, req)
				if took := time.Since(start); resp.StatusCode != 200 || body != "ok" || took > 2*time.Second {
					t.Fatalf("request %d (%s): %d %q after %v; want the healthy node's answer at once", i, method, resp.StatusCode, body, took)
				}
			}
		})
	}
}

// newTLSBackend is newBackend over TLS, offering h2 and HTTP/1.1 (a
// protocol: h2 upstream's node).
func newTLSBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	b.srv.EnableHTTP2 = true
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

// h2Options is what validate makes of protocol: h2 with tls.
func h2Options() client.Options {
	return client.Options{TLS: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}}
}

// HTTP/2 has no Upgrade over TLS either: one to a protocol: h2 upstream
// is answered 501, as to h2c, and charges no node; a WebSocket, which
// net/http sends to such a node over HTTP/1.1, still passes through.
func TestUpgradeToH2UpstreamIsRefused(t *testing.T) {
	f := newFixtureClient(t, h2Options(), "users")
	ended := make(chan error, 1)
	upgrade := upgradeNode("websocket", ended)
	f.set(t, "users", newTLSBackend(t, "u1", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgrade(w, r)
			return
		}
		_, _ = io.WriteString(w, r.Proto)
	}).instance())
	if resp, body := f.get(t, "users", "/"); resp.StatusCode != http.StatusOK || body != "HTTP/2.0" {
		t.Fatalf("plain GET: %d %q; want it over HTTP/2", resp.StatusCode, body)
	}
	n := f.ups["users"].Snapshot().Nodes[0]
	failures := n.Stats.Failures.Load()
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "foo/1")
	if resp, body := do(t, req); resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("Upgrade: foo/1 to an h2 upstream: %d %q; want 501", resp.StatusCode, body)
	}
	if got := n.Stats.Failures.Load() - failures; got != 0 {
		t.Errorf("the refused upgrade charged the node %d failure(s)", got)
	}
	out := exchangeRaw(t, strings.TrimPrefix(f.front.URL, "http://"),
		"GET /ws HTTP/1.1\r\nHost: users\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 101 ") || !strings.HasSuffix(out, "node-first") {
		t.Errorf("a WebSocket to an h2 upstream: %q; want the node's 101 and first bytes", out)
	}
}

// timeouts.connect bounds reaching a TLS node, its handshake included: a
// node that accepts the connection and never answers the handshake fails
// the attempt within it, as a connect failure (another node gets even a
// POST), as Envoy's connect_timeout does; without a bound the request
// would wait forever.
func TestConnectTimeoutBoundsTheTLSHandshake(t *testing.T) {
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		mute.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	opts := h2Options()
	opts.ConnectTimeout = 200 * time.Millisecond
	for _, tc := range []struct {
		name  string
		nodes int
	}{{"the only node", 1}, {"beside a good node", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureClient(t, opts, "users")
			nodes := []discovery.Instance{{ID: "mute", Address: "127.0.0.1", Port: mute.Addr().(*net.TCPAddr).Port, Weight: 1, Healthy: true}}
			if tc.nodes == 2 {
				nodes = append(nodes, newTLSBackend(t, "good", func(http.ResponseWriter, *http.Request) {}).instance())
			}
			f.set(t, "users", nodes...)
			c := &http.Client{Timeout: 3 * time.Second}
			for range 2 * tc.nodes { // round robin: each node first at least once
				// A POST: not replayable, so only a connect failure sends
				// it to the other node.
				req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/", strings.NewReader("once"))
				req.Host = "users"
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("no answer after %v: %v; want one within about the connect timeout", time.Since(start).Round(time.Millisecond), err)
				}
				resp.Body.Close()
				want := http.StatusOK
				if tc.nodes == 1 {
					want = http.StatusGatewayTimeout // as for a dial past the connect timeout
				}
				if resp.StatusCode != want {
					t.Errorf("%d after %v; want %d", resp.StatusCode, time.Since(start).Round(time.Millisecond), want)
				}
			}
			for _, n := range f.ups["users"].Snapshot().Nodes {
				if n.ID == "mute" && n.Stats.Health.ConsecutiveLocalOrigin.Load() == 0 {
					t.Errorf("the mute node's failures were not counted as connect failures (consecutive_local_origin_failure)")
				}
			}
		})
	}
}

// upgradeNode answers an upgrade to proto with 101 and its own first
// bytes at once, then echoes what it reads, each read in brackets; it
// reports on ended how its connection ended.
func upgradeNode(proto string, ended chan<- error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+proto+"\r\n\r\nnode-first")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				_, _ = io.WriteString(c, "["+string(buf[:n])+"]")
			}
			if err != nil {
				ended <- err
				return
			}
		}
	}
}

// An upgraded connection carries every byte both ways: the node's first
// bytes right after its 101, and the client's sent right after its
// request, before the 101 (RFC 9110 section 7.8), which net/http's server
// has read ahead into its buffer; a half-close passes on.
func TestUpgradeCarriesTheClientsEarlyBytes(t *testing.T) {
	f := newFixture(t, "users")
	ended := make(chan error, 1)
	f.set(t, "users", newBackend(t, "u1", upgradeNode("echo", ended)).instance())
	c, err := net.Dial("tcp", strings.TrimPrefix(f.front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: users\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := "HTTP/1.1 101 Switching Protocols\r\n"
	got := make([]byte, 0, 512)
	buf := make([]byte, 512)
	for !strings.Contains(string(got), "[early]") {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("%q: %v; want the 101, node-first and [early]", got, err)
		}
	}
	if !strings.HasPrefix(string(got), want) || !strings.Contains(string(got), "\r\n\r\nnode-first") {
		t.Fatalf("%q; want the 101, then node-first", got)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("the node's side ended with %v; want the client's half-close (EOF)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client's half-close did not reach the node")
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after the half-close: %q %v; want the node's end", rest, err)
	}
}

// A node that answers 101 with another protocol than the client asked
// for, or any to a request that asked for none, broke the protocol: the
// client gets 502, the node's connection is closed (never left open, as
// ReverseProxy leaves it) and the failure is the node's.
func TestSwitchToAnUnaskedProtocolIsTheNodesFailure(t *testing.T) {
	for _, tc := range []struct{ name, req string }{
		{"another protocol", "GET /ws HTTP/1.1\r\nHost: users\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"},
		{"no upgrade asked for", "GET /plain HTTP/1.1\r\nHost: users\r\n\r\n"},
	} {
		f := newFixture(t, "users")
		ended := make(chan error, 1)
		f.set(t, "users", newBackend(t, "u1", upgradeNode("other", ended)).instance())
		out := exchangeRaw(t, strings.TrimPrefix(f.front.URL, "http://"), tc.req, time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 502 ") {
			t.Errorf("%s: %q; want 502", tc.name, out)
		}
		select {
		case err := <-ended:
			if err != io.EOF {
				t.Errorf("%s: the node's connection ended with %v; want it closed (EOF)", tc.name, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the node's connection was left open", tc.name)
		}
		if n := f.ups["users"].Snapshot().Nodes[0]; n.Stats.Failures.Load() != 1 || n.Stats.InFlight.Load() != 0 {
			t.Errorf("%s: the node has %d failures, %d in flight; want 1, 0", tc.name, n.Stats.Failures.Load(), n.Stats.InFlight.Load())
		}
	}
}

// A request's trailers reach the node with their values, from an
// HTTP/1.1 or an h2c client, to an HTTP/1.1 or an h2c upstream, and an
// answer's trailers reach the client.
func TestRequestTrailersReachTheNode(t *testing.T) {
	h := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Answer-Sum")
		_, _ = io.WriteString(w, string(body)+" sum="+r.Trailer.Get("X-Request-Sum"))
		w.Header().Set("X-Answer-Sum", "a1")
	}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	for _, up := range []string{"http", "h2c"} {
		f := newFixtureClient(t, client.Options{H2C: up == "h2c"}, "users")
		f.set(t, "users", newH2CBackend(t, "u1", h).instance())
		for _, c := range []*http.Client{http.DefaultClient, {Transport: h2c}} {
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/", pr)
			req.Host = "users"
			req.Trailer = http.Header{"X-Request-Sum": nil}
			go func() {
				_, _ = io.WriteString(pw, "data")
				req.Trailer.Set("X-Request-Sum", "r1")
				pw.Close()
			}()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s upstream: %v", up, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "data sum=r1" || resp.Trailer.Get("X-Answer-Sum") != "a1" {
				t.Errorf("%s upstream, %s client: %q, trailers %v; want \"data sum=r1\" and X-Answer-Sum: a1", up, resp.Proto, body, resp.Trailer)
			}
		}
	}
}

// An upstream's timeouts.idle bounds an upgraded connection as it bounds
// a CONNECT tunnel: quiet both ways that long, both its sides close;
// bytes either way, the client's or the node's alone, keep it open.
func TestUpgradeIdleTimeout(t *testing.T) {
	const idle = 600 * time.Millisecond
	// The node switches, then writes a byte every 100 ms for talk, then
	// reads until its side ends (reported on ended).
	node := func(talk time.Duration, ended chan<- time.Time) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			for start := time.Now(); time.Since(start) < talk; time.Sleep(100 * time.Millisecond) {
				if _, err := io.WriteString(c, "n"); err != nil {
					return
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 100)
			for {
				n, err := brw.Read(buf)
				if n > 0 {
					_, _ = c.Write(buf[:n]) // echoed
				}
				if err != nil {
					ended <- time.Now()
					return
				}
			}
		}
	}
	for _, tc := range []struct {
		name                   string
		nodeTalks, clientTalks time.Duration
	}{
		{"quiet", 0, 0},
		{"the client talks", 0, 1500 * time.Millisecond},
		{"the node talks", 1500 * time.Millisecond, 0},
	} {
		p := &upstream.Policy{}
		p.Timeouts.Idle = idle
		f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, p)})
		ended := make(chan time.Time, 1)
		f.set(t, "users", newBackend(t, "u1", node(tc.nodeTalks, ended)).instance())
		c, err := net.Dial("tcp", strings.TrimPrefix(f.front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: users\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(c)
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%s: %v %v; want 101", tc.name, resp, err)
		}
		start := time.Now()
		for time.Since(start) < tc.clientTalks {
			_, _ = io.WriteString(c, "c")
			time.Sleep(100 * time.Millisecond)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, br) // until the relay ends
		closed := time.Since(start)
		talked := max(tc.nodeTalks, tc.clientTalks)
		switch {
		case err != nil:
			t.Errorf("%s: the client's side: %v after %v; want it closed by the idle bound (%v)", tc.name, err, closed, idle)
		case closed < talked:
			t.Errorf("%s: the relay closed after %v, while bytes were moving (for %v)", tc.name, closed, talked)
		case closed > talked+idle+3*time.Second:
			t.Errorf("%s: the relay closed after %v; want about %v after the last byte (%v)", tc.name, closed, idle, talked)
		}
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the node's side was left open", tc.name)
		}
	}
}
