package config

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/remora-mesh/remora/pkg/upstream"
)

// Route sends the requests it matches to an upstream. A listener's routes
// are tried in order; the first that matches wins. A route without a match
// block matches everything (a default).
type Route struct {
	// Name identifies the route in /routes, metrics and the access log;
	// default "routes[N]".
	Name string `yaml:"name"`
	// Match says which requests the route takes; every condition set must
	// hold.
	Match RouteMatch `yaml:"match"`
	// Upstream is where they go.
	Upstream string `yaml:"upstream"`
	// Rewrite changes the path before forwarding.
	Rewrite *Rewrite `yaml:"rewrite"`
	// RequestHeaders and ResponseHeaders change headers on the way to the
	// node and back.
	RequestHeaders  *HeaderRules `yaml:"request_headers"`
	ResponseHeaders *HeaderRules `yaml:"response_headers"`
	// RateLimit bounds this route's requests (besides its upstream's).
	RateLimit *upstream.RateLimit `yaml:"rate_limit"`
}

// RouteMatch is a route's conditions.
type RouteMatch struct {
	// Host is the request's host without its port (case-insensitive).
	Host string `yaml:"host"`
	// Path matches the path exactly; PathPrefix by prefix (a segment
	// boundary is not implied: /api matches /apis); PathRegex by a Go
	// regular expression (RE2) anchored at both ends. At most one.
	Path       string `yaml:"path"`
	PathPrefix string `yaml:"path_prefix"`
	PathRegex  string `yaml:"path_regex"`
	// Methods the request may have; any when empty.
	Methods []string `yaml:"methods"`
	// Headers the request must carry.
	Headers []HeaderMatch `yaml:"headers"`

	// PathRegexp is PathRegex compiled, set by Validate.
	PathRegexp *regexp.Regexp `yaml:"-" json:"-"`
}

// HeaderMatch is a header condition: its first value equal to Value, or
// matching Regex (anchored), or, with neither, present at all (Present:
// false asks for it to be absent).
type HeaderMatch struct {
	Name    string `yaml:"name"`
	Value   string `yaml:"value"`
	Regex   string `yaml:"regex"`
	Present *bool  `yaml:"present"`

	// Regexp is Regex compiled, set by Validate.
	Regexp *regexp.Regexp `yaml:"-" json:"-"`
}

// Rewrite changes a request's path: StripPrefix removes the matched
// prefix (the route's path_prefix) and puts PrefixRewrite ("/" when
// empty) in its place; Path replaces the whole path. At most one of
// strip_prefix/prefix_rewrite and path.
type Rewrite struct {
	StripPrefix   bool   `yaml:"strip_prefix"`
	PrefixRewrite string `yaml:"prefix_rewrite"`
	Path          string `yaml:"path"`
}

// HeaderRules change headers: Remove first, then Set (replacing every
// value), then Add (another value).
type HeaderRules struct {
	Add    map[string]string `yaml:"add"`
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// Forwarded modes of a listener (see Listener.Forwarded).
const (
	ForwardedKeep   = "keep"
	ForwardedAppend = "append"
	ForwardedDrop   = "drop"
)

// validateRoutes checks a listener's (or a dedicated port's) routes
// against the upstream names; path is where they are ("listeners[0]").
// tcp names the tcp upstreams, which no route may send to.
func validateRoutes(path string, routes []Route, upstreams, tcp map[string]bool, add func(string, ...any), at func(path, format string, args ...any)) {
	for i := range routes {
		r := &routes[i]
		rp := fmt.Sprintf("%s.routes[%d]", path, i)
		if r.Name == "" {
			r.Name = fmt.Sprintf("routes[%d]", i)
		}
		switch {
		case r.Upstream == "":
			add("%s.upstream: missing; every route names the upstream it sends to", rp)
		case !upstreams[r.Upstream]:
			add("%s.upstream: unknown upstream %q", rp, r.Upstream)
		case tcp[r.Upstream]:
			add("%s.upstream: %q is a tcp upstream, which relays raw connections on its own listen port; a route sends HTTP requests", rp, r.Upstream)
		}
		m := &r.Match
		set := 0
		for _, p := range []string{m.Path, m.PathPrefix, m.PathRegex} {
			if p != "" {
				set++
			}
		}
		if set > 1 {
			add("%s.match: set at most one of path, path_prefix and path_regex", rp)
		}
		for _, p := range []struct{ field, v string }{{"path", m.Path}, {"path_prefix", m.PathPrefix}} {
			if p.v != "" && !strings.HasPrefix(p.v, "/") {
				add("%s.match.%s: %q must start with /", rp, p.field, p.v)
			}
		}
		if m.PathRegex != "" {
			re, err := regexp.Compile("^(?:" + m.PathRegex + ")$")
			if err != nil {
				add("%s.match.path_regex: %v", rp, err)
			}
			m.PathRegexp = re
		}
		m.Host = strings.ToLower(strings.TrimSuffix(m.Host, "."))
		for j, meth := range m.Methods {
			if !httpguts.ValidHeaderFieldName(meth) {
				add("%s.match.methods[%d]: %q is not a method", rp, j, meth)
			}
			m.Methods[j] = strings.ToUpper(meth)
		}
		for j := range m.Headers {
			h := &m.Headers[j]
			hp := fmt.Sprintf("%s.match.headers[%d]", rp, j)
			if !httpguts.ValidHeaderFieldName(h.Name) {
				add("%s.name: %q is not a header name", hp, h.Name)
			}
			h.Name = http.CanonicalHeaderKey(h.Name)
			if h.Value != "" && h.Regex != "" || h.Present != nil && (h.Value != "" || h.Regex != "") {
				add("%s: set one of value, regex and present", hp)
			}
			if h.Regex != "" {
				re, err := regexp.Compile("^(?:" + h.Regex + ")$")
				if err != nil {
					add("%s.regex: %v", hp, err)
				}
				h.Regexp = re
			}
		}
		if rw := r.Rewrite; rw != nil {
			switch {
			case rw.Path != "" && (rw.StripPrefix || rw.PrefixRewrite != ""):
				add("%s.rewrite: set either path or strip_prefix/prefix_rewrite", rp)
			case (rw.StripPrefix || rw.PrefixRewrite != "") && m.PathPrefix == "":
				add("%s.rewrite.strip_prefix: needs match.path_prefix (the prefix it replaces)", rp)
			case rw.Path != "" && !strings.HasPrefix(rw.Path, "/"):
				add("%s.rewrite.path: %q must start with /", rp, rw.Path)
			case rw.PrefixRewrite != "" && !strings.HasPrefix(rw.PrefixRewrite, "/"):
				add("%s.rewrite.prefix_rewrite: %q must start with /", rp, rw.PrefixRewrite)
			}
			if rw.PrefixRewrite != "" {
				rw.StripPrefix = true
			}
		}
		validateHeaderRules(rp+".request_headers", r.RequestHeaders, at)
		validateHeaderRules(rp+".response_headers", r.ResponseHeaders, at)
		if rl := r.RateLimit; rl != nil {
			pol := upstream.Policy{RateLimit: rl}
			for _, err := range unjoin(pol.Validate()) {
				if strings.HasPrefix(err.Error(), "rate_limit") {
					add("%s.%v", rp, err)
				}
			}
		}
		if i < len(routes)-1 && isDefault(m) {
			add("%s.match: matches every request, so the routes after it are never used; put it last", rp)
		}
	}
}

// isDefault reports a match without conditions.
func isDefault(m *RouteMatch) bool {
	return m.Host == "" && m.Path == "" && m.PathPrefix == "" && m.PathRegex == "" && len(m.Methods) == 0 && len(m.Headers) == 0
}

// hopByHop are the headers header rules may not touch: the connection's,
// not the message's. They are RFC 9110's hop-by-hop headers, all of which
// ReverseProxy and the h1 codec drop on the way to the node and back (so a
// rule's would be dropped, or sent on one path only), and the framing
// ones. Every rule, of routes and upstreams, request and response, is
// checked against this one list.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length"}

// validateHeaderRules checks header rules at path; at reports a problem
// at a field path, which holds the header names as written (any
// character).
func validateHeaderRules(path string, hr *HeaderRules, at func(path, format string, args ...any)) {
	if hr == nil {
		return
	}
	message := "request"
	if strings.HasSuffix(path, "response_headers") {
		message = "response"
	}
	check := func(field, name string) {
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			at(path+"."+field, "%q is not a header name", name)
		case slices.Contains(hopByHop, http.CanonicalHeaderKey(name)):
			at(path+"."+field, "%s belongs to the connection, not the %s; it cannot be changed", http.CanonicalHeaderKey(name), message)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(hr.Add)) {
		check("add."+k, k)
		if !httpguts.ValidHeaderFieldValue(hr.Add[k]) {
			at(path+".add."+k, "the value has a control character")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(hr.Set)) {
		check("set."+k, k)
		if !httpguts.ValidHeaderFieldValue(hr.Set[k]) {
			at(path+".set."+k, "the value has a control character")
		}
	}
	for i, k := range hr.Remove {
		check(fmt.Sprintf("remove[%d]", i), k)
	}
}
