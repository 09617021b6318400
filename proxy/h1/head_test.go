package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"
)

// reverseProxyHead is what httputil.ReverseProxy, set up as package proxy
// sets it up (a Rewrite that keeps the client's Host), and
// http.Request.Write send a node for r.
func reverseProxyHead(t testing.TB, r *http.Request) []byte {
	return reverseProxyHeadKeeping(t, r, false)
}

// reverseProxyHeadKeeping is reverseProxyHead with a Rewrite that copies
// the client's forwarding headers back when keep is set (package proxy's
// "keep" mode).
func reverseProxyHeadKeeping(t testing.TB, r *http.Request, keep bool) []byte {
	t.Helper()
	var out bytes.Buffer
	errStop := errors.New("written")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.Host = pr.In.Host
			if keep {
				for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
					if vv := pr.In.Header[k]; vv != nil {
						pr.Out.Header[k] = vv
					}
				}
			}
		},
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			req.URL.Host = "node:80"
			if err := req.Write(&out); err != nil {
				t.Fatalf("Request.Write: %v", err)
			}
			return nil, errStop
		}),
		ErrorHandler: func(http.ResponseWriter, *http.Request, error) {},
	}
	rp.ServeHTTP(httptest.NewRecorder(), r)
	head, _, _ := bytes.Cut(out.Bytes(), []byte("\r\n\r\n"))
	return append(head, "\r\n\r\n"...)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sameHead compares two heads line by line, header lines in any order.
func sameHead(a, b []byte) bool {
	la, lb := strings.Split(string(a), "\r\n"), strings.Split(string(b), "\r\n")
	if len(la) != len(lb) || la[0] != lb[0] {
		return false
	}
	slices.Sort(la[1:])
	slices.Sort(lb[1:])
	return slices.Equal(la, lb)
}

// readDirect reads a raw request as the server does, or reports false
// when the server would hand it to net/http or the direct exchange would
// leave it to ReverseProxy (a body over 64 KiB included).
func readDirect(raw string) (*http.Request, bool) {
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil || !ServerTakes(r, []byte(raw)) || !Encodable(r) || r.ContentLength > 64<<10 {
		return nil, false
	}
	if r.Body != http.NoBody {
		// A body shorter than announced is refused before any head is
		// sent, by either path.
		body, err := io.ReadAll(r.Body)
		if err != nil || int64(len(body)) != r.ContentLength {
			return nil, false
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	delete(r.Header, "Host")
	return r, true
}

func TestAppendRequestHeadMatchesReverseProxy(t *testing.T) {
	tests := []struct{ name, raw string }{
		{"plain GET", "GET /a/b?x=1 HTTP/1.1\r\nHost: users\r\nAccept: */*\r\nUser-Agent: curl/8\r\n\r\n"},
		{"no User-Agent", "GET / HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"empty User-Agent", "GET / HTTP/1.1\r\nHost: users\r\nUser-Agent: \r\n\r\n"},
		{"two User-Agents", "GET / HTTP/1.1\r\nHost: users\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n"},
		{"hop by hop", "GET / HTTP/1.1\r\nHost: users\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\n" +
			"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTe: gzip\r\nTrailer: X\r\nX-Kept: 2\r\n\r\n"},
		{"Connection lists User-Agent", "GET / HTTP/1.1\r\nHost: users\r\nUser-Agent: a\r\nConnection: user-agent\r\n\r\n"},
		{"Te trailers kept", "GET / HTTP/1.1\r\nHost: users\r\nTe: trailers, deflate\r\n\r\n"},
		{"forwarding headers dropped", "GET / HTTP/1.1\r\nHost: users\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-For: 1.2.3.4\r\n" +
			"X-Forwarded-Host: h\r\nX-Forwarded-Proto: https\r\nX-Real-Ip: 5.6.7.8\r\n\r\n"},
		{"POST with body", "POST /orders HTTP/1.1\r\nHost: users\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"},
		{"POST without body", "POST /orders HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"DELETE without body", "DELETE /orders/1 HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"escaped path", "GET /a%2Fb/c%20d?q=%41 HTTP/1.1\r\nHost: users:8080\r\n\r\n"},
		{"empty query", "GET /a? HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"semicolon query", "GET /a?x=1;y=2&z=3 HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"bad escape in query", "GET /a?x=%zz&y=2 HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"query with only a bad escape", "GET /a?x=%zz HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"query with only a semicolon pair", "GET /a?x=1;y=2 HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"query of a semicolon", "GET /a?; HTTP/1.1\r\nHost: users\r\n\r\n"},
		{"values trimmed", "GET / HTTP/1.1\r\nHost: users\r\nX-A:   spaced \t\r\nX-A: second\r\n\r\n"},
		{"IPv6 host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := readDirect(tc.raw)
			if !ok {
				t.Fatalf("not a direct request: %q", tc.raw)
			}
			want := reverseProxyHead(t, r)
			r, _ = readDirect(tc.raw)
			got := AppendRequestHead(nil, r, HeadOptions{})
			if !sameHead(got, want) {
				t.Errorf("direct head:\n%s\nReverseProxy's:\n%s", got, want)
			}
		})
	}
}

// With KeepForwarded the head keeps the client's forwarding headers as a
// Rewrite that copies them back would; Extra lines come last.
func TestAppendRequestHeadOptions(t *testing.T) {
	raw := "GET /a HTTP/1.1\r\nHost: users\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\nX-Forwarded-Proto: https\r\nX-A: 1\r\n\r\n"
	r, ok := readDirect(raw)
	if !ok {
		t.Fatal("not direct")
	}
	want := reverseProxyHeadKeeping(t, r, true)
	r, _ = readDirect(raw)
	if got := AppendRequestHead(nil, r, HeadOptions{KeepForwarded: true}); !sameHead(got, want) {
		t.Errorf("kept:\n%s\nReverseProxy's:\n%s", got, want)
	}
	got := AppendRequestHead(nil, r, HeadOptions{Extra: []byte("X-Request-Id: abc\r\n")})
	if !strings.HasSuffix(string(got), "\r\nX-Request-Id: abc\r\n\r\n") || strings.Contains(string(got), "Forwarded") {
		t.Errorf("with an extra line, dropping forwarding headers: %q", got)
	}
}

// FuzzRequestHead checks the direct path's request head against
// ReverseProxy's for any request the direct path takes.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET /a?b=c HTTP/1.1\r\nHost: users\r\nConnection: x-a\r\nX-A: 1\r\n\r\n")
	f.Add("PUT /x HTTP/1.1\r\nHost: users\r\nContent-Length: 3\r\nTe: trailers\r\n\r\nabc")
	f.Add("GET /%7e;x HTTP/1.1\r\nHost: users\r\nUser-Agent: \r\nX-Forwarded-For: a\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		r, ok := readDirect(raw)
		if !ok {
			return
		}
		want := reverseProxyHead(t, r)
		r, _ = readDirect(raw)
		if got := AppendRequestHead(nil, r, HeadOptions{}); !sameHead(got, want) {
			t.Errorf("request %q\ndirect head:\n%q\nReverseProxy's:\n%q", raw, got, want)
		}
	})
}

func TestParseRespHead(t *testing.T) {
	tests := []struct {
		name, raw string
		simple    bool
		status    int
		length    int64
		keepAlive bool
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok", true, 200, 2, true},
		{"no reason", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true, 404, 0, true},
		{"close", "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true, 503, 0, false},
		{"204 without length", "HTTP/1.1 204 No Content\r\n\r\n", true, 204, -1, true},
		{"304 with length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", true, 304, 10, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0, false},
		{"no framing", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, 0, 0, false},
		{"trailer", "HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 1\r\n\r\n", false, 0, 0, false},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", false, 0, 0, false},
		{"signed length", "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", false, 0, 0, false},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, 0, 0, false},
		{"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, 0, 0, false},
		{"101", "HTTP/1.1 101 Switching Protocols\r\n\r\n", false, 0, 0, false},
		{"gRPC", "HTTP/1.1 200 OK\r\nContent-Type: application/grpc+proto\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"event stream", "HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"folded line", "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", false, 0, 0, false},
		{"space before colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"control byte", "HTTP/1.1 200 OK\r\nX-A: 1\x01\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		{"bad status", "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", false, 0, 0, false},
		// A header the Connection header lists is dropped as hop by hop,
		// but the framing, the sniffed type and the Date are the
		// server's: net/http's decides them, not the node's lines.
		{"Connection lists the length", "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"Connection lists the length after it", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, content-length\r\n\r\n", false, 0, 0, false},
		{"Connection lists the type", "HTTP/1.1 200 OK\r\nContent-Type: text/x\r\nConnection: Content-Type\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"Connection lists the encoding", "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: Content-Encoding\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"Connection lists the date", "HTTP/1.1 200 OK\r\nDate: x\r\nConnection: date\r\nContent-Length: 2\r\n\r\n", false, 0, 0, false},
		{"Connection lists another header", "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nContent-Length: 2\r\n\r\n", true, 200, 2, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Response
			b := []byte(tc.raw)
			if n, _ := HeadEnd(b); n > 0 {
				b = b[:n]
			}
			if got := ParseResponse(b, &h); got != tc.simple {
				t.Fatalf("simple = %v, want %v", got, tc.simple)
			}
			if tc.simple && (h.Status != tc.status || h.ContentLength != tc.length || h.KeepAlive != tc.keepAlive) {
				t.Errorf("status %d length %d keepAlive %v, want %d %d %v", h.Status, h.ContentLength, h.KeepAlive, tc.status, tc.length, tc.keepAlive)
			}
		})
	}
}

func TestAppendRespHeaders(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-custom-NAME:  v \r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
		"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n"
	var h Response
	if !ParseResponse([]byte(raw), &h) {
		t.Fatal("not simple")
	}
	got := string(h.AppendHeaders(nil))
	want := "Content-Length: 2\r\nX-Custom-Name: v\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
	if got != want {
		t.Errorf("headers:\n%q\nwant\n%q", got, want)
	}
}

// FuzzRespHead checks that an answer head the direct path writes on
// itself is one http.ReadResponse reads the same way, and that the
// headers it passes are ReverseProxy's.
func FuzzRespHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-a\r\nX-A: 1\r\n\r\nok"))
	f.Add([]byte("HTTP/1.1 204 No Content\r\nDate: x\r\nkeep-alive: 1\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 304 \r\nContent-Length: 7\r\nConnection: close\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, _ := HeadEnd(raw)
		if n <= 0 {
			return
		}
		var h Response
		if !ParseResponse(raw[:n], &h) {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw[:n])), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("direct path takes %q; ReadResponse: %v", raw[:n], err)
		}
		if resp.StatusCode != h.Status || resp.Close == h.KeepAlive {
			t.Fatalf("%q: status %d close %v; ReadResponse: %d %v", raw[:n], h.Status, !h.KeepAlive, resp.StatusCode, resp.Close)
		}
		if l := h.BodyLength(); l != resp.ContentLength && !(l == 0 && resp.Body == http.NoBody) {
			t.Fatalf("%q: body length %d; ReadResponse: %d", raw[:n], l, resp.ContentLength)
		}
		removeHopByHop(resp.Header)
		switch resp.StatusCode { // what net/http's server suppresses
		case http.StatusNotModified:
			resp.Header.Del("Content-Type")
			fallthrough
		case http.StatusNoContent:
			resp.Header.Del("Content-Length")
		}
		var want bytes.Buffer
		_ = resp.Header.Write(&want)
		got := h.AppendHeaders(nil)
		if !sameHead(append([]byte("x\r\n"), got...), append([]byte("x\r\n"), want.Bytes()...)) {
			t.Fatalf("%q: headers\n%q\nReverseProxy's\n%q", raw[:n], got, want.Bytes())
		}
	})
}

// removeHopByHop is httputil.ReverseProxy's removeHopByHopHeaders.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = strings.Trim(sf, " \t"); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(k)
	}
}
