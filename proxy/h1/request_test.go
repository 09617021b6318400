package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// checkRequestHead parses raw's head with ParseRequest and, when it takes
// it, checks the result against http.ReadRequest's (after the server takes
// Host out of the header) and that ServerTakes agrees. It reports whether
// ParseRequest took it.
func checkRequestHead(t *testing.T, raw string) bool {
	t.Helper()
	n, bareLF := HeadEnd([]byte(raw))
	if n <= 0 || bareLF {
		return false
	}
	var got http.Request
	if _, ok := ParseRequest(raw[:n], &got, http.Header{}, nil); !ok {
		return false
	}
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("%q: parsed, but http.ReadRequest fails: %v", raw, err)
	}
	if !ServerTakes(want, []byte(raw[:n])) {
		t.Fatalf("%q: parsed, but ServerTakes refuses it", raw)
	}
	delete(want.Header, "Host")
	if got.Method != want.Method || got.RequestURI != want.RequestURI || got.URL.String() != want.URL.String() ||
		got.Host != want.Host || got.Proto != want.Proto || got.ProtoMajor != 1 || got.ProtoMinor != 1 ||
		got.ContentLength != want.ContentLength || got.Close != want.Close || !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("%q:\nparsed  %s %s %s host=%q len=%d close=%v %v\nnet/http %s %s %s host=%q len=%d close=%v %v", raw,
			got.Method, got.RequestURI, got.Proto, got.Host, got.ContentLength, got.Close, got.Header,
			want.Method, want.RequestURI, want.Proto, want.Host, want.ContentLength, want.Close, want.Header)
	}
	if got.ContentLength > 0 {
		gotBody, gotErr := io.ReadAll(io.LimitReader(strings.NewReader(raw[n:]), got.ContentLength))
		if gotErr == nil && int64(len(gotBody)) < got.ContentLength {
			gotErr = io.ErrUnexpectedEOF
		}
		wantBody, wantErr := io.ReadAll(want.Body)
		if string(gotBody) != string(wantBody) || (gotErr == nil) != (wantErr == nil) ||
			gotErr != nil && !errors.Is(gotErr, io.ErrUnexpectedEOF) {
			t.Fatalf("%q: body %q, %v; net/http's %q, %v", raw, gotBody, gotErr, wantBody, wantErr)
		}
	}
	return true
}

func TestParseRequestHead(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		plain     bool
	}{
		{"GET", "GET /a/b?x=1&y=%41 HTTP/1.1\r\nHost: users\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n", true},
		{"POST with body", "POST /orders HTTP/1.1\r\nHost: users:8080\r\nContent-Length: 5\r\ncontent-type: text/plain\r\n\r\nhello", true},
		{"short body", "POST /orders HTTP/1.1\r\nHost: users\r\nContent-Length: 10\r\n\r\nhello", true},
		{"repeated header", "GET / HTTP/1.1\r\nHost: u\r\nX-A: 1\r\nx-a: 2\r\nX-B:  spaced \t\r\n\r\n", true},
		{"empty value", "GET / HTTP/1.1\r\nHost: u\r\nX-Empty:\r\n\r\n", true},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: u\r\nConnection: keep-alive, close\r\n\r\n", true},
		{"Pragma", "GET / HTTP/1.1\r\nHost: u\r\nPragma: no-cache\r\n\r\n", true},
		{"obs-text value", "GET / HTTP/1.1\r\nHost: u\r\nX-A: caf\xc3\xa9\r\n\r\n", true},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: u\r\n\r\n", false},
		{"absolute form", "GET http://u/ HTTP/1.1\r\nHost: u\r\n\r\n", false},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: u\r\n\r\n", false},
		{"CONNECT", "CONNECT /x HTTP/1.1\r\nHost: u\r\n\r\n", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: u\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
		{"two lengths", "POST / HTTP/1.1\r\nHost: u\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false},
		{"signed length", "POST / HTTP/1.1\r\nHost: u\r\nContent-Length: +1\r\n\r\nx", false},
		{"upgrade", "GET / HTTP/1.1\r\nHost: u\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", false},
		{"expect", "POST / HTTP/1.1\r\nHost: u\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", false},
		{"HTTP2-Settings", "GET / HTTP/1.1\r\nHost: u\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", false},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", false},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: u\r\nhost: v\r\n\r\n", false},
		{"bad Host", "GET / HTTP/1.1\r\nHost: u v\r\n\r\n", false},
		{"folded", "GET / HTTP/1.1\r\nHost: u\r\nX-A: 1\r\n 2\r\n\r\n", false},
		{"bare LF", "GET / HTTP/1.1\nHost: u\n\n", false},
		{"space before colon", "GET / HTTP/1.1\r\nHost: u\r\nX-A : 1\r\n\r\n", false},
		{"control byte", "GET / HTTP/1.1\r\nHost: u\r\nX-A: \x01\r\n\r\n", false},
		{"bad method", "G(T / HTTP/1.1\r\nHost: u\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkRequestHead(t, tc.raw); got != tc.plain {
				t.Fatalf("taken %v, want %v", got, tc.plain)
			}
		})
	}
}

// FuzzRequestParse checks ParseRequest against http.ReadRequest on
// every head it takes.
func FuzzRequestParse(f *testing.F) {
	f.Add("GET /a?b=c HTTP/1.1\r\nHost: users\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
	f.Add("PUT /x HTTP/1.1\r\nHost: users:80\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	f.Add("DELETE /%7e HTTP/1.1\r\nhost: [::1]:8080\r\nPragma: no-cache\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) { checkRequestHead(t, raw) })
}
