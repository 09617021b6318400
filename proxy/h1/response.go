package h1

import (
	"bytes"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// Response is a node's answer head that the direct path writes on without
// building an http.Response (see ParseResponse). Its slices point into the
// buffer it was parsed from.
type Response struct {
	Status        int
	ContentLength int64 // -1 for 204 and 304 without one
	KeepAlive     bool  // the node keeps the connection
	HasDate       bool
	HasType       bool // a Content-Type header
	Encoded       bool // a Content-Encoding header that is not empty
	Size          int  // bytes the head takes, with its empty line

	lines []byte // the header lines after the status line, each ending in CRLF
	// connTokens are the header names the Connection header lists (hop by
	// hop, RFC 9110 section 7.6.1): nConn of them. More make the head not
	// simple (a fixed array keeps Response off the heap).
	connTokens [4][]byte
	nConn      int
}

// ParseResponse parses a complete answer head (see HeadEnd) in b into h
// when it is simple: HTTP/1.1, a final status, framed by one
// Content-Length (or a status that has no body), nothing that needs
// net/http's handling. It reports false for the rest — another version,
// 1xx and 101, chunked or unframed bodies, trailers, gRPC and event
// streams, folded or malformed lines — which http.ReadResponse reads.
func ParseResponse(b []byte, h *Response) bool {
	*h = Response{ContentLength: -1, KeepAlive: true}
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
	h.Status = code
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
			h.lines, h.Size = b[linesStart:pos], pos+end+1
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
			n, ok := ParseLength(value)
			if !ok || sawLength {
				return false
			}
			sawLength = true
			h.ContentLength = n
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Trailer"):
			return false
		case equalFold(name, "Content-Type"):
			h.HasType = true
			if hasPrefixFold(value, "application/grpc") || hasPrefixFold(value, "text/event-stream") {
				return false
			}
		case equalFold(name, "Date"):
			h.HasDate = true
		case equalFold(name, "Content-Encoding"):
			h.Encoded = h.Encoded || len(value) > 0
		case equalFold(name, "Connection"):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				tok = trimOWS(tok)
				if equalFold(tok, "close") {
					h.KeepAlive = false
				}
				if len(tok) > 0 {
					if h.nConn == len(h.connTokens) || serverDecides(tok) {
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

// serverDecides reports whether a header the Connection header lists
// (and ReverseProxy therefore drops) is one whose absence net/http's
// server makes up for: Content-Length (it frames the body by what is
// written), Content-Type and Content-Encoding (whether and what it
// sniffs), Date. The answer then goes through ReverseProxy: passed on as
// it is, without the listed header, it would lose its framing.
func serverDecides(name []byte) bool {
	return equalFold(name, "Content-Length") || equalFold(name, "Content-Type") ||
		equalFold(name, "Content-Encoding") || equalFold(name, "Date")
}

// BodyLength is how many body bytes follow the head.
func (h *Response) BodyLength() int64 {
	if h.Status == http.StatusNoContent || h.Status == http.StatusNotModified {
		return 0 // never a body, whatever the header says
	}
	return h.ContentLength
}

// AppendHeaders appends h's header lines as net/http's server would
// write them after ReverseProxy: without the hop-by-hop ones, with
// canonical names and trimmed values, without Content-Length on a 204 or
// 304, nor Content-Type on a 304.
func (h *Response) AppendHeaders(dst []byte) []byte {
	for rest := h.lines; len(rest) > 0; {
		end := bytes.IndexByte(rest, '\n')
		line := rest[:end-1]
		rest = rest[end+1:]
		colon := bytes.IndexByte(line, ':')
		name := line[:colon]
		if hopByHop(name, h.connTokens[:h.nConn]) || suppressed(h.Status, name) {
			continue
		}
		dst = appendCanonicalKey(dst, name)
		dst = append(dst, ": "...)
		dst = append(dst, trimOWS(line[colon+1:])...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// hopByHop reports whether a header is hop by hop: one of HopHeaders, or
// one the Connection header lists.
func hopByHop(name []byte, listed [][]byte) bool {
	for _, h := range HopHeaders {
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

// AppendStatusLine appends an HTTP/1.1 status line for code, with the
// reason phrase net/http's server writes.
func AppendStatusLine(dst []byte, code int) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10), ' ')
	if text := http.StatusText(code); text != "" {
		dst = append(dst, text...)
	} else {
		dst = append(dst, "status code "...)
		dst = append(dst, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10))
	}
	return append(dst, "\r\n"...)
}
