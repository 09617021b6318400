package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/proxy"
)

// directServer serves h with proxy.Server on loopback. The handler marks
// each answer with the path that served it: net/http's ResponseWriter can
// hijack the connection, the direct path's cannot.
func directServer(t *testing.T, hs *http.Server, h http.HandlerFunc) (addr string, srv *proxy.Server) {
	t.Helper()
	mark := func(w http.ResponseWriter, r *http.Request) {
		via := "direct"
		if _, ok := w.(http.Hijacker); ok {
			via = "net/http"
		}
		w.Header().Set("X-Via", via)
		h(w, r)
	}
	if hs == nil {
		hs = &http.Server{}
	}
	hs.Handler = http.HandlerFunc(mark)
	srv = proxy.NewServer(hs, http.HandlerFunc(mark))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), srv
}

// rawConn sends raw requests and reads answers on one connection.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil && resp.StatusCode < 400 { // an error answer may end with a reset
		r.t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

func TestServerDirectPathAndHandOver(t *testing.T) {
	addr, _ := directServer(t, &http.Server{MaxHeaderBytes: 1 << 10}, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s host=%s", r.Method, r.URL.RequestURI(), r.Host)
	})
	for _, tc := range []struct {
		name, req string
		status    int
		via       string
	}{
		{"origin form", "GET /a?b=1 HTTP/1.1\r\nHost: users\r\n\r\n", 200, "direct"},
		{"HEAD", "HEAD /a HTTP/1.1\r\nHost: users\r\n\r\n", 200, "direct"},
		{"HTTP/1.0", "GET /a HTTP/1.0\r\nHost: users\r\n\r\n", 200, "net/http"},
		{"absolute form", "GET http://users/a HTTP/1.1\r\nHost: users\r\n\r\n", 200, "net/http"},
		{"upgrade", "GET /a HTTP/1.1\r\nHost: users\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 200, "net/http"},
		{"expect", "POST /a HTTP/1.1\r\nHost: users\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", 200, "net/http"},
		{"no Host", "GET /a HTTP/1.1\r\n\r\n", 400, ""},
		{"two Hosts", "GET /a HTTP/1.1\r\nHost: users\r\nhost: admin\r\n\r\n", 400, ""},
		{"bad header value", "GET /a HTTP/1.1\r\nHost: users\r\nX-A: \x01\r\n\r\n", 400, ""},
		{"oversized head", "GET /a HTTP/1.1\r\nHost: users\r\nX-Big: " + strings.Repeat("b", 8<<10) + "\r\n\r\n", 431, ""},
		{"not HTTP", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			c.send(tc.req)
			method, _, _ := strings.Cut(tc.req, " ")
			resp, body := c.read(method)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Via") != tc.via {
				t.Fatalf("%d via %q: %q; want %d via %q", resp.StatusCode, resp.Header.Get("X-Via"), body, tc.status, tc.via)
			}
			if tc.status == 200 && method == "GET" && !strings.HasPrefix(body, "GET /a") {
				t.Fatalf("body %q", body)
			}
		})
	}
}

func TestServerKeepAliveAndPipelining(t *testing.T) {
	var conns atomic.Int64
	hs := &http.Server{ConnState: func(net.Conn, http.ConnState) { conns.Add(1) }}
	addr, _ := directServer(t, hs, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.URL.Path, body)
	})
	c := dialRaw(t, addr)
	c.send("GET /1 HTTP/1.1\r\nHost: u\r\n\r\nPOST /2 HTTP/1.1\r\nHost: u\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n")
	for _, want := range []string{"/1:", "/2:abc", "/3:xy"} {
		resp, body := c.read("GET")
		if body != want || resp.Header.Get("X-Via") != "direct" || resp.ContentLength != int64(len(want)) {
			t.Fatalf("%q via %s (length %d); want %q direct", body, resp.Header.Get("X-Via"), resp.ContentLength, want)
		}
	}
	if conns.Load() != 0 {
		t.Fatal("a connection went to net/http")
	}
}

func TestServerResponseFraming(t *testing.T) {
	addr, _ := directServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		case "/stream":
			_, _ = io.WriteString(w, "part1 ")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "part2")
		case "/big":
			_, _ = io.WriteString(w, strings.Repeat("z", 10<<10))
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			_, _ = io.WriteString(w, "data")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		case "/early":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			_, _ = io.WriteString(w, "after hints")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/short":
			w.Header().Set("Content-Length", "10")
			_, _ = io.WriteString(w, "short")
		}
	})
	c := dialRaw(t, addr)
	get := func(path string) (*http.Response, string) {
		c.send("GET " + path + " HTTP/1.1\r\nHost: u\r\n\r\n")
		return c.read("GET")
	}
	if resp, body := get("/length"); body != "hello" || resp.ContentLength != 5 {
		t.Fatalf("/length: %q %d", body, resp.ContentLength)
	}
	if resp, body := get("/stream"); body != "part1 part2" || len(resp.TransferEncoding) != 1 {
		t.Fatalf("/stream: %q %v", body, resp.TransferEncoding)
	}
	if resp, body := get("/big"); len(body) != 10<<10 || resp.Header.Get("Content-Type") == "" {
		t.Fatalf("/big: %d bytes, type %q", len(body), resp.Header.Get("Content-Type"))
	}
	if resp, body := get("/trailers"); body != "data" || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("/trailers: %q %v", body, resp.Trailer)
	}
	c.send("GET /early HTTP/1.1\r\nHost: u\r\n\r\n")
	if resp, _ := c.read("GET"); resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") == "" {
		t.Fatalf("/early: first answer %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "after hints" || resp.Header.Get("Link") != "" {
		t.Fatalf("/early: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := get("/nocontent"); resp.StatusCode != 204 || body != "" {
		t.Fatalf("/nocontent: %d %q", resp.StatusCode, body)
	}
	c.send("HEAD /length HTTP/1.1\r\nHost: u\r\n\r\n")
	if resp, body := c.read("HEAD"); resp.ContentLength != 5 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.ContentLength, body)
	}
	// A body shorter than its Content-Length ends the connection.
	c.send("GET /short HTTP/1.1\r\nHost: u\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a cut-short body read to its end without an error")
	}
}

// An unread request body is dropped when small, and ends the connection
// when large.
func TestServerUnreadRequestBody(t *testing.T) {
	addr, _ := directServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ignored the body")
	})
	c := dialRaw(t, addr)
	c.send("POST /a HTTP/1.1\r\nHost: u\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: u\r\n\r\n")
	c.read("POST")
	if resp, _ := c.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("the next request: %d", resp.StatusCode)
	}
	big := 1 << 20
	c.send(fmt.Sprintf("POST /a HTTP/1.1\r\nHost: u\r\nContent-Length: %d\r\n\r\n", big))
	go func() { _, _ = c.c.Write(make([]byte, big)) }()
	resp, _ := c.read("POST")
	if !resp.Close {
		t.Fatal("the answer to a request whose large body was not read keeps the connection")
	}
}

func TestServerSlowClientIsCutOff(t *testing.T) {
	addr, _ := directServer(t, &http.Server{ReadHeaderTimeout: 100 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {})
	c := dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: u\r\n")
	start := time.Now()
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("the server answered an unfinished head")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("cut off after %v", took)
	}
}

// A client that leaves while its request runs cancels it; a pipelined
// request that arrives while one runs is not lost to the watch.
func TestServerClientWatch(t *testing.T) {
	cancelled := make(chan error, 1)
	addr, _ := directServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
			select {
			case <-r.Context().Done():
				cancelled <- context.Cause(r.Context())
			case <-time.After(5 * time.Second):
				cancelled <- nil
			}
		case "/slow":
			time.Sleep(3 * proxy.ClientWatchDelay)
			_, _ = io.WriteString(w, "slow")
		default:
			_, _ = io.WriteString(w, "next")
		}
	})
	c := dialRaw(t, addr)
	c.send("GET /slow HTTP/1.1\r\nHost: u\r\n\r\n")
	time.Sleep(2 * proxy.ClientWatchDelay) // the watch runs by now
	c.send("GET /next HTTP/1.1\r\nHost: u\r\n\r\n")
	if _, body := c.read("GET"); body != "slow" {
		t.Fatalf("first answer %q", body)
	}
	if _, body := c.read("GET"); body != "next" {
		t.Fatalf("pipelined answer %q", body)
	}

	c = dialRaw(t, addr)
	c.send("GET /wait HTTP/1.1\r\nHost: u\r\n\r\n")
	time.Sleep(proxy.ClientWatchDelay / 2)
	c.c.Close()
	if err := <-cancelled; err == nil {
		t.Fatal("the request ran on after its client left")
	}
}

func TestServerShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	addr, srv := directServer(t, nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	idle := dialRaw(t, addr)
	idle.send("GET / HTTP/1.1\r\nHost: u\r\n\r\n")
	idle.read("GET")
	busy := dialRaw(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: u\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if _, err := idle.br.ReadByte(); err == nil {
		t.Fatal("an idle connection stayed open after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if resp, body := busy.read("GET"); body != "done" || !resp.Close {
		t.Fatalf("in-flight answer %q close=%v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// rawBackend answers every request on a keep-alive connection with a fixed
// 2-byte answer, allocating nothing per request: a benchmark's allocations
// are then the proxy's own.
func rawBackend(b *testing.B) string {
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
	return testnet.Serve(b, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) == 2 { // the blank line ends a head without a body
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}
	}).Addr().String()
}

// BenchmarkDirectPath measures one request through a proxy listener as
// Remora serves it (proxy.Server's direct path, the proxy, proxy.Transport)
// on a keep-alive connection, to a backend and from a client that allocate
// nothing: allocs/op are Remora's per proxied request.
func BenchmarkDirectPath(b *testing.B) {
	f := newFixture(b, "users")
	host, port, _ := net.SplitHostPort(rawBackend(b))
	var p int
	fmt.Sscan(port, &p)
	f.set(b, "users", discovery.Instance{ID: "raw", Address: host, Port: p, Weight: 1, Healthy: true})
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
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
