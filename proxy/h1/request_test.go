package h1

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/url"
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
	var u url.URL
	if _, ok := ParseRequest(raw[:n], &got, &u, http.Header{}, nil); !ok {
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
	if got.Method != want.Method || got.RequestURI != want.RequestURI || *got.URL != *want.URL ||
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

// checkOriginForm checks originForm against url.ParseRequestURI: when it
// takes a target, the URL must be net/url's, field for field.
func checkOriginForm(t *testing.T, target string) bool {
	t.Helper()
	u := url.URL{Host: "left over"}
	if !originForm(target, &u) {
		if u.Host != "left over" {
			t.Fatalf("%q: refused, but u was written", target)
		}
		return false
	}
	want, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("%q: taken, but url.ParseRequestURI fails: %v", target, err)
	}
	if u != *want {
		t.Fatalf("%q: %#v\nnet/url: %#v", target, u, *want)
	}
	return true
}

func TestOriginForm(t *testing.T) {
	for target, taken := range map[string]bool{
		"/":                true,
		"/a/b-c_d.e~f":     true,
		"/$&+,;=:@/x":      true,
		"/p?":              true,
		"/p??":             true,
		"/p?a=1&b=%41?c":   true,
		"/p?q?":            true,
		"//double/slash":   true,
		"/p?caf\xc3\xa9 x": true,
		"/p?a\x7f":         false,
		"/p?a\tb":          false,
		"/%41":             false,
		"/caf\xc3\xa9":     false,
		"/a b":             false,
		"/a!b":             false,
		"/a'(b)*":          false,
		"/a#frag":          false,
		"/a\"b":            false,
		"*":                false,
		"":                 false,
		"http://h/":        false,
		"a/b":              false,
	} {
		if got := checkOriginForm(t, target); got != taken {
			t.Errorf("%q: taken %v, want %v", target, got, taken)
		}
	}
}

// FuzzOriginForm checks originForm against url.ParseRequestURI.
func FuzzOriginForm(f *testing.F) {
	for _, s := range []string{"/", "/a?b", "/p?", "/p??", "/%41", "/a b", "/x?\x01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) { checkOriginForm(t, target) })
}

// FuzzRequestParse checks ParseRequest against http.ReadRequest on
// every head it takes.
func FuzzRequestParse(f *testing.F) {
	f.Add("GET /a?b=c HTTP/1.1\r\nHost: users\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
	f.Add("PUT /x HTTP/1.1\r\nHost: users:80\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
	f.Add("DELETE /%7e HTTP/1.1\r\nhost: [::1]:8080\r\nPragma: no-cache\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) { checkRequestHead(t, raw) })
}

// TestParseRequestAllocatesNothing: with the head already a string, a
// plain request in origin form is parsed into the caller's request, URL,
// header map and values without an allocation.
func TestParseRequestAllocatesNothing(t *testing.T) {
	head := "GET /users/42?fields=name HTTP/1.1\r\nHost: users\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
	var (
		r    http.Request
		u    url.URL
		h    = http.Header{}
		vals []string
		ok   bool
	)
	allocs := testing.AllocsPerRun(100, func() {
		clear(h)
		if vals, ok = ParseRequest(head, &r, &u, h, vals); !ok || r.URL != &u {
			t.Fatal("not parsed into u")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations a request, want 0", allocs)
	}
}
