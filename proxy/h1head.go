package proxy

import (
	"bytes"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// respHead is a node's answer head that the direct path writes on without
// building an http.Response: a final status, framed by one Content-Length
// (or a status that has no body), nothing that needs net/http's handling.
// Its slices point into the connection's read buffer.
type respHead struct {
	status        int
	contentLength int64 // -1 for 204 and 304 without one
	keepAlive     bool  // the node keeps the connection
	hasDate       bool
	hasType       bool   // a Content-Type header
	encoded       bool   // a Content-Encoding header that is not empty
	lines         []byte // the header lines after the status line, each ending in CRLF
	size          int    // bytes the head takes, with its empty line
	// connTokens are the header names the Connection header lists (hop by
	// hop, RFC 9110 section 7.6.1): nConn of them. More make the head not
	// simple (a fixed array keeps respHead off the heap).
	connTokens [4][]byte
	nConn      int
}

// headEnd returns the length of the head at the start of b, with its
// empty line, or -1 when b holds no complete head. bareLF reports a line
// ended by LF alone before that point.
func headEnd(b []byte) (n int, bareLF bool) {
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

// parseRespHead parses a complete answer head (see headEnd) in b. It
// reports false for anything the direct path leaves to net/http: another
// version than HTTP/1.1, 1xx and 101, chunked or unframed bodies,
// trailers, gRPC and event streams, folded or malformed lines.
func parseRespHead(b []byte, h *respHead) bool {
	*h = respHead{contentLength: -1, keepAlive: true}
	end := bytes.IndexByte(b, '\n')
	if end < 0 {
		return false
	}
	line := b[:end]
	if len(line) < len("HTTP/1.1 200\r") || string(line[:9]) != "HTTP/1.1 " || line[len(line)-1] != '\r' {
		return false
	}
	line = line[9 : len(line)-1]
	code := 0
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return false
		}
		code = code*10 + int(c-'0')
	}
	if len(line) > 3 && line[3] != ' ' || code < 200 || code > 599 {
		return false
	}
	h.status = code
	pos := end + 1
	linesStart := pos
	sawLength := false
	for {
		end = bytes.IndexByte(b[pos:], '\n')
		if end < 1 || b[pos+end-1] != '\r' {
			return false
		}
		line := b[pos : pos+end-1]
		if len(line) == 0 {
			h.lines, h.size = b[linesStart:pos], pos+end+1
			break
		}
		pos += end + 1
		colon := bytes.IndexByte(line, ':')
		if colon < 1 {
			return false // also a folded line, which starts with a space
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !httpguts.IsTokenRune(rune(c)) {
				return false
			}
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return false
			}
		}
		switch {
		case equalFold(name, "Content-Length"):
			n, ok := parseLength(value)
			if !ok || sawLength {
				return false
			}
			sawLength = true
			h.contentLength = n
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Trailer"):
			return false
		case equalFold(name, "Content-Type"):
			h.hasType = true
			if hasPrefixFold(value, "application/grpc") || hasPrefixFold(value, "text/event-stream") {
				return false
			}
		case equalFold(name, "Date"):
			h.hasDate = true
		case equalFold(name, "Content-Encoding"):
			h.encoded = h.encoded || len(value) > 0
		case equalFold(name, "Connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				if equalFold(tok, "close") {
					h.keepAlive = false
				}
				if len(tok) > 0 {
					if h.nConn == len(h.connTokens) {
						return false
					}
					h.connTokens[h.nConn] = tok
					h.nConn++
				}
			}
		}
	}
	if !sawLength && code != http.StatusNoContent && code != http.StatusNotModified {
		return false // read until close: net/http handles it
	}
	return true
}

// hopHeaders are RFC 9110's hop-by-hop headers, as httputil.ReverseProxy
// drops them in both directions, with canonical names.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// hopByHop reports whether a header is hop by hop: one of hopHeaders, or
// one the Connection header lists.
func hopByHop(name []byte, listed [][]byte) bool {
	for _, h := range hopHeaders {
		if equalFold(name, h) {
			return true
		}
	}
	for _, t := range listed {
		if equalFold(name, t) {
			return true
		}
	}
	return false
}

// appendRespHeaders appends h's header lines without the hop-by-hop ones,
// with canonical names and trimmed values, as net/http would write them:
// without Content-Length on a 204 or 304, nor Content-Type on a 304.
func appendRespHeaders(dst []byte, h *respHead) []byte {
	for rest := h.lines; len(rest) > 0; {
		end := bytes.IndexByte(rest, '\n')
		line := rest[:end-1]
		rest = rest[end+1:]
		colon := bytes.IndexByte(line, ':')
		name := line[:colon]
		if hopByHop(name, h.connTokens[:h.nConn]) || suppressed(h.status, name) {
			continue
		}
		dst = appendCanonicalKey(dst, name)
		dst = append(dst, ": "...)
		dst = append(dst, trimOWS(line[colon+1:])...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// suppressed reports a header net/http's server drops from an answer
// with status (RFC 9110 8.6: no Content-Length on a 204; 15.4.5: a 304
// describes no body of its own).
func suppressed(status int, name []byte) bool {
	switch status {
	case http.StatusNoContent:
		return equalFold(name, "Content-Length")
	case http.StatusNotModified:
		return equalFold(name, "Content-Length") || equalFold(name, "Content-Type")
	}
	return false
}

// appendCanonicalKey appends a valid header name in canonical form
// (textproto.CanonicalMIMEHeaderKey's).
func appendCanonicalKey(dst, name []byte) []byte {
	upper := true
	for _, c := range name {
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
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

// appendRequestHead appends the head the direct path sends a node for r:
// what httputil.ReverseProxy (with Rewrite) and http.Request.Write would
// send. The client's Host is kept; hop-by-hop headers (and those the
// Connection header lists) and the client's Forwarded and X-Forwarded-*
// headers are dropped; User-Agent is sent only when the client sent one;
// Te: trailers passes; the body's length is announced as Request.Write
// does ("Content-Length: 0" for POST, PUT and PATCH). r.Host must not
// hold an IPv6 zone.
func appendRequestHead(dst []byte, r *http.Request) []byte {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	if p := r.URL.EscapedPath(); p != "" {
		dst = append(dst, p...)
	} else {
		dst = append(dst, '/')
	}
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		dst = append(dst, '?')
		dst = append(dst, cleanQuery(r.URL.RawQuery)...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, r.Host...)
	dst = append(dst, "\r\n"...)
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length", // Request.Write writes its own
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto": // Rewrite drops them
			continue
		}
		if slices.Contains(hopHeaders, k) || len(conn) > 0 && headerListed(k, conn) {
			continue
		}
		if k == "User-Agent" { // Request.Write sends the first, if not empty
			if vv = vv[:min(len(vv), 1)]; len(vv) == 1 && textproto.TrimString(vv[0]) == "" {
				continue
			}
		}
		for _, v := range vv {
			dst = appendHeaderLine(dst, k, v)
		}
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		dst = append(dst, "Te: trailers\r\n"...)
	}
	if r.ContentLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, max(r.ContentLength, 0), 10)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// appendHeaderLine appends one header line as http.Header.Write does: an
// invalid name is skipped, line breaks in the value become spaces, the
// value is trimmed.
func appendHeaderLine(dst []byte, k, v string) []byte {
	if !httpguts.ValidHeaderFieldName(k) {
		return dst
	}
	if strings.ContainsAny(v, "\r\n") {
		v = headerNewlineToSpace.Replace(v)
	}
	v = textproto.TrimString(v)
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

// cleanQuery is httputil.ReverseProxy's: a query with a semicolon or a bad
// escape is parsed and encoded again, which drops what does not parse.
func cleanQuery(s string) string {
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			v, _ := url.ParseQuery(s)
			return v.Encode()
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				v, _ := url.ParseQuery(s)
				return v.Encode()
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
