// Package hashkey extracts the key that the consistent-hash policies
// (ring_hash, maglev) hash a request on: a header, a cookie, the client IP,
// the path or a query parameter, and hashes it with a function that is the
// same in every process, so that all sidecars in front of one upstream send a
// key to the same node.
//
// A request without the key (the header, cookie or parameter is absent or
// empty, or there is no request, as for TCP, except for source_ip) has no
// hash: the policies then pick a node at random, spread by weight, and the
// request has no affinity.
//
// Extraction does not allocate: the header name is canonicalised once at
// Compile, and cookies and query parameters are scanned in place rather
// than parsed into maps.
package hashkey

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"

	"golang.org/x/net/http/httpguts"

	"github.com/remora-mesh/remora/pkg/balancer"
)

// Spec says what to hash on; exactly one field is set. In config it is the
// hash_on block of a consistent-hash policy, e.g.
//
//	balancer: {policy: ring_hash, hash_on: {header: x-user-id}}
//	balancer: {policy: maglev, hash_on: {cookie: session}}
//	balancer: {policy: maglev, hash_on: {source_ip: true}}
type Spec struct {
	// Header is the name of a request header (case-insensitive); its first
	// value is hashed. "Host" hashes the request's host.
	Header string `yaml:"header" json:"header,omitempty"`
	// Cookie is the name of a cookie (case-sensitive); the value of the
	// first valid cookie of that name is hashed, as net/http's
	// Request.Cookie would return it.
	Cookie string `yaml:"cookie" json:"cookie,omitempty"`
	// SourceIP hashes the client's IP address (without its port).
	SourceIP bool `yaml:"source_ip" json:"source_ip,omitempty"`
	// Path hashes the request's URL path.
	Path bool `yaml:"path" json:"path,omitempty"`
	// QueryParameter is the name of a query parameter; its first value,
	// unescaped, is hashed (as url.Values.Get would return it).
	QueryParameter string `yaml:"query_parameter" json:"query_parameter,omitempty"`
}

type kind uint8

const (
	kindNone kind = iota
	kindHeader
	kindHost
	kindCookie
	kindSourceIP
	kindPath
	kindQuery
)

// Keyed is a balancer.Builder (or any other user of a Key) that hashes
// with a Key; configuration checks find it by type assertion.
type Keyed interface {
	HashKey() Key
}

// SourceIP reports whether k hashes the client's address.
func (k Key) SourceIP() bool { return k.kind == kindSourceIP }

// FromRequest reports whether k reads the HTTP request (a header, the
// host, a cookie, the path, a query parameter): a raw TCP connection has
// none, so such a key never applies to one.
func (k Key) FromRequest() bool { return k.kind != kindNone && k.kind != kindSourceIP }

// Key is a compiled Spec. Its zero value has no key: every request falls
// back to a random pick. A Key is immutable and safe for concurrent use.
type Key struct {
	kind kind
	name string // canonical header name, cookie name or parameter name
}

// ErrNoKey is returned by Compile for an empty Spec.
var ErrNoKey = errors.New("hash_on: set one of header, cookie, source_ip, path, query_parameter")

// Compile validates s and returns its Key.
func (s Spec) Compile() (Key, error) {
	set := 0
	var k Key
	if s.Header != "" {
		set++
		if !httpguts.ValidHeaderFieldName(s.Header) {
			return Key{}, fmt.Errorf("hash_on.header: %q is not a valid header name", s.Header)
		}
		k = Key{kind: kindHeader, name: textproto.CanonicalMIMEHeaderKey(s.Header)}
		if k.name == "Host" {
			k = Key{kind: kindHost}
		}
	}
	if s.Cookie != "" {
		set++
		if !httpguts.ValidHeaderFieldName(s.Cookie) {
			return Key{}, fmt.Errorf("hash_on.cookie: %q is not a valid cookie name", s.Cookie)
		}
		k = Key{kind: kindCookie, name: s.Cookie}
	}
	if s.SourceIP {
		set++
		k = Key{kind: kindSourceIP}
	}
	if s.Path {
		set++
		k = Key{kind: kindPath}
	}
	if s.QueryParameter != "" {
		set++
		k = Key{kind: kindQuery, name: s.QueryParameter}
	}
	switch set {
	case 0:
		return Key{}, ErrNoKey
	case 1:
		return k, nil
	}
	return Key{}, fmt.Errorf("hash_on: %d keys set; set exactly one of header, cookie, source_ip, path, query_parameter", set)
}

// String describes the key as in config.
func (k Key) String() string {
	switch k.kind {
	case kindHeader:
		return "header " + k.name
	case kindHost:
		return "header Host"
	case kindCookie:
		return "cookie " + k.name
	case kindSourceIP:
		return "source_ip"
	case kindPath:
		return "path"
	case kindQuery:
		return "query_parameter " + k.name
	}
	return "none"
}

// Hash returns the hash of info's key, and false when info has no key.
// It does not allocate.
func (k Key) Hash(info balancer.Info) (uint64, bool) {
	r := info.Request
	if r == nil {
		if k.kind == kindSourceIP && info.RemoteAddr != "" {
			return String(hostOnly(info.RemoteAddr)), true
		}
		return 0, false
	}
	var v string
	switch k.kind {
	case kindHeader:
		if vs := r.Header[k.name]; len(vs) > 0 {
			v = vs[0]
		}
	case kindHost:
		v = r.Host
	case kindCookie:
		v = cookie(r.Header["Cookie"], k.name)
	case kindSourceIP:
		v = hostOnly(r.RemoteAddr)
	case kindPath:
		if r.URL != nil {
			v = r.URL.Path
		}
	case kindQuery:
		if r.URL != nil {
			return query(r.URL.RawQuery, k.name)
		}
	}
	if v == "" {
		return 0, false
	}
	return String(v), true
}

// hostOnly strips the port from "host:port", keeping addr whole when it
// has none.
func hostOnly(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// Hashing: 64-bit FNV-1a over the bytes, then MurmurHash3's 64-bit
// finaliser so that keys differing in their last bytes spread over the
// whole range. Both are fixed algorithms: the hash of a key is the same in
// every process and release, which consistent hashing across sidecars needs.
const (
	offset64 = 14695981039346656037
	prime64  = 1099511628211
)

// Hasher hashes a byte stream incrementally; start from NewHasher.
type Hasher uint64

// NewHasher returns an empty Hasher.
func NewHasher() Hasher { return offset64 }

// AddByte adds one byte.
func (h Hasher) AddByte(b byte) Hasher { return (h ^ Hasher(b)) * prime64 }

// AddString adds the bytes of s.
func (h Hasher) AddString(s string) Hasher {
	for i := 0; i < len(s); i++ {
		h = (h ^ Hasher(s[i])) * prime64
	}
	return h
}

// Sum returns the finished hash.
func (h Hasher) Sum() uint64 { return Mix(uint64(h)) }

// String hashes s: NewHasher().AddString(s).Sum().
func String(s string) uint64 { return NewHasher().AddString(s).Sum() }

// Mix is MurmurHash3's 64-bit finaliser, a bijection with full avalanche.
func Mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Cookie returns the value of the named cookie of r, or "", scanning the
// Cookie headers in place without allocating.
func Cookie(r *http.Request, name string) string {
	return cookie(r.Header["Cookie"], name)
}
