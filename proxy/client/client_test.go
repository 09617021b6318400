package client_test

import (
	"bufio"
	"context"
	"errors"
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

	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/proxy/client"
	"github.com/remora-mesh/remora/proxy/h1"
)

// countingServer is an HTTP server that counts the connections it
// accepted and those it closed.
func countingServer(t *testing.T, h http.HandlerFunc) (srv *httptest.Server, opened, closed *atomic.Int64) {
	opened, closed = new(atomic.Int64), new(atomic.Int64)
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, opened, closed
}

// okHandler answers "ok".
func okHandler(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }

func roundTrip(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, string(body)
}

func TestTransportKeepsConnectionsAlive(t *testing.T) {
	srv, conns, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		_, _ = w.Write(append([]byte(r.URL.Path+":"), body...))
	})
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 10; i++ {
		var body io.Reader
		if i%2 == 1 {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/p", body)
		resp, got := roundTrip(t, tr, req)
		want := "/p:"
		if body != nil {
			want += "payload"
		}
		if got != want || resp.Header.Get("X-Method") != "POST" {
			t.Fatalf("request %d: %q %v; want %q", i, got, resp.Header, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for 10 sequential requests; want 1", n)
	}
}

// A node that closes a pooled connection while it is idle (its keep-alive
// timeout) costs no failed request: the close is seen before the
// connection is used, and the request goes on a new one, whatever its
// method.
func TestTransportSkipsConnectionClosedWhileIdle(t *testing.T) {
	var conns atomic.Int64
	ln := testnet.Serve(t, func(c net.Conn) { // one answer per connection, then close without saying so
		defer c.Close()
		conns.Add(1)
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	url := "http://" + ln.Addr().String() + "/"
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if _, got := roundTrip(t, tr, req); got != "ok" {
			t.Fatalf("GET %d: %q", i, got)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("x"))
	req.GetBody = nil
	if _, got := roundTrip(t, tr, req); got != "ok" {
		t.Fatalf("POST: %q", got)
	}
	if n := conns.Load(); n != 4 {
		t.Fatalf("%d connections; want 4 (one per request)", n)
	}
}

// A node that closes a pooled connection just as a request is sent on it
// (the close and the request cross) costs a replayable request nothing: it
// goes again on a new connection, as with net/http. One that is not
// replayable fails.
func TestTransportRetriesConnectionClosedUnderARequest(t *testing.T) {
	var conns atomic.Int64
	ln := testnet.Serve(t, func(c net.Conn) { // answers a connection's first request; closes at its second
		defer c.Close()
		conns.Add(1)
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || i == 1 {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	url := "http://" + ln.Addr().String() + "/"
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if _, got := roundTrip(t, tr, req); got != "ok" {
			t.Fatalf("GET %d: %q", i, got)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections for 3 GETs; want 3 (the second and third were replayed)", n)
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("x"))
	req.GetBody = nil
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a POST whose body cannot be replayed went again after its connection closed under it")
	}
}

// A reused connection whose answer does not come within the response
// header timeout fails the request: the node may be working on it, so it
// is not sent again on a new connection (net/http's Transport does not
// resend after its errTimeout either). The node sees it once, on every
// path.
func TestHeaderTimeoutOnAReusedConnectionIsNotResent(t *testing.T) {
	const timeout = 100 * time.Millisecond
	node := func(t *testing.T) (url string, got *atomic.Int64) {
		got = new(atomic.Int64)
		ln := testnet.Serve(t, func(c net.Conn) { // answers a connection's first request only
			defer c.Close()
			br := bufio.NewReader(c)
			for i := 0; ; i++ {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				got.Add(1)
				if i == 0 {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}
		})
		return "http://" + ln.Addr().String() + "/", got
	}
	get := func(url string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		return req
	}
	roundTrip := func(tr http.RoundTripper) func(string) error {
		return func(url string) error {
			resp, err := tr.RoundTrip(get(url))
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			return err
		}
	}
	remora := client.New(client.Options{ResponseHeaderTimeout: timeout})
	defer remora.CloseIdleConnections()
	send := func(url string) error {
		req := get(url)
		msg := []byte("GET / HTTP/1.1\r\nHost: " + req.URL.Host + "\r\n\r\n")
		c, err := remora.Send(context.Background(), nil, req.URL.Host, msg, true)
		if err != nil {
			return err
		}
		resp, err := c.ReadResponse(req, nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	reference := &http.Transport{ResponseHeaderTimeout: timeout}
	defer reference.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		call func(url string) error
	}{
		{"net/http", roundTrip(reference)},
		{"RoundTrip", roundTrip(remora)},
		{"Send", send},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, got := node(t)
			if err := tc.call(url); err != nil {
				t.Fatalf("first request: %v", err)
			}
			err := tc.call(url)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("second request: error %v, want a timeout", err)
			}
			time.Sleep(timeout) // a resend would have reached the node by now
			if n := got.Load(); n != 2 {
				t.Errorf("the node received %d requests, want 2: the second was sent again", n)
			}
		})
	}
}

// A body closed before its end closes its connection: what is left of it
// must not be read as the next answer.
func TestTransportBodyClosedEarlyIsNotReused(t *testing.T) {
	big := strings.Repeat("x", 256<<10)
	srv, conns, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, big)
	})
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_, _ = io.ReadFull(resp.Body, buf)
	resp.Body.Close()
	// Not replayable: it must not meet the rest of the first body.
	post, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("x"))
	post.GetBody = nil
	if _, got := roundTrip(t, tr, post); got != big {
		t.Fatalf("second answer is %d bytes; want %d", len(got), len(big))
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2", n)
	}
}

func TestTransportChunkedTrailersAnd1xx(t *testing.T) {
	srv, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "part1 ")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("X-Checksum", "abc")
	})
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	var early []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		early = append(early, code)
		return nil
	}}
	for i := 0; i < 2; i++ { // the second one on the same connection
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, srv.URL, nil)
		resp, got := roundTrip(t, tr, req)
		if got != "part1 part2" || resp.Trailer.Get("X-Checksum") != "abc" {
			t.Fatalf("body %q trailer %v", got, resp.Trailer)
		}
	}
	if len(early) != 2 || early[0] != http.StatusEarlyHints {
		t.Fatalf("1xx seen: %v", early)
	}
}

func TestTransportResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	tr := client.New(client.Options{ResponseHeaderTimeout: 50 * time.Millisecond})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v; want a timeout", err)
	}
}

func TestTransportContextCancelled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, conns, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/slow", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v; want context.DeadlineExceeded", err)
	}
	req, _ = http.NewRequest(http.MethodGet, srv.URL+"/fast", nil)
	roundTrip(t, tr, req)
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2 (the interrupted one is not reused)", n)
	}
}

// Requests the direct path does not take (here a streamed body of unknown
// length) still arrive whole.
func TestTransportStreamedBody(t *testing.T) {
	srv, _, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	})
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 3; i++ {
			_, _ = io.WriteString(pw, "chunk")
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, pr)
	if _, got := roundTrip(t, tr, req); got != "chunkchunkchunk" {
		t.Fatalf("echo %q", got)
	}
}

// An answer the wait saw arrive is read even when the goroutine runs again
// only after the wait's bound (a busy process): a read whose deadline
// passed fails before it looks, and that must not fail the exchange.
func TestSendReadsAnAnswerSeenArrivingAfterTheWaitBound(t *testing.T) {
	srv, conns, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	})
	var waits atomic.Int32
	client.SetAfterWaitHook(func() {
		waits.Add(1)
		time.Sleep(300 * time.Millisecond) // longer than the wait's bound
	})
	t.Cleanup(func() { client.SetAfterWaitHook(nil) })
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	hostport := strings.TrimPrefix(srv.URL, "http://")
	for i := range 2 {
		path := fmt.Sprintf("/%d", i)
		c, err := tr.Send(context.Background(), nil, hostport, []byte("GET "+path+" HTTP/1.1\r\nHost: n\r\n\r\n"), true)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		var h h1.Response
		if !c.Head(&h) {
			t.Fatalf("request %d: no simple head", i)
		}
		c.Discard(h.Size)
		body := make([]byte, h.BodyLength())
		if _, err := io.ReadFull(c, body); err != nil || string(body) != path {
			t.Fatalf("request %d: body %q, %v; want %q", i, body, err, path)
		}
		c.Done(h.KeepAlive)
	}
	if waits.Load() == 0 {
		t.Fatal("no answer was seen arriving by a wait: the test tests nothing")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d node connections for 2 sequential requests; want 1", n)
	}
}

// An idle connection is closed once it has idled for IdleConnTimeout, even
// when no request comes to its node again (a node gone in a rollout, an
// upstream no longer called, a transport a reload replaced): it used to
// stay open until the pool's next use, which might never come.
func TestTransportClosesIdleConnectionsWithoutTraffic(t *testing.T) {
	srv, _, closed := countingServer(t, okHandler)
	tr := client.New(client.Options{IdleConnTimeout: 50 * time.Millisecond})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	if _, got := roundTrip(t, tr, req); got != "ok" {
		t.Fatalf("answer %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection is still open 5 s after its 50 ms idle timeout, with no traffic")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A connection in use when CloseIdleConnections is called (a reload that
// drops the transport) is closed when it is given back, not pooled where
// nothing would use it again, as net/http's Transport does; a later
// request pools again.
func TestTransportClosesConnectionsGivenBackAfterCloseIdle(t *testing.T) {
	srv, _, closed := countingServer(t, okHandler)
	tr := client.New(client.Options{})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections() // while the answer is being read
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection given back after CloseIdleConnections is still open")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Used again: pooled again.
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		roundTrip(t, tr, req)
	}
	time.Sleep(50 * time.Millisecond)
	if n := closed.Load(); n != 1 {
		t.Fatalf("%d connections closed; want the second and third requests on one pooled connection", n)
	}
}

// A retired transport (one a reload dropped) still serves the requests
// already routed to it, but pools none of their connections, however
// many come: it is never used again for new work, so nothing would take
// them before their idle timeout.
func TestRetiredTransportPoolsNothing(t *testing.T) {
	srv, opened, closed := countingServer(t, okHandler)
	tr := client.New(client.Options{})
	tr.Retire()
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		roundTrip(t, tr, req)
	}
	deadline := time.Now().Add(5 * time.Second)
	for closed.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the %d connections of a retired transport closed; want every one", closed.Load(), opened.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A final head that follows a 1xx passed on (as ReverseProxy and the
// direct path pass them) is bounded by MaxResponseHeaderBytes on its own,
// counting what of it came in the 1xx's read: it was passed at up to
// twice the limit (the budget restarted after the 1xx, and bytes already
// buffered were not counted), on the direct path, on RoundTrip's own
// connections and on the standard transport (Expect).
func TestTransportBoundsTheFinalHeadAfterA1xx(t *testing.T) {
	const limit = 4096
	node := func(bigHeader int) string {
		return testnet.ServeHeads(t, func(c net.Conn, _ *bufio.Reader) bool {
			// One write: the 1xx and the final head arrive together.
			_, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("b", bigHeader)+"\r\nContent-Length: 2\r\n\r\nok")
			return err == nil
		}).Addr().String()
	}
	ignore1xx := func(int, textproto.MIMEHeader) error { return nil }
	passing1xx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: ignore1xx})
	paths := map[string]func(tr *client.Transport, hostport string) error{
		"direct": func(tr *client.Transport, hostport string) error {
			c, err := tr.Send(context.Background(), nil, hostport, []byte("GET / HTTP/1.1\r\nHost: n\r\n\r\n"), true)
			if err != nil {
				return err
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+hostport+"/", nil)
			resp, err := c.ReadResponse(req, ignore1xx)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		},
		"own connection": func(tr *client.Transport, hostport string) error {
			req, _ := http.NewRequestWithContext(passing1xx, http.MethodGet, "http://"+hostport+"/", nil)
			return roundTripErr(tr, req)
		},
		"standard transport": func(tr *client.Transport, hostport string) error {
			req, _ := http.NewRequestWithContext(passing1xx, http.MethodPost, "http://"+hostport+"/", strings.NewReader("hi"))
			req.Header.Set("Expect", "100-continue")
			return roundTripErr(tr, req)
		},
	}
	for name, do := range paths {
		for _, tc := range []struct {
			header int
			ok     bool
		}{{3000, true}, {limit - 60, true}, {limit, false}, {2 * limit, false}} { // the head is the header and 43 bytes more
			tr := client.New(client.Options{MaxResponseHeaderBytes: limit})
			err := do(tr, node(tc.header))
			tr.CloseIdleConnections()
			switch {
			case tc.ok && err != nil:
				t.Errorf("%s: a final head with a %d-byte header after a 103: %v; want it passed", name, tc.header, err)
			case !tc.ok && err == nil:
				t.Errorf("%s: a final head with a %d-byte header after a 103 passed; want it refused (limit %d)", name, tc.header, limit)
			case !tc.ok && !strings.Contains(err.Error(), "max_response_header_bytes") && !strings.Contains(err.Error(), "exceeded"):
				t.Errorf("%s: a final head with a %d-byte header: %v; want the limit named", name, tc.header, err)
			}
		}
	}
}

func roundTripErr(tr http.RoundTripper, req *http.Request) error {
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}
