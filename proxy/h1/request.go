package h1

import (
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// ParseRequest parses a request head (see HeadEnd) that the direct path
// takes as it is: HTTP/1.1 in origin form, CRLF line ends, one valid Host,
// at most one Content-Length and no Transfer-Encoding, Plain, no folded or
// malformed line. It fills r as http.ReadRequest would (Host taken out of
// the header, as the server's handlers get it) and reports false for
// anything else, which http.ReadRequest then reads. One string is
// allocated for the head; the names and values are slices of it, and the
// header's values share vals (grown as needed and returned). The URL is
// parsed into u when its target needs no unescaping (see originForm), and
// into a URL of its own otherwise.
func ParseRequest(s string, r *http.Request, u *url.URL, h http.Header, vals []string) ([]string, bool) {
	line, rest, _ := strings.Cut(s, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || method == "" || len(target) < 1 || target[0] != '/' ||
		!Plain(method, nil) || !httpguts.ValidHeaderFieldName(method) {
		return vals, false
	}
	if !originForm(target, u) {
		parsed, err := url.ParseRequestURI(target)
		if err != nil {
			return vals, false
		}
		u = parsed
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
			n, ok := ParseLength(value)
			if !ok || lengths > 0 {
				return vals, false
			}
			length, lengths = n, lengths+1
		case equalFold(name, "Transfer-Encoding"):
			return vals, false
		}
		if !isCanonicalKey(name) {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		if slices.Contains(notPlain[:], name) {
			return vals, false
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

// originForm sets *u to url.ParseRequestURI(target) when target is a
// path of bytes that need no escaping (RFC 3986's unreserved characters and
// the sub-delimiters Go's net/url leaves as they are in a path, ':' and '@')
// and an optional query without control characters; it reports false,
// leaving u alone, for anything else. It allocates nothing.
func originForm(target string, u *url.URL) bool {
	if len(target) == 0 || target[0] != '/' {
		return false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	for i := 0; i < len(path); i++ {
		if !pathByte[path[i]] {
			return false
		}
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	// "/p?" keeps its bare '?' (ForceQuery); "/p??" has the query "?".
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// pathByte is the bytes net/url's escape leaves as they are in a path:
// letters, digits, "-_.~" and "$&+,/:;=@".
var pathByte = func() (t [256]bool) {
	for c := range 256 {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			t[c] = true
		case strings.IndexByte("-_.~$&+,/:;=@", byte(c)) >= 0:
			t[c] = true
		}
	}
	return t
}()

// fixPragmaCacheControl is net/http's: Pragma: no-cache without
// Cache-Control means Cache-Control: no-cache (RFC 7234, section 5.4).
func fixPragmaCacheControl(h http.Header) {
	if hp, ok := h["Pragma"]; ok && len(hp) > 0 && hp[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
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

// ServerTakes reports whether req, which http.ReadRequest read from head,
// is one the direct server serves: a well-formed HTTP/1.1 request in
// origin form with exactly one valid Host line, Plain, with no header
// net/http's server would refuse. Anything else is net/http's to answer.
func ServerTakes(req *http.Request, head []byte) bool {
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.RequestURI == "*" || req.URL.Host != "" || req.URL.Scheme != "" ||
		!httpguts.ValidHostHeader(req.Host) || HostLines(head) != 1 || !Plain(req.Method, req.Header) {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// Encodable reports whether AppendRequestHead encodes r as ReverseProxy
// would send it: r is Plain, has a Host (ReverseProxy sends the node's
// address for an empty one) without an IPv6 zone, and is not a HEAD (whose
// answer has no body whatever its header says).
func Encodable(r *http.Request) bool {
	return r.Host != "" && strings.IndexByte(r.Host, '%') < 0 && r.Method != http.MethodHead && Plain(r.Method, r.Header)
}

// HeadOptions change what AppendRequestHead writes.
type HeadOptions struct {
	// KeepForwarded keeps the client's Forwarded and X-Forwarded-*
	// headers (a Rewrite that copies them back).
	KeepForwarded bool
	// Extra are header lines (each ending in CRLF) added at the end.
	Extra []byte
}

// AppendRequestHead appends the head the direct path sends a node for r
// (see Encodable): what httputil.ReverseProxy (with a Rewrite that keeps
// the client's Host) and http.Request.Write would send. Hop-by-hop headers
// (and those the Connection header lists) are dropped, and so are the
// client's Forwarded and X-Forwarded-* headers unless o keeps them;
// User-Agent is sent only when the client sent one; Te: trailers passes;
// the body's length is announced as Request.Write does ("Content-Length:
// 0" for POST, PUT and PATCH); o.Extra comes last.
func AppendRequestHead(dst []byte, r *http.Request, o HeadOptions) []byte {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	if p := r.URL.EscapedPath(); p != "" {
		dst = append(dst, p...)
	} else {
		dst = append(dst, '/')
	}
	// ReverseProxy cleans the query first: one that cleans to nothing
	// loses its '?' (url.URL.RequestURI writes it for a non-empty query or
	// ForceQuery only).
	if q := cleanQuery(r.URL.RawQuery); r.URL.ForceQuery || q != "" {
		dst = append(dst, '?')
		dst = append(dst, q...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, r.Host...)
	dst = append(dst, "\r\n"...)
	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length": // Request.Write writes its own
			continue
		case "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto": // Rewrite drops them
			if !o.KeepForwarded {
				continue
			}
		}
		if slices.Contains(HopHeaders, k) || len(conn) > 0 && headerListed(k, conn) {
			continue
		}
		if k == "User-Agent" { // Request.Write sends the first, if not empty
			if vv = vv[:min(len(vv), 1)]; len(vv) == 1 && textproto.TrimString(vv[0]) == "" {
				continue
			}
		}
		for _, v := range vv {
			dst = AppendHeaderLine(dst, k, v)
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
	dst = append(dst, o.Extra...)
	return append(dst, "\r\n"...)
}

var headerNewlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// AppendHeaderLine appends one header line as http.Header.Write does: an
// invalid name is skipped, line breaks in the value become spaces, the
// value is trimmed.
func AppendHeaderLine(dst []byte, k, v string) []byte {
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
