package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/server"
)

// scriptedNode is a node that answers each request on a connection with
// the raw answer its test gives, and records what it was sent.
type scriptedNode struct {
	addr string
	mu   sync.Mutex
	reqs []string // each request's head and body, as received
	conn int      // connections accepted
}

// newScriptedNode starts a node; answer returns the raw answer to a
// request head, "" to close without one, or an answer ending in "<close>"
// to close after it.
func newScriptedNode(t *testing.T, answer func(head string) string) *scriptedNode {
	n := &scriptedNode{}
	n.addr = testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		n.mu.Lock()
		n.conn++
		n.mu.Unlock()
		br := bufio.NewReader(c)
		for {
			var head strings.Builder
			length := 0
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
					length, _ = strconv.Atoi(strings.TrimSpace(v))
				}
				if line == "\r\n" {
					break
				}
			}
			body := make([]byte, length)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			n.mu.Lock()
			n.reqs = append(n.reqs, head.String()+string(body))
			n.mu.Unlock()
			out := answer(head.String())
			if out == "" {
				return // close without an answer
			}
			out, closing := strings.CutSuffix(out, "<close>")
			if _, err := io.WriteString(c, out); err != nil || closing {
				return
			}
		}
	}).Addr().String()
	return n
}

func (n *scriptedNode) instance() discovery.Instance {
	host, port, _ := net.SplitHostPort(n.addr)
	p, _ := strconv.Atoi(port)
	return discovery.Instance{ID: n.addr, Address: host, Port: p, Weight: 1, Healthy: true}
}

func (n *scriptedNode) stats() (conns int, reqs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.conn, append([]string(nil), n.reqs...)
}

// TestDirectExchangeAnswers sends each kind of answer a node can give
// through proxy.Server and proxy.Transport's direct path, twice on one
// client connection, and checks what the client gets and whether the node
// connection was kept.
func TestDirectExchangeAnswers(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 100<<10/16)
	tests := []struct {
		name, answer string
		status       int
		body         string
		header       map[string]string // "" means absent
		nodeConns    int               // connections the node saw for two requests
		early        bool              // a 103 comes first
	}{
		{name: "simple", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nx-custom-NAME:  v \r\n\r\nok",
			status: 200, body: "ok", header: map[string]string{"Content-Type": "text/plain", "X-Custom-Name": "v"}, nodeConns: 1},
		{name: "hop-by-hop headers dropped", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
			"Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-Kept: 2\r\n\r\nok",
			status: 200, body: "ok", header: map[string]string{"X-Hop": "", "Keep-Alive": "", "Upgrade": "", "Proxy-Authenticate": "", "X-Kept": "2"}, nodeConns: 1},
		{name: "type sniffed as net/http does", answer: "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
			status: 200, body: "<html>hi</html>", header: map[string]string{"Content-Type": "text/html; charset=utf-8"}, nodeConns: 1},
		{name: "node closes", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok<close>",
			status: 200, body: "ok", header: map[string]string{"Connection": ""}, nodeConns: 2},
		{name: "no content", answer: "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", status: 204, header: map[string]string{"X-A": "1"}, nodeConns: 1},
		{name: "not modified", answer: "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n", status: 304, header: map[string]string{"Etag": `"x"`}, nodeConns: 1},
		{name: "longer than a buffer", answer: "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
			status: 200, body: big, nodeConns: 1},
		{name: "longer, sniffed", answer: "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big,
			status: 200, body: big, header: map[string]string{"Content-Type": "text/plain; charset=utf-8"}, nodeConns: 1},
		{name: "chunked (net/http writes it)", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n2\r\nok\r\n0\r\n\r\n",
			status: 200, body: "ok", nodeConns: 1},
		{name: "1xx first", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", nodeConns: 1, early: true},
		{name: "bare line feeds", answer: "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok", status: 200, body: "ok", header: map[string]string{"X-A": "1"}, nodeConns: 1},
		{name: "head longer than the buffer", answer: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 6<<10) + "\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", header: map[string]string{"X-Big": strings.Repeat("b", 6<<10)}, nodeConns: 1},
		{name: "until close (net/http reads it)", answer: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok<close>",
			status: 200, body: "ok", nodeConns: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := newScriptedNode(t, func(string) string { return tc.answer })
			f := newFixture(t, "users")
			f.set(t, "users", node.instance())
			c := testnet.Dial(t, f.front.Listener.Addr().String())
			for i := range 2 {
				c.Send("GET /x HTTP/1.1\r\nHost: users\r\n\r\n")
				resp, body := c.Read("GET")
				if tc.early {
					if resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") != "</a.css>" {
						t.Fatalf("request %d: %d %v, want 103 with its Link first", i, resp.StatusCode, resp.Header)
					}
					resp, body = c.Read("GET")
				}
				if resp.StatusCode != tc.status || body != tc.body {
					t.Fatalf("request %d: %d %.40q, want %d %.40q", i, resp.StatusCode, body, tc.status, tc.body)
				}
				if resp.Close {
					t.Fatalf("request %d: the client connection closes", i)
				}
				for k, v := range tc.header {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("request %d: %s = %q, want %q", i, k, got, v)
					}
				}
				if resp.Header.Get("Date") == "" {
					t.Errorf("request %d: no Date", i)
				}
			}
			if conns, _ := node.stats(); conns != tc.nodeConns {
				t.Errorf("node connections %d, want %d", conns, tc.nodeConns)
			}
		})
	}
}

// TestDirectExchangeBrokenBody: an answer whose body ends before its
// length reaches the client cut short, never as complete; the node's
// connection is not reused, and the exchange is still counted (the node's
// in-flight count returns to zero). Chunked answers take ReverseProxy.
func TestDirectExchangeBrokenBody(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"short", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nxxxxx<close>"},
		{"long", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s<close>", 100<<10, strings.Repeat("x", 50<<10))},
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxx<close>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := newScriptedNode(t, func(string) string { return tc.answer })
			f := newFixture(t, "users")
			f.set(t, "users", node.instance())
			c := testnet.Dial(t, f.front.Listener.Addr().String())
			c.Send("GET /x HTTP/1.1\r\nHost: users\r\n\r\n")
			resp, err := http.ReadResponse(c.Reader(), nil)
			if err == nil {
				var body []byte
				body, err = io.ReadAll(resp.Body)
				if err == nil {
					t.Fatalf("a body of %d bytes came through as complete", len(body))
				}
			}
			if _, err := c.Reader().ReadByte(); err == nil {
				t.Fatal("the client connection stayed open")
			}
			n := f.ups["users"].Snapshot().Nodes[0]
			deadline := time.Now().Add(5 * time.Second)
			for n.Stats.InFlight.Load() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("node in flight %d after the exchange ended", n.Stats.InFlight.Load())
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// TestDirectExchangeRequest checks what the node receives: the head
// ReverseProxy would send (see the head tests), the body, and the body
// again on a retry.
func TestDirectExchangeRequest(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	answer := func(string) string { // the first request anywhere is refused
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
		}
		return "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
	}
	node, other := newScriptedNode(t, answer), newScriptedNode(t, answer)
	f := newFixture(t, "users")
	f.set(t, "users", node.instance(), other.instance())
	c := testnet.Dial(t, f.front.Listener.Addr().String())
	c.Send("PUT /items/1?a=b HTTP/1.1\r\nHost: users\r\nConnection: X-Drop\r\nX-Drop: 1\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 5\r\n\r\nhello")
	if resp, _ := c.Read("PUT"); resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d, want 201 after a retry", resp.StatusCode)
	}
	_, a := node.stats()
	_, b := other.stats()
	reqs := append(a, b...)
	if len(reqs) != 2 {
		t.Fatalf("the nodes saw %d requests, want 2 (one retry)", len(reqs))
	}
	for _, r := range reqs {
		if !strings.HasPrefix(r, "PUT /items/1?a=b HTTP/1.1\r\nHost: users\r\n") || !strings.HasSuffix(r, "\r\n\r\nhello") ||
			!strings.Contains(r, "\r\nContent-Length: 5\r\n") || strings.Contains(r, "X-Drop") || !strings.Contains(r, "X-Forwarded-For: 6.6.6.6\r\n") ||
			strings.Contains(r, "User-Agent") {
			t.Errorf("node got %q", r)
		}
	}
}

// TestDirectExchangeNodeHalfClosesIdle: a node half-closes a keep-alive
// connection while it sits in the pool and keeps it open without
// answering. The next request on it must find the end (the direct path
// writes before it waits, and its wait is bounded) and go out again on a
// new connection, not hang.
func TestDirectExchangeNodeHalfClosesIdle(t *testing.T) {
	var mu sync.Mutex
	conns := 0
	addr := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		mu.Lock()
		conns++
		first := conns == 1
		mu.Unlock()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line != "\r\n" {
				continue
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
			if first {
				time.Sleep(20 * time.Millisecond)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, br) // reads on, answers nothing
				return
			}
		}
	}).Addr().String()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	f := newFixture(t, "users")
	f.set(t, "users", discovery.Instance{ID: "n", Address: host, Port: p, Weight: 1, Healthy: true})
	c := testnet.Dial(t, f.front.Listener.Addr().String())
	c.Send("GET /1 HTTP/1.1\r\nHost: users\r\n\r\n")
	if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	time.Sleep(100 * time.Millisecond) // the end arrives, and the poller sees it
	_ = c.Conn().SetDeadline(time.Now().Add(3 * time.Second))
	c.Send("GET /2 HTTP/1.1\r\nHost: users\r\n\r\n")
	if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if conns != 2 {
		t.Fatalf("node connections %d, want 2 (the half-closed one, then a new one)", conns)
	}
}

// TestDirectExchangeHeaderTimeoutEndsWithTheHead: timeouts.per_try bounds
// the wait for the answer's head only; a body that comes slowly after it
// still comes through, on the simple path and the chunked one.
func TestDirectExchangeHeaderTimeoutEndsWithTheHead(t *testing.T) {
	for _, tc := range []struct{ name, head, body string }{
		{"simple", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n", "ok"},
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n", "2\r\nok\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testnet.Serve(t, func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						_, _ = io.WriteString(c, tc.head)
						time.Sleep(300 * time.Millisecond)
						_, _ = io.WriteString(c, tc.body)
					}
				}
			}).Addr().String()
			host, port, _ := net.SplitHostPort(addr)
			p, _ := strconv.Atoi(port)
			pol := &upstream.Policy{}
			pol.Timeouts.PerTry = 100 * time.Millisecond
			f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, pol)})
			f.set(t, "users", discovery.Instance{ID: "n", Address: host, Port: p, Weight: 1, Healthy: true})
			c := testnet.Dial(t, f.front.Listener.Addr().String())
			c.Send("GET / HTTP/1.1\r\nHost: users\r\n\r\n")
			if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("%d %q, want 200 \"ok\"", resp.StatusCode, body)
			}
		})
	}
}

// TestDirectExchangeSlowAnswerOutlivesTheWaitBound: without a header
// timeout, an answer whose head and body come in pieces further apart
// than the bound of the wait for the answer (waitCheck, 250 ms) comes
// through whole, on a fresh node connection and on a reused one, whose
// read deadline was left from an earlier wait.
func TestDirectExchangeSlowAnswerOutlivesTheWaitBound(t *testing.T) {
	addr := testnet.ServeHeads(t, func(c net.Conn, _ *bufio.Reader) bool {
		for _, part := range []string{"HTTP/1.1 200 OK\r\nContent-", "Length: 4\r\n\r\nok", "ok"} {
			if _, err := io.WriteString(c, part); err != nil {
				return false
			}
			time.Sleep(350 * time.Millisecond)
		}
		return true
	}).Addr().String()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, &upstream.Policy{})})
	f.set(t, "users", discovery.Instance{ID: "n", Address: host, Port: p, Weight: 1, Healthy: true})
	c := testnet.Dial(t, f.front.Listener.Addr().String())
	for i := range 2 {
		c.Send("GET / HTTP/1.1\r\nHost: users\r\n\r\n")
		if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "okok" {
			t.Fatalf("request %d: %d %q, want 200 \"okok\"", i, resp.StatusCode, body)
		}
	}
}

// TestDirectExchangeHeaderTimeoutCoversInformationalAnswers: the wait
// for the answer's head that timeouts.per_try bounds is the wait for the
// final one, as net/http's ResponseHeaderTimeout: a node that sends a 1xx
// answer and then nothing more is given up on at the timeout.
func TestDirectExchangeHeaderTimeoutCoversInformationalAnswers(t *testing.T) {
	addr := testnet.Serve(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
				time.Sleep(time.Second)
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	}).Addr().String()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	pol := &upstream.Policy{}
	pol.Timeouts.PerTry = 100 * time.Millisecond
	pol.Retry.MaxAttempts = 1
	f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, pol)})
	f.set(t, "users", discovery.Instance{ID: "n", Address: host, Port: p, Weight: 1, Healthy: true})
	c := testnet.Dial(t, f.front.Listener.Addr().String())
	start := time.Now()
	c.Send("GET / HTTP/1.1\r\nHost: users\r\n\r\n")
	if resp, _ := c.Read("GET"); resp.StatusCode != http.StatusEarlyHints {
		t.Fatalf("%d, want the 103 first", resp.StatusCode)
	}
	resp, body := c.Read("GET")
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 700*time.Millisecond {
		t.Fatalf("%d %q after %v, want 504 at the per-try timeout", resp.StatusCode, body, time.Since(start))
	}
}

// writeCounter counts the writes made to the connections a listener
// accepts (they are no *net.TCPConn then: the server writes through them).
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, l: l}, nil
}

type countedConn struct {
	net.Conn
	l *writeCounter
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.l.writes.Add(1)
	return c.Conn.Write(p)
}

// A body of known length that is all there when read goes to the client
// in one write with its head, however many reads it took: writing each
// read as it came cost a send a request (CPU per request at 16 KiB rose
// by a fifth). Only a node that pauses inside the body makes it two.
func TestDirectBodyThatIsThereIsOneWrite(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 16<<10/16)
	node := newScriptedNode(t, func(string) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	})
	f := newFixture(t, "users")
	f.set(t, "users", node.instance())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &writeCounter{Listener: ln}
	srv := server.New(server.Options{}, f.proxy)
	go func() { _ = srv.Serve(counted) }()
	t.Cleanup(func() { srv.Close() })
	c := testnet.Dial(t, ln.Addr().String())
	const requests = 30
	single := 0
	for i := range requests {
		before := counted.writes.Load()
		c.Send("GET /x HTTP/1.1\r\nHost: users\r\n\r\n")
		resp, got := c.Read("GET")
		if resp.StatusCode != 200 || got != body {
			t.Fatalf("request %d: %d, %d bytes", i, resp.StatusCode, len(got))
		}
		if counted.writes.Load()-before == 1 {
			single++
		}
	}
	// Bytes of one write of the node's may still be arriving when the
	// body is read: allow a few such answers.
	if single < requests*2/3 {
		t.Errorf("%d of %d answers went out in one write; want nearly all", single, requests)
	}
}
