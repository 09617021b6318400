package proxy

import (
	"net/http"
	"slices"
	"strings"

	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/client"
)

// Route is an upstream, how its nodes are spoken to, and the header rules
// of every request to it.
type Route struct {
	Upstream *upstream.Upstream
	Client   client.Options
	// RequestHeaders and ResponseHeaders change headers (after a listener
	// route's own rules).
	RequestHeaders, ResponseHeaders *HeaderRules
	// Mirror copies a share of the upstream's requests elsewhere
	// (validated); nil for none.
	Mirror *upstream.Mirror
	// TCP: the upstream relays raw TCP connections (protocol: tcp). No
	// HTTP request is sent to it; through a listener only a CONNECT
	// tunnel reaches it.
	TCP bool
}

// route is a Route with its transport. It is immutable once published.
type route struct {
	up                  *upstream.Upstream
	tr                  *client.Transport
	opts                client.Options
	reqRules, respRules *HeaderRules
	mirror              *mirror
	tcp                 bool // Route.TCP
	h2                  bool // HTTP/2 over TLS to the nodes (protocol: h2)
	forwarding          bool // reqRules.touchesForwarding
}

// routing is the table the request path reads: one atomic load, one map
// lookup. It is immutable once published.
type routing struct {
	table  *upstream.Table
	byName map[string]*route
}

// lookup returns the route of the upstream named name (case-insensitively,
// as upstream.Table.Lookup), or nil. It does not allocate when name is
// already lower case.
func (rt *routing) lookup(name string) *route {
	if r, ok := rt.byName[name]; ok {
		return r
	}
	return rt.byName[strings.ToLower(name)]
}

// forRequest is lookup for r: nil also for a tcp upstream, unless r is a
// CONNECT (its tunnel relays raw bytes, as the upstream's own port does).
func (rt *routing) forRequest(name string, r *http.Request) *route {
	route := rt.lookup(name)
	if route != nil && route.tcp && r.Method != http.MethodConnect {
		return nil
	}
	return route
}

// SetRoutes replaces the routing table with routes (upstream names must be
// unique). The proxy owns one transport per upstream: a route whose
// upstream name and client options are unchanged keeps its transport and
// its pooled connections; the transports of routes gone or changed are
// retired (client.Transport.Retire): their idle connections close, and so
// do those in use once done, however many requests of the old routes
// still come. SetRoutes calls
// must not overlap (the configuration's one writer makes them).
func (p *Proxy) SetRoutes(routes ...Route) {
	old := p.routes.Load()
	next := &routing{byName: make(map[string]*route, len(routes))}
	ups := make([]*upstream.Upstream, len(routes))
	for i, r := range routes {
		ups[i] = r.Upstream
		name := r.Upstream.Name()
		prev := old.byName[name]
		var wasMirror *mirror
		if prev != nil {
			wasMirror = prev.mirror
		}
		rt := &route{up: r.Upstream, opts: r.Client, reqRules: r.RequestHeaders, respRules: r.ResponseHeaders, mirror: newMirror(r.Mirror, wasMirror), tcp: r.TCP,
			h2:         r.Client.TLS != nil && slices.Contains(r.Client.TLS.NextProtos, "h2"),
			forwarding: r.RequestHeaders.touchesForwarding()}
		if prev != nil && prev.opts.Same(r.Client) {
			rt.tr = prev.tr
		} else {
			rt.tr = client.New(r.Client)
		}
		next.byName[name] = rt
	}
	next.table = upstream.NewTable(ups...)
	p.routes.Store(next)
	for name, prev := range old.byName {
		if r := next.byName[name]; r == nil || r.tr != prev.tr {
			prev.tr.Retire()
		}
	}
}

// SetTable replaces the routing table with t's upstreams, each spoken to
// with the proxy's default client options (Options.Client).
func (p *Proxy) SetTable(t *upstream.Table) {
	routes := make([]Route, 0, len(t.Names()))
	for _, u := range t.All() {
		routes = append(routes, Route{Upstream: u, Client: p.defaults})
	}
	p.SetRoutes(routes...)
}

// Table returns the current routing table.
func (p *Proxy) Table() *upstream.Table { return p.routes.Load().table }

// Close releases the idle connections of every transport.
func (p *Proxy) Close() {
	for _, r := range p.routes.Load().byName {
		r.tr.CloseIdleConnections()
	}
}
