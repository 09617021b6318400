package server_test

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/proxy/server"
)

// echo answers with the request's method, target and body.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
}

// serveWith serves echo with s (a net/http server, or package server's)
// on loopback until the test ends.
func serveWith(t *testing.T, serve func(net.Listener) error, stop func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(ln)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return ln.Addr().String()
}

// answers sends the writes to addr, a pause between them, and returns
// the answers that came back (status and body each), and whether the
// server closed the connection, within quiet of the last byte.
func answers(t *testing.T, addr string, writes []string, quiet time.Duration) ([]string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, w := range writes {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if _, err := io.WriteString(c, w); err != nil {
			break
		}
	}
	var out []string
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(quiet))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			timedOut := err != io.EOF && (errorAs(err, &ne) && ne.Timeout())
			return out, !timedOut
		}
		body, _ := io.ReadAll(resp.Body)
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, body))
	}
}

func errorAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// withPad is a GET of path whose head is size bytes long.
func withPad(path string, size int) string { return padded("GET", path, "", size) }

// padded is the head of a request with header lines extra (each ending
// in CRLF), padded to size bytes.
func padded(method, path, extra string, size int) string {
	head := method + " " + path + " HTTP/1.1\r\nHost: u\r\n" + extra + "X-Pad: \r\n\r\n"
	return strings.Replace(head, "X-Pad: ", "X-Pad: "+strings.Repeat("p", size-len(head)), 1)
}

// diffCase is a differential case: what a client writes, a pause between
// writes.
type diffCase struct {
	name   string
	writes []string
}

// TestServerMatchesNetHTTP sends raw requests to a net/http server and to
// package server's, both serving the same handler with the same limits,
// and requires the same answers, and the connection closed by both or
// neither.
func TestServerMatchesNetHTTP(t *testing.T) {
	opts := server.Options{ReadHeaderTimeout: time.Second, IdleTimeout: 2 * time.Second, MaxHeaderBytes: 4 << 10, ErrorLog: log.New(io.Discard, "", 0)}
	hs := &http.Server{Handler: http.HandlerFunc(echo), ReadHeaderTimeout: opts.ReadHeaderTimeout, IdleTimeout: opts.IdleTimeout,
		MaxHeaderBytes: opts.MaxHeaderBytes, ErrorLog: opts.ErrorLog}
	ref := serveWith(t, hs.Serve, hs.Close)
	srv := server.New(opts, http.HandlerFunc(echo))
	got := serveWith(t, srv.Serve, srv.Close)

	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: u\r\n\r\n" }
	post := func(path, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: u\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	}
	chunked := "POST /1 HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	cases := []diffCase{
		// RFC 9112 section 2.2: net/http drops up to four CR or LF bytes
		// after a POST (old clients end its body with CRLF).
		{"CRLF after a POST", []string{post("/1", "abc") + "\r\n" + get("/2")}},
		{"LF after a POST", []string{post("/1", "abc") + "\n" + get("/2")}},
		{"two CRLF after a POST", []string{post("/1", "abc") + "\r\n\r\n" + get("/2")}},
		{"three CRLF after a POST", []string{post("/1", "abc") + "\r\n\r\n\r\n" + get("/2")}},
		{"CRLF after a POST without a body", []string{post("/1", "") + "\r\n" + get("/2")}},
		{"CRLF after a chunked POST", []string{chunked + "\r\n" + get("/2")}},
		{"CRLF after a POST, sent later", []string{post("/1", "abc"), "\r\n", get("/2")}},
		{"CRLF after a POST, then a POST", []string{post("/1", "abc") + "\r\n" + post("/2", "de") + "\r\n" + get("/3")}},
		{"CRLF after a GET", []string{get("/1") + "\r\n" + get("/2")}},
		{"CRLF after a PUT", []string{strings.Replace(post("/1", "abc"), "POST", "PUT", 1) + "\r\n" + get("/2")}},
		{"CRLF before the first request", []string{"\r\n" + get("/1")}},
		// net/http's header limit counts what it reads for a head, not
		// the start of a pipelined request its buffer held already.
		{"pipelined head over the limit by less than a buffer", []string{get("/1") + withPad("/2", 9000) + get("/3")}},
		{"pipelined head over the limit by more than a buffer", []string{get("/1") + withPad("/2", 13000) + get("/3")}},
		{"head over the limit", []string{withPad("/1", 8300) + get("/2")}},
		{"head at the limit", []string{withPad("/1", 8192) + get("/2")}},
		{"head at the limit, then a body", []string{padded("POST", "/1", "Content-Length: 3\r\n", 8192) + "abc" + get("/2")}},
		{"head over the limit, then a body", []string{padded("POST", "/1", "Content-Length: 3\r\n", 8193) + "abc" + get("/2")}},
	}
	// Connection: close, however it is written: net/http's server takes
	// "close" as a word of the first Connection value, words parted by
	// commas, spaces or tabs; a folded line is joined with a space.
	for _, lines := range []string{
		"Connection: close\r\n", "Connection: Close\r\n", "Connection: keep-alive, close\r\n", "Connection: x,close\r\n",
		"Connection: keep-alive close\r\n", "Connection: foo close\r\n", "Connection: close foo\r\n", "Connection: x\tclose\r\n",
		"Connection: close\tx\r\n", "Connection: CLOSE x\r\n", "Connection: x close, y\r\n", "Connection:  close \r\n",
		"Connection: closex\r\n", "Connection: x;close\r\n", "Connection: \"close\"\r\n", "Connection: close;q=1\r\n", "Connection: xclose\r\n",
		"Connection: keep-alive\r\n", "Connection: x close\r\nConnection: keep-alive\r\n", "Connection: keep-alive\r\nConnection: x close\r\n",
		"Connection: keep-alive\r\nConnection: close\r\n", "Connection: keep-alive\r\n close\r\n",
	} {
		head := "GET /1 HTTP/1.1\r\nHost: u\r\n" + lines + "\r\n"
		cases = append(cases,
			diffCase{fmt.Sprintf("%q, pipelined", lines), []string{head + get("/2")}},
			diffCase{fmt.Sprintf("%q, with a body", lines), []string{strings.Replace(head, "GET", "POST", 1)[:len(head)+1-2] + "Content-Length: 1\r\n\r\na" + get("/2")}},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, wantClosed := answers(t, ref, tc.writes, 300*time.Millisecond)
			have, closed := answers(t, got, tc.writes, 300*time.Millisecond)
			if strings.Join(have, "|") != strings.Join(want, "|") || closed != wantClosed {
				t.Errorf("answers %q (closed %v); net/http's %q (closed %v)", have, closed, want, wantClosed)
			}
		})
	}
}

// TestServerInformationalHeadMatchesNetHTTP: a 1xx answer is written with
// the header the handler set, as net/http's server writes it: without
// Content-Length and Transfer-Encoding, which would frame a body no 1xx
// answer has.
func TestServerInformationalHeadMatchesNetHTTP(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a>")
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Transfer-Encoding", "chunked")
		w.WriteHeader(http.StatusEarlyHints)
		clear(w.Header())
		_, _ = io.WriteString(w, "ok")
	})
	hs := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
	ref := serveWith(t, hs.Serve, hs.Close)
	srv := server.New(server.Options{ErrorLog: log.New(io.Discard, "", 0)}, h)
	got := serveWith(t, srv.Serve, srv.Close)
	read1xx := func(addr string) []string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: u\r\n\r\n")
		br := bufio.NewReader(c)
		var lines []string
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				return lines
			}
			lines = append(lines, line)
		}
	}
	want, have := read1xx(ref), read1xx(got)
	if strings.Join(have, "") != strings.Join(want, "") {
		t.Errorf("1xx head %q; net/http's %q", have, want)
	}
}

// TestServerAbortedAnswerMatchesNetHTTP: an answer the handler aborts
// (http.ErrAbortHandler, as ReverseProxy does when a node's body breaks
// off) reaches the client as far as net/http's server sends it: what
// left its 2 KiB buffer, after the head, and nothing when nothing did.
func TestServerAbortedAnswerMatchesNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		length bool  // the handler sets a Content-Length
		writes []int // sizes of the writes before the abort
	}{
		{"one short write", true, []int{100}},
		{"one write of the buffer", true, []int{2048}},
		{"one write over the buffer", true, []int{3000}},
		{"short writes past the buffer", true, []int{1000, 1000, 1000}},
		{"a short write, then a long one", true, []int{1000, 5000, 100}},
		{"many writes", true, []int{700, 700, 700, 700, 700, 700, 700}},
		{"unknown length, short writes past the buffer", false, []int{1000, 1000, 1000}},
		{"unknown length, one long write", false, []int{9000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.length {
					w.Header().Set("Content-Length", "100000")
				}
				for i, n := range tc.writes {
					_, _ = w.Write([]byte(strings.Repeat(string(rune('a'+i)), n)))
				}
				panic(http.ErrAbortHandler)
			})
			hs := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
			ref := serveWith(t, hs.Serve, hs.Close)
			srv := server.New(server.Options{ErrorLog: log.New(io.Discard, "", 0)}, h)
			got := serveWith(t, srv.Serve, srv.Close)
			body := func(addr string) string {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: u\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return "no answer"
				}
				b, _ := io.ReadAll(resp.Body)
				return fmt.Sprintf("%d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			if want, have := body(ref), body(got); have != want {
				t.Errorf("got %.200s\nnet/http's %.200s", have, want)
			}
		})
	}
}
