// Package h1 is Remora's HTTP/1.1 codec for the direct path: it finds and
// parses request and answer heads where they lie in a connection's buffer,
// and encodes the heads the direct path sends, byte for byte as net/http's
// server, httputil.ReverseProxy and http.Request.Write would.
//
// Its rule is that of net/http, never more lenient: a head it does not
// take as it is (Plain, ParseRequest, ParseResponse) goes to net/http,
// whose parser and limits then apply. Every function is pure and safe for
// concurrent use.
package h1

import (
	"bytes"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// HeadEnd returns the length of the head at the start of b, with its
// empty line, or -1 when b holds no complete head. bareLF reports a line
// ended by LF alone before that point.
func HeadEnd(b []byte) (n int, bareLF bool) {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1, bareLF
		}
		line := b[i : i+j]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			bareLF = true
		}
		i += j + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return i, bareLF
		}
	}
	return -1, bareLF
}

// notPlain are the request headers that ask for more than one plain
// exchange (canonical names).
var notPlain = [...]string{"Upgrade", "Expect", "Http2-Settings"}

// Plain reports whether a request with method and header asks for nothing
// but one plain exchange: not CONNECT or PRI, no Upgrade, Expect or
// HTTP2-Settings. It is the one rule of every direct path: the
// server's parser (ParseRequest), its check of what net/http read, the
// direct exchange and the client transport all apply it.
func Plain(method string, h http.Header) bool {
	if method == http.MethodConnect || method == "PRI" {
		return false
	}
	for _, k := range notPlain {
		if h[k] != nil {
			return false
		}
	}
	return true
}

// HostLines counts the Host header lines in a request head
// (http.ReadRequest keeps only the first; net/http's server refuses more).
func HostLines(head []byte) int {
	n := 0
	for i := bytes.IndexByte(head, '\n'); i >= 0 && i+5 < len(head); {
		if h := head[i+1 : i+6]; (h[0]|0x20) == 'h' && (h[1]|0x20) == 'o' && (h[2]|0x20) == 's' && (h[3]|0x20) == 't' && h[4] == ':' {
			n++
		}
		j := bytes.IndexByte(head[i+1:], '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return n
}

// HopHeaders are RFC 9110's hop-by-hop headers, as httputil.ReverseProxy
// drops them in both directions, with canonical names.
var HopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// ParseLength parses a Content-Length value: digits only, as net/http
// requires (and at most 18 of them).
func ParseLength[S ~string | ~[]byte](v S) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	n := int64(0)
	for i := range len(v) {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(v[i]-'0')
	}
	return n, true
}

// equalFold reports whether a equals b, ignoring ASCII case only (unlike
// strings.EqualFold, which folds Unicode too).
func equalFold[A, B ~string | ~[]byte](a A, b B) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// headerListed reports whether a canonical header name is among the
// comma-separated names of values (a Connection header), ignoring ASCII
// case: httputil.ReverseProxy's rule for the headers a request's
// Connection header makes hop by hop.
func headerListed(name string, values []string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.Trim(tok, " \t")
			if equalFold(tok, name) {
				return true
			}
		}
	}
	return false
}

// cachedDate is the Date header for one second.
type cachedDate struct {
	unix int64
	text string
}

var lastDate atomic.Pointer[cachedDate]

// Date formats now for the Date header, once per second.
func Date(now time.Time) string {
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.unix == sec {
		return d.text
	}
	d := &cachedDate{unix: sec, text: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.text
}

// Replayable reports whether a request may be tried again after a node
// failed to answer it (the retry policy's question): its method is
// idempotent (RFC 9110 9.2.2) or it carries an idempotency key.
func Replayable(method string, h http.Header) bool {
	switch method {
	case http.MethodPut, http.MethodDelete:
		return true
	}
	return Resendable(method, h)
}

// Resendable reports whether a request without a body may be sent once
// more on a new connection after a pooled one ended without an answer:
// net/http's Transport's rule (Request.isReplayable), GET, HEAD, OPTIONS
// and TRACE, or an idempotency key. A request with a body never is, as in
// a ReverseProxy, whose outgoing request cannot produce its body again.
func Resendable(method string, h http.Header) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := h["Idempotency-Key"]
	_, xkey := h["X-Idempotency-Key"]
	return key || xkey
}
