package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/proxy/server"
)

// directServer serves h with a Server on loopback. The handler marks
// each answer with the path that served it: net/http's ResponseWriter can
// hijack the connection, the direct path's cannot.
func directServer(t *testing.T, opts server.Options, h http.HandlerFunc) (addr string, srv *server.Server) {
	t.Helper()
	mark := func(w http.ResponseWriter, r *http.Request) {
		via := "direct"
		if _, ok := w.(http.Hijacker); ok {
			via = "net/http"
		}
		w.Header().Set("X-Via", via)
		h(w, r)
	}
	srv = server.New(opts, http.HandlerFunc(mark))
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

func TestServerDirectPathAndHandOver(t *testing.T) {
	addr, _ := directServer(t, server.Options{MaxHeaderBytes: 1 << 10}, func(w http.ResponseWriter, r *http.Request) {
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
			c := testnet.Dial(t, addr)
			c.Send(tc.req)
			method, _, _ := strings.Cut(tc.req, " ")
			resp, body := c.Read(method)
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
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.URL.Path, body)
	})
	c := testnet.Dial(t, addr)
	c.Send("GET /1 HTTP/1.1\r\nHost: u\r\n\r\nPOST /2 HTTP/1.1\r\nHost: u\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n")
	for _, want := range []string{"/1:", "/2:abc", "/3:xy"} {
		resp, body := c.Read("GET")
		if body != want || resp.Header.Get("X-Via") != "direct" || resp.ContentLength != int64(len(want)) {
			t.Fatalf("%q via %s (length %d); want %q direct", body, resp.Header.Get("X-Via"), resp.ContentLength, want)
		}
	}
}

// TestServerReusedRequestStartsClean: the direct path parses each request
// into the connection's one http.Request and URL. A handler that changes
// every part of the request it got must not leave anything in the next
// one, which must match what http.ReadRequest reads.
func TestServerReusedRequestStartsClean(t *testing.T) {
	type ctxKey struct{}
	heads := []string{
		"POST /first/path?a=1 HTTP/1.1\r\nHost: one\r\nX-Old: 1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
		"GET /second?b=2 HTTP/1.1\r\nHost: two\r\nX-New: 2\r\n\r\n",
		"GET /third%20escaped?? HTTP/1.1\r\nHost: three\r\n\r\n",
		"GET /fourth HTTP/1.1\r\nHost: four\r\n\r\n",
	}
	got := make(chan string, len(heads))
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%s %#v %q %q %v %v %d %v %v %v %v body=%q", r.Method, *r.URL, r.Host, r.RequestURI, r.Header,
			r.Close, r.ContentLength, r.Form, r.Trailer, r.TLS != nil, r.Context().Value(ctxKey{}), body)
		// Scribble over everything the handler can reach.
		r.Method, r.Host, r.RequestURI, r.Close, r.ContentLength = "PATCH", "scribbled", "/scribbled", true, 99
		r.URL.Path, r.URL.RawQuery, r.URL.Host, r.URL.Scheme, r.URL.Fragment = "/scribbled", "s=1", "h", "https", "f"
		r.Header.Set("X-Scribbled", "1")
		r.Form = map[string][]string{"f": {"1"}}
		r.Trailer = http.Header{"T": {"1"}}
		*r = *r.WithContext(context.WithValue(r.Context(), ctxKey{}, "scribbled"))
		r.URL = &url.URL{Path: "/replaced"}
	})
	c := testnet.Dial(t, addr)
	for _, head := range heads {
		c.Send(head)
		if resp, body := c.Read("GET"); resp.Header.Get("X-Via") != "direct" {
			t.Fatalf("%q answered via %q: %q", head, resp.Header.Get("X-Via"), body)
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatal(err)
		}
		delete(want.Header, "Host")
		body, _ := io.ReadAll(want.Body)
		wantLine := fmt.Sprintf("%s %#v %q %q %v %v %d %v %v %v %v body=%q", want.Method, *want.URL, want.Host, want.RequestURI, want.Header,
			want.Close, want.ContentLength, want.Form, want.Trailer, want.TLS != nil, nil, body)
		if line := <-got; line != wantLine {
			t.Errorf("handler got\n%s\nnet/http reads\n%s", line, wantLine)
		}
	}
}

func TestServerResponseFraming(t *testing.T) {
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
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
	c := testnet.Dial(t, addr)
	get := func(path string) (*http.Response, string) {
		c.Send("GET " + path + " HTTP/1.1\r\nHost: u\r\n\r\n")
		return c.Read("GET")
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
	c.Send("GET /early HTTP/1.1\r\nHost: u\r\n\r\n")
	if resp, _ := c.Read("GET"); resp.StatusCode != http.StatusEarlyHints || resp.Header.Get("Link") == "" {
		t.Fatalf("/early: first answer %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "after hints" || resp.Header.Get("Link") != "" {
		t.Fatalf("/early: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := get("/nocontent"); resp.StatusCode != 204 || body != "" {
		t.Fatalf("/nocontent: %d %q", resp.StatusCode, body)
	}
	c.Send("HEAD /length HTTP/1.1\r\nHost: u\r\n\r\n")
	if resp, body := c.Read("HEAD"); resp.ContentLength != 5 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.ContentLength, body)
	}
	// A body shorter than its Content-Length ends the connection.
	c.Send("GET /short HTTP/1.1\r\nHost: u\r\n\r\n")
	resp, err := http.ReadResponse(c.Reader(), nil)
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
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ignored the body")
	})
	c := testnet.Dial(t, addr)
	c.Send("POST /a HTTP/1.1\r\nHost: u\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: u\r\n\r\n")
	c.Read("POST")
	if resp, _ := c.Read("GET"); resp.StatusCode != 200 {
		t.Fatalf("the next request: %d", resp.StatusCode)
	}
	big := 1 << 20
	c.Send(fmt.Sprintf("POST /a HTTP/1.1\r\nHost: u\r\nContent-Length: %d\r\n\r\n", big))
	go func() { _, _ = c.Conn().Write(make([]byte, big)) }()
	resp, _ := c.Read("POST")
	if !resp.Close {
		t.Fatal("the answer to a request whose large body was not read keeps the connection")
	}
}

func TestServerSlowClientIsCutOff(t *testing.T) {
	addr, _ := directServer(t, server.Options{ReadHeaderTimeout: 100 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {})
	c := testnet.Dial(t, addr)
	c.Send("GET / HTTP/1.1\r\nHost: u\r\n")
	start := time.Now()
	if _, err := c.Reader().ReadByte(); err == nil {
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
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/wait":
			select {
			case <-r.Context().Done():
				cancelled <- context.Cause(r.Context())
			case <-time.After(5 * time.Second):
				cancelled <- nil
			}
		case "/slow":
			time.Sleep(3 * server.ClientWatchDelay)
			_, _ = io.WriteString(w, "slow")
		default:
			_, _ = io.WriteString(w, "next")
		}
	})
	c := testnet.Dial(t, addr)
	c.Send("GET /slow HTTP/1.1\r\nHost: u\r\n\r\n")
	time.Sleep(2 * server.ClientWatchDelay) // the watch runs by now
	c.Send("GET /next HTTP/1.1\r\nHost: u\r\n\r\n")
	if _, body := c.Read("GET"); body != "slow" {
		t.Fatalf("first answer %q", body)
	}
	if _, body := c.Read("GET"); body != "next" {
		t.Fatalf("pipelined answer %q", body)
	}

	c = testnet.Dial(t, addr)
	c.Send("GET /wait HTTP/1.1\r\nHost: u\r\n\r\n")
	time.Sleep(server.ClientWatchDelay / 2)
	c.Conn().Close()
	if err := <-cancelled; err == nil {
		t.Fatal("the request ran on after its client left")
	}
}

func TestServerShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	addr, srv := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	idle := testnet.Dial(t, addr)
	idle.Send("GET / HTTP/1.1\r\nHost: u\r\n\r\n")
	idle.Read("GET")
	busy := testnet.Dial(t, addr)
	busy.Send("GET /slow HTTP/1.1\r\nHost: u\r\n\r\n")
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if _, err := idle.Reader().ReadByte(); err == nil {
		t.Fatal("an idle connection stayed open after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if resp, body := busy.Read("GET"); body != "done" || !resp.Close {
		t.Fatalf("in-flight answer %q close=%v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// The deadlines of a keep-alive connection, which the server sets only
// when a read may wait on them: the idle timeout still ends a connection
// that served requests, a later request's slow head is still cut at the
// header timeout, and neither bounds a request's body or the client
// watch of a request that runs longer than both.
func TestServerDeadlinesAcrossRequests(t *testing.T) {
	const idle, head = 300 * time.Millisecond, 200 * time.Millisecond
	cancelled := make(chan error, 1)
	addr, _ := directServer(t, server.Options{IdleTimeout: idle, ReadHeaderTimeout: head}, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/body":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			_, _ = w.Write(b)
		case "/wait":
			select {
			case <-r.Context().Done():
				cancelled <- context.Cause(r.Context())
			case <-time.After(5 * time.Second):
				cancelled <- nil
			}
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	warm := func(c *testnet.Raw) {
		for range 5 {
			c.Send("GET / HTTP/1.1\r\nHost: u\r\n\r\n")
			if _, body := c.Read("GET"); body != "ok" {
				t.Fatalf("answer %q", body)
			}
		}
	}
	closedWithin := func(c *testnet.Raw, from time.Time, lo, hi time.Duration, what string) {
		t.Helper()
		_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Reader().ReadByte(); err == nil {
			t.Fatalf("%s: the server sent something", what)
		}
		if took := time.Since(from); took < lo || took > hi {
			t.Errorf("%s: closed after %v; want %v to %v", what, took, lo, hi)
		}
	}

	t.Run("idle after requests", func(t *testing.T) {
		c := testnet.Dial(t, addr)
		warm(c)
		closedWithin(c, time.Now(), idle*9/10, idle+time.Second, "an idle connection")
	})
	t.Run("slow later head", func(t *testing.T) {
		c := testnet.Dial(t, addr)
		warm(c)
		c.Send("GET / HTTP/1.1\r\nHost: u\r\n")
		closedWithin(c, time.Now(), head*9/10, head+time.Second, "a head that stalls")
	})
	t.Run("slow body", func(t *testing.T) {
		c := testnet.Dial(t, addr)
		warm(c)
		c.Send("POST /body HTTP/1.1\r\nHost: u\r\nContent-Length: 10\r\n\r\n01234")
		time.Sleep(idle + head) // longer than both timeouts
		c.Send("56789")
		if _, body := c.Read("POST"); body != "0123456789" {
			t.Fatalf("body %q", body)
		}
	})
	t.Run("client watch outlives the wait's deadline", func(t *testing.T) {
		c := testnet.Dial(t, addr)
		warm(c)
		c.Send("GET /wait HTTP/1.1\r\nHost: u\r\n\r\n")
		time.Sleep(idle + head) // past the deadline the wait for this request had
		c.Conn().Close()
		select {
		case err := <-cancelled:
			if err == nil {
				t.Fatal("the request ran on after its client left")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the request was not cancelled within 3s of its client leaving")
		}
	})
}

// A client that pipelines — its next request arrives while the last one
// runs, before the server waits for it — is answered in order, each
// request once: the server's wait for a request, which cannot see such an
// arrival, gives way to a read.
// An answer written whole before the wait for the next request could
// begin (a large one, which goes out as it is written) may be answered by
// the client's next request before the wait begins, which would then not
// see it arrive: the server reads first after such an answer, and never
// runs out the wait's bound for a client that does not pipeline.
func TestServerReadsFirstAfterAnAnswerWrittenWhole(t *testing.T) {
	body := strings.Repeat("x", 16<<10)
	addr, _ := directServer(t, server.Options{IdleTimeout: time.Minute}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
		time.Sleep(20 * time.Millisecond) // the client has its answer, and asks again
	})
	var bounds atomic.Int32
	server.SetWaitBoundHook(func() { bounds.Add(1) })
	t.Cleanup(func() { server.SetWaitBoundHook(nil) })
	c := testnet.Dial(t, addr)
	for i := range 4 {
		c.Send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: u\r\n\r\n", i))
		if _, got := c.Read("GET"); got != body {
			t.Fatalf("request %d: %d bytes of answer; want %d", i, len(got), len(body))
		}
	}
	if n := bounds.Load(); n != 0 {
		t.Fatalf("the wait for a request ran out its bound %d times; want 0", n)
	}
}

// A request whose arrival the wait saw is read even when the connection's
// goroutine runs again only after the wait's bound (a busy process): a
// read whose deadline passed fails before it looks, and that must not end
// the connection.
func TestServerReadsARequestSeenArrivingAfterTheWaitBound(t *testing.T) {
	addr, _ := directServer(t, server.Options{IdleTimeout: time.Minute}, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	})
	var waits atomic.Int32
	server.SetAfterWaitHook(func() {
		waits.Add(1)
		time.Sleep(40 * time.Millisecond) // longer than the wait's bound
	})
	t.Cleanup(func() { server.SetAfterWaitHook(nil) })
	c := testnet.Dial(t, addr)
	for i := range 4 {
		c.Send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: u\r\n\r\n", i))
		if _, body := c.Read("GET"); body != fmt.Sprintf("/%d", i) {
			t.Fatalf("request %d: answer %q", i, body)
		}
	}
	if waits.Load() == 0 {
		t.Fatal("no request was seen arriving by a wait: the test tests nothing")
	}
}

// TestServerWaitsFirstAgainAfterReadingFirstForAWhile: a request that
// arrives while the one before it runs cannot be seen arriving by the wait
// for it; the wait runs out its bound, finds it, and the connection reads
// first, but only for readFirstSpan requests: then it waits first again.
func TestServerWaitsFirstAgainAfterReadingFirstForAWhile(t *testing.T) {
	t.Cleanup(server.SetReadFirstSpan(2)) // runs after the server is closed
	var waits, bounds atomic.Int32
	server.SetAfterWaitHook(func() { waits.Add(1) })
	server.SetWaitBoundHook(func() { bounds.Add(1) })
	t.Cleanup(func() { server.SetAfterWaitHook(nil); server.SetWaitBoundHook(nil) })
	addr, _ := directServer(t, server.Options{IdleTimeout: time.Minute}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/2" {
			time.Sleep(20 * time.Millisecond)
		}
		_, _ = io.WriteString(w, r.URL.Path)
	})
	c := testnet.Dial(t, addr)
	get := func(path string) {
		t.Helper()
		if _, body := c.Read("GET"); body != path {
			t.Fatalf("answer %q; want %q", body, path)
		}
	}
	send := func(path string) { c.Send("GET " + path + " HTTP/1.1\r\nHost: u\r\n\r\n") }
	send("/0")
	get("/0")
	send("/2")
	time.Sleep(5 * time.Millisecond) // /2.next arrives while /2 runs
	send("/2.next")
	get("/2")
	get("/2.next")
	if bounds.Load() == 0 {
		t.Fatal("the wait for /2.next did not run out its bound")
	}
	before := waits.Load()
	send("/3") // read first: the second of the span, /2.next the first
	get("/3")
	if n := waits.Load() - before; n != 0 {
		t.Fatalf("%d waits saw /3 arrive; want it read first", n)
	}
	send("/4")
	get("/4")
	if n := waits.Load() - before; n != 1 {
		t.Fatalf("%d waits saw /4 arrive; want 1: the span of two is over", n)
	}
}

func TestServerPipelinedArrivalDuringARequest(t *testing.T) {
	addr, _ := directServer(t, server.Options{IdleTimeout: time.Minute}, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		_, _ = io.WriteString(w, r.URL.Path)
	})
	c := testnet.Dial(t, addr)
	c.Send("GET /0 HTTP/1.1\r\nHost: u\r\n\r\n")
	if _, body := c.Read("GET"); body != "/0" {
		t.Fatalf("answer %q", body)
	}
	for i := 1; i <= 4; i++ {
		c.Send(fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: u\r\n\r\n", i))
		time.Sleep(5 * time.Millisecond) // the next arrives while this one runs
		c.Send(fmt.Sprintf("GET /%d.next HTTP/1.1\r\nHost: u\r\n\r\n", i))
		for _, want := range []string{fmt.Sprintf("/%d", i), fmt.Sprintf("/%d.next", i)} {
			if _, body := c.Read("GET"); body != want {
				t.Fatalf("answer %q; want %q", body, want)
			}
		}
	}
}
