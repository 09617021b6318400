package proxy

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Forwarded is what a listener does with the application's Forwarded and
// X-Forwarded-* headers.
type Forwarded uint8

const (
	// ForwardedKeep passes them on as they are (the application is the
	// trusted local caller).
	ForwardedKeep Forwarded = iota
	// ForwardedAppend adds this hop, as a reverse proxy would
	// (httputil.ProxyRequest.SetXForwarded).
	ForwardedAppend
	// ForwardedDrop removes them.
	ForwardedDrop
)

// ListenerOptions configure a listener's handler (see Proxy.Listener).
type ListenerOptions struct {
	// Routes are tried in order; the first that matches names the
	// upstream. Without one that matches, Upstream does, or else the
	// request's Host.
	Routes []Rule
	// Upstream is the upstream of a dedicated port; "" routes by Host.
	Upstream string
	// Forwarded is what happens to the application's forwarding headers.
	Forwarded Forwarded
	// RequestID gives a request without X-Request-Id one.
	RequestID bool
}

// Rule is a route: conditions (every one set must hold), the upstream
// it sends to, and what it changes on the way.
type Rule struct {
	Name string
	// Host is a lower-case host without port; "" matches any.
	Host string
	// Path matches exactly, PathPrefix by prefix, PathRegexp (anchored)
	// by expression; at most one is set.
	Path, PathPrefix string
	PathRegexp       *regexp.Regexp
	// Methods, upper case; any when empty.
	Methods []string
	Headers []HeaderCond
	// Upstream is where matching requests go.
	Upstream string
	// StripPrefix replaces PathPrefix with PrefixRewrite ("/" when
	// empty); RewritePath replaces the whole path.
	StripPrefix   bool
	PrefixRewrite string
	RewritePath   string
	// RequestHeaders and ResponseHeaders change headers.
	RequestHeaders, ResponseHeaders *HeaderRules
	// RateLimit bounds the route's requests; none when nil.
	RateLimit *upstream.RateLimit
}

// HeaderCond is a header condition: its first value equal to Value,
// matching Regexp (anchored), or, with neither, present (Absent: absent).
type HeaderCond struct {
	Name   string // canonical
	Value  string
	Regexp *regexp.Regexp
	Absent bool
}

// HeaderRules change headers: Remove, then Set, then Add. Names are
// canonical.
type HeaderRules struct {
	Add, Set map[string]string
	Remove   []string
}

// apply changes h by the rules; nil rules change nothing.
func (hr *HeaderRules) apply(h http.Header) {
	if hr == nil {
		return
	}
	for _, k := range hr.Remove {
		delete(h, k)
	}
	for k, v := range hr.Set {
		h[k] = []string{v}
	}
	for k, v := range hr.Add {
		h[k] = append(h[k], v)
	}
}

// touchesForwarding reports whether the rules change a header that a
// listener's forwarded mode governs (forwardingHeaders).
func (hr *HeaderRules) touchesForwarding() bool {
	if hr == nil {
		return false
	}
	for _, k := range forwardingHeaders {
		if _, ok := hr.Set[k]; ok {
			return true
		}
		if _, ok := hr.Add[k]; ok {
			return true
		}
		if slices.Contains(hr.Remove, k) {
			return true
		}
	}
	return false
}

// applyTo changes h by the rules, but only the headers in keys.
func (hr *HeaderRules) applyTo(h http.Header, keys []string) {
	if hr == nil {
		return
	}
	for _, k := range hr.Remove {
		if slices.Contains(keys, k) {
			delete(h, k)
		}
	}
	for k, v := range hr.Set {
		if slices.Contains(keys, k) {
			h[k] = []string{v}
		}
	}
	for k, v := range hr.Add {
		if slices.Contains(keys, k) {
			h[k] = append(h[k], v)
		}
	}
}

// compiledRule is a Rule with its counters and limiter. It is immutable
// but for the atomics, which the request path adds to; the counters and
// limiter pass on to the rule of the same name a reload makes.
type compiledRule struct {
	Rule
	forwarding bool // RequestHeaders.touchesForwarding
	limiter    *upstream.Limiter
	requests   *atomic.Uint64
	limited    *atomic.Uint64
}

// matches reports whether r meets every condition. It does not allocate.
func (c *compiledRule) matches(r *http.Request, host string) bool {
	switch {
	case c.Host != "" && c.Host != host:
		return false
	case c.Path != "" && r.URL.Path != c.Path:
		return false
	case c.PathPrefix != "" && !strings.HasPrefix(r.URL.Path, c.PathPrefix):
		return false
	case c.PathRegexp != nil && !c.PathRegexp.MatchString(r.URL.Path):
		return false
	case len(c.Methods) > 0 && !slices.Contains(c.Methods, r.Method):
		return false
	}
	for i := range c.Headers {
		hc := &c.Headers[i]
		vv := r.Header[hc.Name]
		switch {
		case hc.Absent:
			if len(vv) > 0 {
				return false
			}
		case len(vv) == 0:
			return false
		case hc.Regexp != nil && !hc.Regexp.MatchString(vv[0]):
			return false
		case hc.Value != "" && vv[0] != hc.Value:
			return false
		}
	}
	return true
}

// rewrite changes r's path as the rule says: RewritePath replaces it;
// StripPrefix replaces the matched PathPrefix with PrefixRewrite, as it
// is (Envoy's prefix_rewrite: mind the slashes), keeping a leading one.
func (c *compiledRule) rewrite(r *http.Request) {
	var p string
	switch {
	case c.RewritePath != "":
		p = c.RewritePath
	case c.StripPrefix:
		p = c.PrefixRewrite + strings.TrimPrefix(r.URL.Path, c.PathPrefix)
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
	default:
		return
	}
	u := *r.URL
	u.Path, u.RawPath = p, ""
	r.URL = &u
	r.RequestURI = u.RequestURI()
}

// RouteStats is a route's counters.
type RouteStats struct {
	Listener, Name, Upstream string
	Requests, RateLimited    uint64
}

// listenerHandler serves one listener's requests (see Proxy.Listener).
// Its state is replaced as a whole when the listener's configuration
// changes: one atomic load per request.
type listenerHandler struct {
	p     *Proxy
	name  string
	state atomic.Pointer[listenerState]
}

// listenerState is a listener's options with its compiled routes. It is
// immutable once published but for the routes' counters.
type listenerState struct {
	opts  ListenerOptions
	rules []*compiledRule
}

// Listener returns the handler of the listener named name, with opts:
// requests take the first route that matches; one that no route takes
// goes to opts.Upstream, or to the upstream its Host names. Called again
// with the same name (a reload), it gives that listener's handler the new
// options and returns it.
func (p *Proxy) Listener(name string, opts ListenerOptions) http.Handler {
	v, _ := p.listeners.LoadOrStore(name, &listenerHandler{p: p, name: name})
	h := v.(*listenerHandler)
	var was []*compiledRule
	if old := h.state.Load(); old != nil {
		was = slices.Clone(old.rules) // compileRule takes from it
	}
	st := &listenerState{opts: opts}
	for _, r := range opts.Routes {
		st.rules = append(st.rules, compileRule(r, &was))
	}
	h.state.Store(st)
	return h
}

// compileRule compiles r. A route of the same name among was (a copy of
// the listener's routes before a reload; the one taken is removed) passes on
// its counters, and its limiter when r's rate_limit is the same, so that
// a reload neither zeroes /routes nor grants a fresh burst.
func compileRule(r Rule, was *[]*compiledRule) *compiledRule {
	c := &compiledRule{Rule: r, forwarding: r.RequestHeaders.touchesForwarding(),
		requests: new(atomic.Uint64), limited: new(atomic.Uint64)}
	if r.RateLimit != nil {
		c.limiter = upstream.NewLimiter(*r.RateLimit)
	}
	i := slices.IndexFunc(*was, func(o *compiledRule) bool { return o.Name == r.Name })
	if i < 0 {
		return c
	}
	prev := (*was)[i]
	*was = slices.Delete(*was, i, i+1)
	c.requests, c.limited = prev.requests, prev.limited
	if r.RateLimit != nil && prev.RateLimit != nil && *r.RateLimit == *prev.RateLimit {
		c.limiter = prev.limiter
	}
	return c
}

// ListenerHandler returns the handler of the listener named name without
// changing the options of one that exists; one that does not is made with
// opts (made reports that). A reload binds ports with it before the point
// where it may still fail, and gives every listener its new options with
// Listener after; ForgetListener undoes a made one.
func (p *Proxy) ListenerHandler(name string, opts ListenerOptions) (h http.Handler, made bool) {
	if v, ok := p.listeners.Load(name); ok {
		return v.(*listenerHandler), false
	}
	return p.Listener(name, opts), true
}

// ForgetListener drops the listener named name (its routes leave
// RouteStats); a handler already serving goes on with its last options.
func (p *Proxy) ForgetListener(name string) { p.listeners.Delete(name) }

// RouteStats returns every listener's routes with their counters (since
// the route of that name first appeared on the listener), by listener
// then in order.
func (p *Proxy) RouteStats() []RouteStats {
	var out []RouteStats
	p.listeners.Range(func(k, v any) bool {
		h := v.(*listenerHandler)
		for _, c := range h.state.Load().rules {
			out = append(out, RouteStats{Listener: h.name, Name: c.Name, Upstream: c.Upstream, Requests: c.requests.Load(), RateLimited: c.limited.Load()})
		}
		return true
	})
	slices.SortStableFunc(out, func(a, b RouteStats) int { return strings.Compare(a.Listener, b.Listener) })
	return out
}

func (h *listenerHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	closeAfterRefusedConnect(w, r)
	st := h.state.Load()
	host := hostOnly(r.Host)
	var rule *compiledRule
	for _, c := range st.rules {
		if c.matches(r, host) {
			rule = c
			break
		}
	}
	name := host
	switch {
	case rule != nil:
		name = rule.Upstream
	case st.opts.Upstream != "":
		name = st.opts.Upstream
	}
	rt := p.routes.Load()
	route := rt.forRequest(name, r)
	if route == nil {
		p.notFound(w, r, rt, name)
		return
	}
	if rule != nil {
		rule.requests.Add(1)
		if l := rule.limiter; l != nil {
			now := time.Now()
			if ok, wait := l.Allow(node.Mono(now)); !ok {
				rule.limited.Add(1)
				route.up.RecordLocal(http.StatusTooManyRequests, upstream.ReasonRateLimited)
				w.Header().Set("Retry-After", retryAfter(wait))
				writeError(w, http.StatusTooManyRequests, "remora: route "+rule.Name+": rate limit exceeded (rate_limit)")
				p.logLocal(r, now, localAnswer{status: http.StatusTooManyRequests, reason: upstream.ReasonRateLimited, upstream: route.up.Name(), rule: rule})
				return
			}
		}
	}
	if r.Method == http.MethodConnect {
		// A tunnel to the route's upstream, whoever chose it: a CONNECT
		// sent on as an HTTP request would leave the client's tunnelled
		// bytes to be read as requests. Path and header rules have
		// nothing to act on.
		p.tunnel(w, r, route, rule, st.opts.RequestID)
		return
	}
	if rule != nil {
		rule.rewrite(r)
		rule.RequestHeaders.apply(r.Header)
	}
	p.forward(w, r, route, request{listener: &st.opts, rule: rule})
}

// request is what a listener decided about a request, for forward.
type request struct {
	listener *ListenerOptions // nil: the proxy's own defaults
	rule     *compiledRule    // the route that took it, or nil
}

// newRequestID writes a fresh request ID (a random UUID, version 4) to
// dst.
func newRequestID(dst *[36]byte) {
	const hex = "0123456789abcdef"
	a, b := rand.Uint64(), rand.Uint64()
	var raw [16]byte
	for i := range 8 {
		raw[i], raw[8+i] = byte(a>>(8*i)), byte(b>>(8*i))
	}
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	raw[8] = raw[8]&0x3f | 0x80 // RFC 9562 variant
	j := 0
	for i, c := range raw {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}
