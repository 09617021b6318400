package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// parseRequestHead parses a request head (see headEnd) that the direct
// path takes as it is: HTTP/1.1 in origin form, CRLF line ends, one Host,
// at most one Content-Length and no Transfer-Encoding, nothing asking for
// more than a plain exchange (Upgrade, Expect, HTTP2-Settings), no folded
// or malformed line. It fills r as http.ReadRequest would (Host taken out
// of the header, as proxy.Server does) and reports false for anything
// else, which http.ReadRequest then reads: one string is allocated for the
// head, the names and values are slices of it, and the header's values
// share vals (grown as needed and returned).
func parseRequestHead(s string, r *http.Request, h http.Header, vals []string) ([]string, bool) {
	line, rest, _ := strings.Cut(s, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == "" || len(target) < 1 || target[0] != '/' ||
		method == http.MethodConnect || method == "PRI" || !httpguts.ValidHeaderFieldName(method) {
		return vals, false
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return vals, false
	}
	vals = vals[:0]
	host, hosts, length, lengths := "", 0, int64(0), 0
	for {
		line, rest, _ = strings.Cut(rest, "\n")
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return vals, false
		}
		line = line[:len(line)-1]
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return vals, false // also a folded line, which starts with a space
		}
		value = strings.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(value) {
			return vals, false
		}
		switch {
		case equalFold(name, "Host"):
			host, hosts = value, hosts+1
			continue
		case equalFold(name, "Content-Length"):
			n, ok := parseLength(value)
			if !ok || lengths > 0 {
				return vals, false
			}
			length, lengths = n, lengths+1
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Upgrade"), equalFold(name, "Expect"), equalFold(name, "Http2-Settings"):
			return vals, false
		}
		if !isCanonicalKey(name) {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		if vv, seen := h[name]; seen {
			h[name] = append(vv, value) // a copy: rare
			continue
		}
		vals = append(vals, value)
		h[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if hosts != 1 || !httpguts.ValidHostHeader(host) {
		return vals, false
	}
	fixPragmaCacheControl(h)
	*r = http.Request{
		Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: host, RequestURI: target, ContentLength: length, Body: http.NoBody,
		Close: httpguts.HeaderValuesContainsToken(h["Connection"], "close"),
	}
	return vals, true
}

// fixPragmaCacheControl is net/http's: Pragma: no-cache without
// Cache-Control means Cache-Control: no-cache (RFC 7234, section 5.4).
func fixPragmaCacheControl(h http.Header) {
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
}

// parseLength parses a Content-Length value: digits only, as net/http
// requires (and at most 18 of them).
func parseLength[S ~string | ~[]byte](v S) (int64, bool) {
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

// isCanonicalKey reports whether a token is in canonical form already
// (textproto.CanonicalMIMEHeaderKey would return it unchanged).
func isCanonicalKey(s string) bool {
	upper := true
	for i := range len(s) {
		c := s[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// fixedBody is a request body of known length read from the connection's
// buffer.
type fixedBody struct {
	br *bufio.Reader
	n  int64 // bytes left
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.br.Read(p)
	b.n -= int64(k)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

func (b *fixedBody) Close() error { return nil }
