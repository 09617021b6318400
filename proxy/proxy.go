// Package proxy forwards requests from the local application to the
// nodes of an upstream: it routes a request (by Host, or a dedicated
// listener's upstream), runs it through the upstream's attempt path
// (upstream.Call: pool, pick, retries, admission, outcomes) and forwards it
// over the upstream's transport, which it owns (one per upstream, see
// SetRoutes).
//
// A plain HTTP/1.1 request that package server read, for a plain HTTP/1.1
// upstream, takes the direct exchange (direct.go): its head is encoded once
// (package h1), written to a pooled connection (package client), and a
// simple answer is passed on from the read buffer through the server's
// RawWriter. Everything else goes through httputil.ReverseProxy, extended
// only through its hooks: Rewrite keeps the client's Host, a RoundTripper
// runs the attempts, ErrorHandler classifies failures. CONNECT tunnels and
// TCP upstreams (package tcp) take the same attempt path.
//
// The request path holds no lock: it loads the routing table and the
// upstream's snapshot with one atomic load each.
package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/net/http/httpguts"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/stdlog"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/client"
	"github.com/remora-mesh/remora/proxy/h1"
	"github.com/remora-mesh/remora/proxy/server"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// StatusClientClosedRequest is logged when the client went away before the
// response (nginx's and Caddy's 499). It is never charged to a node.
const StatusClientClosedRequest = 499

// Options tune the proxy. The zero value is usable.
type Options struct {
	// Client are the client options of the routes SetTable makes (SetRoutes
	// takes each route's own).
	Client client.Options
	// Log is the logger; one that discards when nil.
	Log *logrus.Entry
	// AccessLog, when set, gets one entry per proxied request.
	AccessLog *logrus.Entry
	// AccessLogSample is the share of requests logged, 0..1; 0 means 1.
	AccessLogSample float64
}

// Proxy is the HTTP forwarding engine. It is safe for concurrent use; the
// routing table is swapped atomically with SetRoutes.
type Proxy struct {
	routes    atomic.Pointer[routing]
	listeners sync.Map // name → *listenerHandler, for RouteStats
	defaults  client.Options
	rp        *httputil.ReverseProxy
	log       *logrus.Entry
	access    *logrus.Entry
	sample    float64
}

// New returns a proxy with an empty routing table.
func New(opts Options) *Proxy {
	if opts.Log == nil {
		opts.Log = discovery.Env{}.Logger()
	}
	p := &Proxy{log: opts.Log, defaults: opts.Client, access: opts.AccessLog, sample: opts.AccessLogSample}
	if p.sample <= 0 || p.sample > 1 {
		p.sample = 1
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:        rewrite,
		ModifyResponse: modifyResponse,
		Transport:      attemptsTransport{},
		ErrorHandler:   func(w http.ResponseWriter, r *http.Request, err error) { p.fail(w, r, exchangeOf(r.Context()), err) },
		ErrorLog:       stdlog.New(opts.Log, logrus.WarnLevel),
		BufferPool:     bufferPool{},
	}
	p.routes.Store(&routing{table: upstream.NewTable()})
	return p
}

// ServeHTTP routes by the Host header: its host part (port ignored) names
// the upstream. An unknown host gets 404 and nothing is dialed, so Remora is
// never an open proxy.
//
// Absolute-form requests (GET http://user-service/path) route the same way,
// so an application can set HTTP_PROXY to Remora's address. CONNECT opens a
// TCP tunnel to a node, and only for a known upstream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	closeAfterRefusedConnect(w, r)
	rt := p.routes.Load()
	host := hostOnly(r.Host)
	route := rt.forRequest(host, r)
	if route == nil {
		p.notFound(w, r, rt, host)
		return
	}
	if r.Method == http.MethodConnect {
		p.tunnel(w, r, route, nil, false)
		return
	}
	p.forward(w, r, route, request{})
}

// tunnel answers CONNECT to a known upstream with a TCP tunnel to one of
// its nodes, through the upstream's attempt path (canary split, circuit
// breakers, connect retries) and within its timeouts (connect; idle and
// total for the tunnel's life). It is counted and logged like a request,
// under rule (the listener route that chose it, or nil), with the bytes
// relayed each way.
//
// A tunnel relays the client's bytes as they are, so no header rule, no
// rewrite and no TLS of Remora's can act on what passes through it: a
// CONNECT to an upstream (or through a route) that has some is refused
// (403, naming them) rather than let what goes through the tunnel skip
// them.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, route *route, rule *compiledRule, requestID bool) {
	if r.URL.Host == "" || r.URL.Path != "" {
		// RFC 9110 9.3.6: a CONNECT names host and port (authority form),
		// never a path, which net/http's server takes too ("CONNECT /x").
		start := time.Now()
		writeError(w, http.StatusBadRequest, fmt.Sprintf("remora: CONNECT %q: the target must be host:port", r.RequestURI))
		p.logLocal(r, start, localAnswer{status: http.StatusBadRequest, upstream: route.up.Name(), rule: rule})
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		start := time.Now()
		writeError(w, http.StatusNotImplemented, "remora: CONNECT needs HTTP/1.1")
		p.logLocal(r, start, localAnswer{status: http.StatusNotImplemented, upstream: route.up.Name(), rule: rule})
		return
	}
	if rules := tunnelSkips(route, rule); rules != "" {
		start := time.Now()
		writeError(w, http.StatusForbidden, fmt.Sprintf("remora: CONNECT to upstream %q refused: a tunnel relays bytes as they are, and %s would not apply inside it",
			route.up.Name(), rules))
		p.logLocal(r, start, localAnswer{status: http.StatusForbidden, upstream: route.up.Name(), rule: rule})
		return
	}
	st := &exchange{client: r.Context(), rule: rule}
	if requestID && r.Header["X-Request-Id"] == nil {
		// Logged only: a tunnel's bytes carry no header of Remora's.
		newRequestID(&st.reqID)
		st.newID = true
	}
	pol := route.up.Policy()
	err := st.call.Begin(r.Context(), route.up, balancer.Info{Request: r})
	var backend net.Conn
	if err == nil {
		backend, err = tcp.Dial(r.Context(), &st.call, cmp.Or(pol.Timeouts.Connect, route.opts.ConnectTimeout))
	}
	if err != nil {
		p.fail(w, r, st, err)
		p.finish(r, st)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		backend.Close()
		p.finish(r, st)
		return
	}
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	var early int64
	if k := buf.Reader.Buffered(); k > 0 {
		pending, _ := buf.Reader.Peek(k)
		n, _ := backend.Write(pending)
		early = int64(n)
	}
	in, out := tcp.Relay(conn, backend, pol.Timeouts.Idle, pol.Timeouts.Total)
	st.tunnelIn, st.out = early+in, relayed(out)
	p.finish(r, st)
}

// tunnelSkips names the header rules and rewrites of route and rule (the
// listener route that chose the tunnel, or nil) that a tunnel would skip,
// or returns "" when there are none.
func tunnelSkips(route *route, rule *compiledRule) string {
	var names []string
	if route.opts.TLS != nil {
		names = append(names, "the upstream's tls (Remora's TLS to its nodes; define an upstream without tls for the client's own TLS to pass through)")
	}
	if route.reqRules != nil {
		names = append(names, "the upstream's request_headers")
	}
	if route.respRules != nil {
		names = append(names, "the upstream's response_headers")
	}
	if route.mirror != nil {
		names = append(names, "the upstream's mirror")
	}
	if rule != nil {
		if rule.RequestHeaders != nil {
			names = append(names, "route "+rule.Name+"'s request_headers")
		}
		if rule.ResponseHeaders != nil {
			names = append(names, "route "+rule.Name+"'s response_headers")
		}
		if rule.RewritePath != "" || rule.StripPrefix {
			names = append(names, "route "+rule.Name+"'s rewrite")
		}
	}
	return strings.Join(names, ", ")
}

// countingBody counts the bytes read from a request body, for the access
// log. Atomic: a transport may still read the body on a goroutine of its
// own when the exchange is logged.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// relayed is the byte count a tunnel sent the client, for the access log.
type relayed int64

func (n relayed) BytesWritten() int64 { return int64(n) }

// ForUpstream returns a handler that sends every request to the named
// upstream whatever its Host header (a dedicated listener). The name is
// resolved against the current table on each request.
func (p *Proxy) ForUpstream(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		closeAfterRefusedConnect(w, r)
		rt := p.routes.Load()
		route := rt.forRequest(name, r)
		if route == nil {
			p.notFound(w, r, rt, name)
			return
		}
		if r.Method == http.MethodConnect {
			p.tunnel(w, r, route, nil, false)
			return
		}
		p.forward(w, r, route, request{})
	})
}

// closeAfterRefusedConnect makes any answer to an HTTP/1 CONNECT but the
// tunnel's own end the connection. What follows a CONNECT's head is the
// client's tunnel (it may send it before the answer, and a body it
// announces is tunnel bytes too): when the CONNECT is refused (404, 403,
// 429, 502, 503...), net/http's server would read those bytes as the next
// requests and send them on, bytes meant for another host. Over HTTP/2
// the tunnel is the stream, which the answer ends: nothing to do (and
// Connection: close would shut the whole connection down).
func closeAfterRefusedConnect(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
}

func (p *Proxy) notFound(w http.ResponseWriter, r *http.Request, rt *routing, host string) {
	start := time.Now()
	if route := rt.lookup(host); route != nil && route.tcp {
		writeError(w, http.StatusNotFound, fmt.Sprintf("remora: upstream %q relays raw TCP connections (protocol: tcp) on its own listen port; it takes no HTTP request (Host %q)",
			host, r.Host))
	} else {
		writeError(w, http.StatusNotFound, fmt.Sprintf("remora: no upstream named %q (Host %q); known upstreams: %s",
			host, r.Host, strings.Join(rt.table.Names(), ", ")))
	}
	p.logLocal(r, start, localAnswer{status: http.StatusNotFound, reason: upstream.ReasonNoRoute})
}

// localAnswer is an answer Remora gave before any call to an upstream:
// its status, why (ReasonNone: no reason flag), and what it was for.
type localAnswer struct {
	status   int
	reason   upstream.Reason
	upstream string        // "" for none
	rule     *compiledRule // the listener route that took the request, or nil
}

// logLocal writes a's access log line (if the access log is on and the
// line is sampled), for the request r that arrived at start.
func (p *Proxy) logLocal(r *http.Request, start time.Time, a localAnswer) {
	if p.access == nil || p.sample < 1 && rand.Float64() >= p.sample {
		return
	}
	f := requestFields(r)
	f["status"] = a.status
	f["duration_ms"] = float64(time.Since(start).Microseconds()) / 1000
	if a.reason != upstream.ReasonNone {
		f["reason"], f["flag"] = a.reason.String(), a.reason.Flag()
	}
	if a.upstream != "" {
		f["upstream"] = a.upstream
	}
	if a.rule != nil {
		f["route"] = a.rule.Name
	}
	if id := r.Header.Get("X-Request-Id"); id != "" {
		f["request_id"] = id // the client's: a local answer gets none of its own
	}
	p.access.WithFields(f).Info("request")
}

// requestFields are the access log fields that describe the request.
func requestFields(r *http.Request) logrus.Fields {
	f := logrus.Fields{"method": r.Method, "path": r.URL.Path, "host": r.Host, "client": r.RemoteAddr}
	if r.ContentLength >= 0 {
		f["bytes_in"] = r.ContentLength
	}
	return f
}

// exchanges recycles exchanges: nothing holds one after forward returns.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// bytesWritten is what a ResponseWriter that counts its body bytes has:
// the direct server's does (server.RawWriter), others are wrapped in a
// countingWriter when the access log is on.
type bytesWritten interface{ BytesWritten() int64 }

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) BytesWritten() int64 { return c.n }

// Unwrap lets http.ResponseController reach the writer's own capabilities
// (Flush, Hijack for upgrades), as ReverseProxy does.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// forward proxies r, as its listener decided (req), to a node of route's
// upstream.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, route *route, req request) {
	if proto := upgradeType(r.Header); proto != "" {
		// HTTP/2 has no Upgrade: the transport would refuse the request,
		// and that refusal must not count against the nodes. Over TLS,
		// net/http sends a WebSocket on a connection of its own in
		// HTTP/1.1; over h2c it cannot.
		if route.opts.H2C || route.h2 && !strings.EqualFold(proto, "websocket") {
			start := time.Now()
			protocol := "h2"
			if route.opts.H2C {
				protocol = "h2c"
			}
			writeError(w, http.StatusNotImplemented, fmt.Sprintf("remora: upstream %q speaks HTTP/2 to its nodes (protocol: %s), which has no Upgrade (%s)",
				route.up.Name(), protocol, proto))
			p.logLocal(r, start, localAnswer{status: http.StatusNotImplemented, upstream: route.up.Name(), rule: req.rule})
			return
		}
	}
	var relay *relayCount
	if upgradeType(r.Header) != "" {
		relay = &relayCount{idle: route.up.Policy().Timeouts.Idle}
		w = upgradeWriter{ResponseWriter: w, relay: relay}
	}
	var in *countingBody
	if p.access != nil {
		if _, ok := w.(bytesWritten); !ok {
			w = &countingWriter{ResponseWriter: w}
		}
		if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
			in = &countingBody{ReadCloser: r.Body} // a body of unknown length: count what comes
			r.Body = in
		}
	}
	st := exchanges.Get().(*exchange)
	defer exchanges.Put(st)
	*st = exchange{client: r.Context(), tr: route.tr, rule: req.rule, respRules: route.respRules, relay: relay, in: in}
	if route.forwarding || req.rule != nil && req.rule.forwarding {
		st.reqRules = route.reqRules
		st.forwardingRules = true
	}
	st.out, _ = w.(bytesWritten)
	var mirrorHeader http.Header // r's header for a copy, before the upstream's rules
	if route.mirror != nil && route.mirror.sampled() {
		mirrorHeader = r.Header.Clone()
	}
	// The upstream's rules first: one that sets X-Request-Id gives the
	// request its ID, and the listener then gives it none.
	route.reqRules.apply(r.Header)
	if l := req.listener; l != nil {
		st.forwarded = l.Forwarded
		if l.RequestID && r.Header["X-Request-Id"] == nil {
			newRequestID(&st.reqID)
			st.newID = true
		}
	}
	if req.rule != nil && req.rule.ResponseHeaders != nil {
		st.ruleResp = req.rule.ResponseHeaders
	}
	up := route.up
	if err := st.call.Begin(r.Context(), up, balancer.Info{Request: r}); err != nil {
		p.fail(w, r, st, err)
		p.finish(r, st)
		return
	}
	if mirrorHeader != nil {
		p.startMirror(r, mirrorHeader, route, st)
	}
	ctx := r.Context()
	if total := up.Policy().Timeouts.Total; total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, total)
		defer cancel()
	}
	if relay != nil && relay.idle > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		relay.endNode = cancel // ReverseProxy closes the node's side when ctx ends
		defer relay.stopIdle()
	}
	var aborted bool
	if raw, ok := w.(server.RawWriter); ok && direct(r, route, st) {
		aborted = p.forwardDirect(ctx, w, raw, r, st)
	} else {
		if st.newID {
			r.Header["X-Request-Id"] = []string{string(st.reqID[:])}
		}
		aborted = p.reverse(ctx, w, r, st)
	}
	switch {
	case st.client.Err() != nil: // the client went away: nobody else is to blame
	case st.grpc != nil:
		if code, ok := grpcStatus(st.grpc); ok {
			st.call.SetGRPC(code) // the verdict came with the trailers
		} else {
			st.call.SetGRPCBroken(aborted) // reset by the node, or ended without trailers
		}
	case aborted && st.nodeBroke:
		st.call.SetBrokenOff()
	}
	p.finish(r, st)
	if aborted {
		panic(http.ErrAbortHandler) // the server drops the connection
	}
}

// upgradeType is the protocol a request or answer with header h upgrades
// to, or "" when it is none: an Upgrade that the Connection header lists
// (ReverseProxy's rule; any other Upgrade header is hop-by-hop, dropped).
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// upgradeWriter is the ResponseWriter of an upgrade. ReverseProxy relays
// an upgraded connection from the net.Conn that Hijack returns and drops
// what the server had read ahead into its buffer: the bytes a client sent
// right after its request (RFC 9110 section 7.8 lets it use the new
// protocol once the request is sent) would never reach the node. Its
// Hijack returns a connection that reads that buffer first, and counts
// what is relayed each way into relay, for the access log.
type upgradeWriter struct {
	http.ResponseWriter
	relay *relayCount
}

// Unwrap lets http.ResponseController reach the writer's other
// capabilities.
func (u upgradeWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }

func (u upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	c := &upgradedConn{Conn: conn, relay: u.relay}
	if brw.Reader.Buffered() > 0 {
		c.ahead = brw.Reader
	}
	u.relay.startIdle(conn)
	return c, brw, nil
}

// relayCount is what an upgraded connection relayed: in from the client,
// out to it. ReverseProxy may return while one of its two copies still
// ends: the counts are atomic, and not part of the pooled exchange.
//
// With an idle bound (the upstream's timeouts.idle, as for a CONNECT
// tunnel or a tcp connection), the relay ends once no byte has moved
// either way for that long: a timer, armed when the connection is
// hijacked, closes the client's connection and ends the outgoing
// request's context (endNode), on which ReverseProxy closes the node's.
// Every byte either way passes through the client's connection
// (upgradedConn), which notes when it moved (last).
type relayCount struct {
	in, out atomic.Int64
	idle    time.Duration
	endNode context.CancelFunc
	last    atomic.Int64 // node.MonoNow
	client  net.Conn
	timer   *time.Timer
	mu      sync.Mutex // guards timer and stopped against the timer's own goroutine
	stopped bool
}

// moved notes that bytes moved on the relay.
func (r *relayCount) moved() {
	if r.idle > 0 {
		r.last.Store(node.MonoNow())
	}
}

// startIdle arms the idle bound once client is hijacked.
func (r *relayCount) startIdle(client net.Conn) {
	if r.idle <= 0 {
		return
	}
	r.moved()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.stopped {
		r.client = client
		r.timer = time.AfterFunc(r.idle, r.checkIdle)
	}
}

// checkIdle ends the relay if it has been quiet for idle, or looks again
// when it would have been.
func (r *relayCount) checkIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	if quiet := time.Duration(node.MonoNow() - r.last.Load()); quiet < r.idle {
		r.timer.Reset(r.idle - quiet)
		return
	}
	r.stopped = true
	r.client.Close()
	r.endNode()
}

// stopIdle disarms the idle bound: the relay has ended.
func (r *relayCount) stopIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
}

// upgradedConn is a hijacked connection that is read first through the
// buffer holding what the server read ahead from it (ahead, nil once
// empty), then directly: net/http's reader under that buffer would end the
// request's context when the client ends the connection, and the upgrade
// would be counted as the client's going away.
type upgradedConn struct {
	net.Conn
	ahead *bufio.Reader
	relay *relayCount
}

func (c *upgradedConn) Read(p []byte) (n int, err error) {
	if c.ahead != nil && c.ahead.Buffered() > 0 {
		n, err = c.ahead.Read(p)
	} else {
		c.ahead = nil
		n, err = c.Conn.Read(p)
	}
	if n > 0 {
		c.relay.in.Add(int64(n))
		c.relay.moved()
	}
	return n, err
}

// Write writes p to the client. Under an idle bound it writes in spans of
// at most idle/4, so that a client that reads slowly but reads is seen
// moving; one that reads nothing is left to the bound.
func (c *upgradedConn) Write(p []byte) (written int, err error) {
	for {
		if c.relay.idle > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.relay.idle / 4))
		}
		n, err := c.Conn.Write(p[written:])
		if n > 0 {
			written += n
			c.relay.out.Add(int64(n))
			c.relay.moved()
		}
		var ne net.Error
		if err != nil && c.relay.idle > 0 && written < len(p) && errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		return written, err
	}
}

// CloseWrite half-closes the connection, as ReverseProxy does when the
// node ends its side of an upgraded connection.
func (c *upgradedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported // ReverseProxy then ends the relay, as without CloseWrite
}

// badSwitch returns the error of an answer that switches to a protocol
// that its request (with header req) did not ask for — another, or any
// for a request that asked for none — after closing its connection
// (ReverseProxy would answer 502 and leave the node's connection open);
// nil for any other answer. The node broke the protocol: it is its
// failure.
func badSwitch(req http.Header, resp *http.Response) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	want, got := upgradeType(req), upgradeType(resp.Header)
	if want != "" && strings.EqualFold(want, got) {
		return nil
	}
	resp.Body.Close()
	return fmt.Errorf("the node switched protocols to %q when %q was asked for", got, want)
}

// finish ends r's call and writes its access log entry.
func (p *Proxy) finish(r *http.Request, st *exchange) {
	gone := st.client.Err() != nil
	took := st.call.End(gone)
	status := st.call.Status()
	switch {
	case gone:
		status = StatusClientClosedRequest
	case status == 0:
		status = st.errStatus
	}
	if p.access != nil && (p.sample >= 1 || rand.Float64() < p.sample) {
		p.logAccess(r, st, status, took, gone)
	}
}

// reverse forwards r with ReverseProxy, under ctx. It reports whether the
// answer broke off after its head went out (ReverseProxy's
// http.ErrAbortHandler, re-raised by forward once the exchange is counted).
func (p *Proxy) reverse(ctx context.Context, w http.ResponseWriter, r *http.Request, st *exchange) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	st.head.ResponseWriter = w
	p.rp.ServeHTTP(&st.head, r.WithContext(context.WithValue(ctx, exchangeKey{}, st)))
	return false
}

// headFlusher is the ResponseWriter ReverseProxy writes an exchange's
// answer to. For an answer of unknown length, ReverseProxy arms a flush
// of the head at once, on a timer goroutine of its own, and copies the
// body: on net/http's Transport that flush nearly always comes before an
// empty body's end (which takes a hand-over to the connection's read
// loop), and the answer goes out chunked; and it nearly always comes
// after a body that fails at once, whose answer then ends with nothing
// sent, which lets a client retry it. Remora's node connection gives both
// at once, and the timer's goroutine wins or loses as the machine's load
// has it. headFlusher makes the reference's usual outcome certain:
//
//   - the node body's clean end flushes the head first (see nodeBody);
//   - a flush that comes before the body's first read has returned (the
//     timer's) waits for it, up to firstReadWait, and does nothing if
//     that read failed with nothing read: a body that is slower than
//     that gets its head then, as from the timer.
//
// Every flush goes through mu, so the body's flush, on ReverseProxy's
// goroutine, never runs at once with the timer's.
type headFlusher struct {
	http.ResponseWriter
	mu sync.Mutex
	// atEnd: the final answer is of unknown length and its end has not
	// been read yet; first is closed when its body's first read returns,
	// and firstFailed says that read failed. Set by watchBody, before
	// ReverseProxy arms its timer; nil first: no wait.
	atEnd       bool
	first       chan struct{}
	firstFailed bool
}

// firstReadWait bounds how long a flush waits for an answer's first body
// read (see headFlusher).
const firstReadWait = time.Millisecond

// FlushError flushes what was written, the head first; http.ResponseController
// (and so ReverseProxy) calls it.
func (h *headFlusher) FlushError() error {
	if first := h.first; first != nil && waitClosed(first, firstReadWait) && h.firstFailed {
		return nil // nothing goes out: ReverseProxy aborts the answer
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return http.NewResponseController(h.ResponseWriter).Flush()
}

// read records the outcome of a read of the node body (n bytes, err):
// whether the first failed with nothing read, and its clean end, which
// flushes the head.
func (h *headFlusher) read(n int, err error) {
	if h.first != nil && !h.firstDone() {
		h.firstFailed = n == 0 && err != nil && err != io.EOF
		close(h.first)
	}
	if err == io.EOF && h.atEnd {
		h.atEnd = false
		_ = h.FlushError()
	}
}

// firstDone reports whether the first read has returned; only the body's
// reader calls it.
func (h *headFlusher) firstDone() bool { return waitClosed(h.first, 0) }

// waitClosed waits up to d for ch to be closed, and reports whether it is.
func waitClosed(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// Unwrap lets http.ResponseController reach the writer's own capabilities
// (Hijack for upgrades).
func (h *headFlusher) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// exchange is the per-request state shared by the hooks. It is used by the
// request's own goroutine only (RoundTrip runs on it).
type exchange struct {
	call   upstream.Call
	client context.Context   // the client's context: its end means "client gone"
	tr     *client.Transport // the upstream's
	body   requestBody
	// What the listener decided: the route that took the request (nil
	// for none), the forwarding headers, a request ID it gave the request
	// (newID), and the answer's header rules (the route's, the
	// upstream's).
	rule      *compiledRule
	forwarded Forwarded
	reqID     [36]byte
	newID     bool
	ruleResp  *HeaderRules
	respRules *HeaderRules
	// out counts what went to the client, for the access log.
	out bytesWritten
	// errStatus is the status fail answered with.
	errStatus int
	// tunnelIn is what a CONNECT tunnel relayed from the client (its
	// request has no body to count).
	tunnelIn int64
	// forwardingRules: the header rules (the listener route's, rule, and
	// the upstream's, reqRules) change a forwarding header, which they
	// set again once the forwarded mode has had its say (see
	// reapplyForwarding).
	forwardingRules bool
	reqRules        *HeaderRules
	// relay counts what an upgraded connection relayed (nil: no
	// upgrade); in counts a request body of unknown length (nil: none, or
	// no access log).
	relay *relayCount
	in    *countingBody
	// grpc is a gRPC response whose outcome is judged by its grpc-status
	// once the body (and trailers) went through.
	grpc *http.Response
	// prefetched is an answer the direct path read and hands to
	// ReverseProxy to write (see forwardDirect).
	prefetched *http.Response
	// nodeBroke: the node broke the answer off after its head (a read of
	// its body failed), as opposed to the client.
	nodeBroke bool
	// head is what ReverseProxy writes to (see reverse).
	head headFlusher
}

// isGRPC reports whether resp is a gRPC response.
func isGRPC(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
}

// grpcStatus is a finished gRPC response's grpc-status: its trailer, or
// its header for a trailers-only response.
func grpcStatus(resp *http.Response) (int, bool) {
	v := resp.Trailer.Get("Grpc-Status")
	if v == "" {
		v = resp.Header.Get("Grpc-Status")
	}
	code, err := strconv.Atoi(v)
	return code, err == nil && code >= 0
}

// grpcAttempt is the attempt a gRPC answer (status 200) comes to. Its
// verdict is its grpc-status: in its header for a trailers-only answer,
// else in its trailers, which come after its messages. When the verdict is
// known before anything went to the client — a trailers-only answer, or
// one whose body ends at once (headers, then trailers: a failed call that
// had set header metadata) — it is judged at once, and retried on
// retry.grpc_statuses; otherwise it is kept and judged when its trailers
// have passed (see forward). To tell, the body's first read is made ahead,
// waiting at most grpcPeekWait, so a stream whose first message comes late
// is not held.
func grpcAttempt(st *exchange, resp *http.Response) upstream.Attempt {
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		if code, err := strconv.Atoi(v[0]); err == nil && code >= 0 {
			return upstream.Attempt{Status: resp.StatusCode, GRPC: code + 1}
		}
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		pb := peekBody(resp.Body)
		resp.Body = pb
		if pb.ended(grpcPeekWait) {
			if code, ok := grpcStatus(resp); ok {
				return upstream.Attempt{Status: resp.StatusCode, GRPC: code + 1}
			}
		}
	}
	st.grpc = resp
	return upstream.Attempt{Status: resp.StatusCode, Deferred: true}
}

// grpcPeekWait bounds the wait for a gRPC answer's first read (see
// grpcAttempt).
const grpcPeekWait = 20 * time.Millisecond

// peekedBody is a body whose first read is made ahead, on a goroutine of
// its own, and served first.
type peekedBody struct {
	rc   io.ReadCloser
	done chan struct{} // closed when the first read returned
	buf  [512]byte
	n    int
	err  error
	off  int
}

func peekBody(rc io.ReadCloser) *peekedBody {
	b := &peekedBody{rc: rc, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.n, b.err = rc.Read(b.buf[:])
	}()
	return b
}

// ended reports whether the first read found the end (and nothing else)
// within wait.
func (b *peekedBody) ended(wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-b.done:
		return b.n == 0 && b.err == io.EOF
	case <-t.C:
		return false
	}
}

func (b *peekedBody) Read(p []byte) (int, error) {
	<-b.done
	if b.off < b.n {
		k := copy(p, b.buf[b.off:b.n])
		b.off += k
		return k, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rc.Read(p)
}

// Close closes the body, which ends a first read still waiting.
func (b *peekedBody) Close() error { return b.rc.Close() }

// logAccess writes the access log entry of a finished request.
func (p *Proxy) logAccess(r *http.Request, st *exchange, status int, took time.Duration, gone bool) {
	e := tcp.LogAccess(p.access, &st.call, status, took, gone).WithFields(requestFields(r))
	switch {
	case r.Method == http.MethodConnect:
		e = e.WithField("bytes_in", st.tunnelIn)
	case st.relay != nil && status == http.StatusSwitchingProtocols:
		e = e.WithField("bytes_in", st.relay.in.Load())
	case st.in != nil:
		e = e.WithField("bytes_in", st.in.n.Load())
	}
	switch {
	case st.relay != nil && status == http.StatusSwitchingProtocols:
		e = e.WithField("bytes_out", st.relay.out.Load())
	case st.out != nil:
		e = e.WithField("bytes_out", st.out.BytesWritten())
	}
	if st.newID {
		e = e.WithField("request_id", string(st.reqID[:]))
	} else if id := r.Header.Get("X-Request-Id"); id != "" {
		e = e.WithField("request_id", id)
	}
	if st.rule != nil {
		e = e.WithField("route", st.rule.Name)
	}
	if code := st.call.GRPC(); code >= 0 {
		e = e.WithField("grpc_status", upstream.GRPCCodeName(code))
	}
	e.Info("request")
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	st, _ := ctx.Value(exchangeKey{}).(*exchange)
	return st
}

// rewrite keeps the client's Host header (the transport fills in the
// node) and the request's trailers, and does what the listener says with the forwarding headers,
// which ReverseProxy has taken out of pr.Out. A path that does not start
// with '/' (a target in asterisk or authority form: "GET *", a CONNECT
// that is forwarded) gets one, as ProxyRequest.SetURL joins it to a
// node's empty base path: the node gets an origin-form target, as from
// net/http's ReverseProxy.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = pr.In.Host
	// The server fills in the request's trailers when its body ends; the
	// transport sends them once it has sent the body. ProxyRequest's Out
	// has a copy of the map made before: through it the node would get
	// the trailers announced and none of their values.
	pr.Out.Trailer = pr.In.Trailer
	if u := pr.Out.URL; !strings.HasPrefix(u.Path, "/") {
		if u.RawPath != "" {
			u.RawPath = "/" + u.EscapedPath()
		}
		u.Path = "/" + u.Path
	}
	st := exchangeOf(pr.In.Context())
	if st == nil {
		return
	}
	switch st.forwarded {
	case ForwardedKeep:
		for _, k := range forwardingHeaders {
			if vv := pr.In.Header[k]; vv != nil {
				pr.Out.Header[k] = vv
			}
		}
	case ForwardedAppend:
		for _, k := range [...]string{"Forwarded", "X-Forwarded-For"} {
			if vv := pr.In.Header[k]; vv != nil {
				pr.Out.Header[k] = vv
			}
		}
		pr.SetXForwarded() // appends to X-Forwarded-For; sets -Host and -Proto
	}
	st.reapplyForwarding(pr.Out.Header, false)
}

// reapplyForwarding gives the header rules the last word on the
// forwarding headers of h, a request on its way to a node once the
// listener's forwarded mode has set them (as Envoy's
// request_headers_to_add come after its X-Forwarded-For handling): with
// drop, what the rules set or add is all there is; with append, they
// apply again to X-Forwarded-Host and -Proto, which append replaced.
// With keep, h has them as the rules left them. For a mirror's copy only
// the listener route's rules count (copy): the source upstream's are not
// the copy's.
func (st *exchange) reapplyForwarding(h http.Header, copy bool) {
	if !st.forwardingRules {
		return
	}
	keys := forwardingHeaders[:]
	switch st.forwarded {
	case ForwardedKeep:
		return
	case ForwardedAppend:
		keys = keys[2:] // X-Forwarded-Host, X-Forwarded-Proto
	}
	if st.rule != nil {
		st.rule.RequestHeaders.applyTo(h, keys)
	}
	if !copy {
		st.reqRules.applyTo(h, keys)
	}
}

// forwardingHeaders are the headers a listener's Forwarded mode governs
// (reapplyForwarding counts on their order).
var forwardingHeaders = [...]string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// modifyResponse applies the route's and the upstream's response header
// rules to an answer ReverseProxy writes (attemptsTransport applies them
// to its 1xx answers).
func modifyResponse(resp *http.Response) error {
	if st := exchangeOf(resp.Request.Context()); st != nil {
		st.ruleResp.apply(resp.Header)
		st.respRules.apply(resp.Header)
	}
	return nil
}

// attemptsTransport is ReverseProxy's transport: it makes the request's
// body replayable when it can, then sends each attempt of the request's
// upstream.Call through the upstream's transport.
type attemptsTransport struct{}

func (attemptsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := exchangeOf(req.Context())
	if st == nil {
		return nil, errors.New("remora: request without routing state")
	}
	if resp := st.prefetched; resp != nil {
		st.prefetched = nil // the direct path's answer (see forwardDirect)
		return watchBody(st, resp), nil
	}
	if st.ruleResp != nil || st.respRules != nil {
		// ReverseProxy writes each 1xx from its own trace hook; this one
		// runs first, on the same header map.
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
				st.ruleResp.apply(http.Header(h))
				st.respRules.apply(http.Header(h))
				return nil
			},
		}))
	}
	up, base := st.call.Upstream(), st.tr
	body := &st.body
	if err := body.prepare(req, up.Policy().Retry.MaxBodyBytes); err != nil {
		return nil, err
	}
	// A body of unknown length may turn out short enough to record whole
	// (see requestBody): then it is as replayable as a buffered one.
	replayable := req.Body == nil || req.Body == http.NoBody || body.buffered != nil || req.ContentLength < 0 ||
		h1.Replayable(req.Method, req.Header)
	var resp *http.Response
	err := st.call.Attempts(req.Context(), replayable, func(n *node.Node, attempt int) upstream.Attempt {
		if attempt > 1 {
			// The transport may still hold the last attempt's request.
			req = req.Clone(req.Context())
		}
		body.rewind(req)
		req.URL.Scheme, req.URL.Host = base.Scheme(), n.HostPort
		var err error
		resp, err = base.RoundTrip(req)
		spent := body.spent() // a streamed body cannot go again, unless recorded whole
		if err == nil {
			err = badSwitch(req.Header, resp)
		}
		switch {
		case err != nil:
			return upstream.Attempt{Err: err, Spent: spent}
		case isGRPC(resp) && resp.StatusCode == http.StatusOK:
			a := grpcAttempt(st, resp)
			a.Spent = spent
			return a
		}
		return upstream.Attempt{Status: resp.StatusCode, Spent: spent}
	}, func() { dropResponse(resp) })
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		st.call.Established() // its latency is the 101's, not the upgraded connection's life
	}
	return watchBody(st, resp), nil
}

// watchBody has st note when the node breaks resp's body off: a read that
// fails otherwise than at its end. A switch of protocols is left as it is
// (its body is the connection, which ReverseProxy relays itself).
//
// It also tells st.head whether ReverseProxy will stream resp (its length
// is unknown), so that an empty body's end flushes its head first, as from
// net/http (see headFlusher).
func watchBody(st *exchange, resp *http.Response) *http.Response {
	st.head.atEnd = resp.ContentLength < 0 && resp.StatusCode != http.StatusSwitchingProtocols
	st.head.first, st.head.firstFailed = nil, false
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil && resp.Body != http.NoBody {
		if st.head.atEnd {
			st.head.first = make(chan struct{})
		}
		resp.Body = &nodeBody{rc: resp.Body, st: st}
	}
	return resp
}

// nodeBody is a node's answer body that records, in its exchange, a read
// that failed otherwise than at its end.
type nodeBody struct {
	rc io.ReadCloser
	st *exchange
}

func (b *nodeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		b.st.nodeBroke = true
	}
	b.st.head.read(n, err)
	return n, err
}

func (b *nodeBody) Close() error { return b.rc.Close() }

// maxDrain is how much of a retried answer's body is read and dropped to
// keep its connection; a longer one closes it.
const maxDrain = 64 << 10

// dropResponse releases an answer that is retried.
func dropResponse(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
}

// requestBody makes a request body replayable across attempts: a body of
// known length up to the limit is buffered before the first attempt; any
// other is streamed through a guard that records whether the transport
// read from it and, while it fits the limit, what it read — a body of
// unknown length (a gRPC call's, a chunked upload) that ended within the
// limit can then be sent again too.
type requestBody struct {
	buffered []byte      // the whole body, when it fit
	touched  atomic.Bool // a streamed body was read from (the transport may read it on its own goroutine)
	guard    *replayGuard
}

func (b *requestBody) prepare(req *http.Request, limit int64) error {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	if req.ContentLength >= 0 && req.ContentLength <= limit {
		data, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
		if err != nil {
			return err
		}
		if int64(len(data)) <= limit {
			b.buffered = data
			return nil
		}
		// Longer than announced: stream what was read, then the rest.
		req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), req.Body))
	}
	b.guard = &replayGuard{rc: req.Body, touched: &b.touched}
	if req.ContentLength < 0 {
		b.guard.limit = limit // record it: it may turn out short
	}
	req.Body = b.guard
	return nil
}

// spent reports whether the body cannot be sent again: it was streamed,
// read from, and not recorded whole.
func (b *requestBody) spent() bool {
	if b.buffered != nil || !b.touched.Load() {
		return false
	}
	if data, ok := b.guard.recorded(); ok {
		b.buffered = data // the next attempt replays it
		return false
	}
	return true
}

// rewind sets the request body for the next attempt.
func (b *requestBody) rewind(req *http.Request) {
	if b.buffered != nil {
		req.Body = io.NopCloser(bytes.NewReader(b.buffered))
		req.ContentLength = int64(len(b.buffered))
		req.GetBody = b.replay
	}
}

// replay is the request's GetBody: a buffered body can be sent again.
func (b *requestBody) replay() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.buffered)), nil
}

// replayGuard records whether the transport read the request body and,
// up to limit bytes, what it read; it keeps the body open across a failed
// attempt so a retry can send it (the server closes the underlying body
// when the handler returns). The transport may read on its own goroutine
// while the attempt loop asks what was recorded: mu guards the record.
type replayGuard struct {
	rc      io.Reader
	touched *atomic.Bool
	limit   int64 // how much to record; 0: nothing

	mu   sync.Mutex
	rec  []byte
	over bool // more than limit was read
	eof  bool // the body ended
}

func (g *replayGuard) Read(p []byte) (int, error) {
	g.touched.Store(true)
	n, err := g.rc.Read(p)
	if g.limit > 0 {
		g.mu.Lock()
		if !g.over {
			if int64(len(g.rec)+n) > g.limit {
				g.over, g.rec = true, nil
			} else {
				g.rec = append(g.rec, p[:n]...)
			}
		}
		g.eof = g.eof || err == io.EOF
		g.mu.Unlock()
	}
	return n, err
}

// recorded returns the whole body when it ended within the limit.
func (g *replayGuard) recorded() ([]byte, bool) {
	if g == nil || g.limit == 0 {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.eof || g.over {
		return nil, false
	}
	return append([]byte{}, g.rec...), true
}

func (g *replayGuard) Close() error { return nil }

// fail answers a request that got no answer from a node, with the status
// its error calls for; st is the exchange, or nil.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, st *exchange, err error) {
	fields := logrus.Fields{"error": err.Error()}
	if st != nil {
		fields["upstream"] = st.call.Upstream().Name()
	}
	status := http.StatusBadGateway
	msg := ""
	switch {
	case st != nil && st.client.Err() != nil || st == nil && r.Context().Err() != nil:
		// Logged and counted as 499; on the wire, which only a client
		// that half-closed still reads, 502 with no body, as from
		// ReverseProxy (499 is no status to send).
		fields["status"] = StatusClientClosedRequest
		p.log.WithFields(fields).Debug("client closed the request")
		w.WriteHeader(http.StatusBadGateway)
		return
	case errors.Is(err, upstream.ErrNotSynced):
		status = http.StatusServiceUnavailable
		msg = fmt.Sprintf("remora: upstream %q has not received its nodes from the registry yet", fields["upstream"])
	case errors.Is(err, upstream.ErrNoNode) && st != nil:
		status = http.StatusServiceUnavailable
		msg = fmt.Sprintf("remora: upstream %q has no available node (%d known)", fields["upstream"], len(st.call.Snapshot().Nodes))
	case errors.Is(err, upstream.ErrNoNode), errors.Is(err, upstream.ErrCanaryEmpty):
		status = http.StatusServiceUnavailable
	case errors.Is(err, upstream.ErrBreakerOpen):
		status = http.StatusServiceUnavailable
		w.Header().Set("X-Remora-Overloaded", "upstream max_requests")
	case errors.Is(err, upstream.ErrOverloaded):
		status = http.StatusServiceUnavailable
		w.Header().Set("X-Remora-Overloaded", "node max_requests_per_node")
	case errors.Is(err, upstream.ErrRateLimited):
		status = http.StatusTooManyRequests
		if st != nil {
			w.Header().Set("Retry-After", retryAfter(st.call.RetryAfter()))
		}
	case errors.Is(err, upstream.ErrLocalResources):
		status = http.StatusServiceUnavailable // Remora's own shortage, no node's failure
	case isTimeout(err):
		status = http.StatusGatewayTimeout
	}
	fields["status"] = status
	if st != nil {
		st.errStatus = status
	}
	p.log.WithFields(fields).Debug("upstream request failed") // the access log has it
	if msg == "" {
		msg = fmt.Sprintf("remora: upstream %v: %v", fields["upstream"], err)
	}
	writeError(w, status, msg)
}

// retryAfter is a Retry-After value for a wait: whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(int(max(1, math.Ceil(wait.Seconds()))))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Remora-Error", http.StatusText(status))
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, msg)
}

// bufferPool recycles the body-copy buffers ReverseProxy would otherwise
// allocate (32 KiB) for every request.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte  { return copyBuffers.Get().(*[32 << 10]byte)[:] }
func (bufferPool) Put(b []byte) { copyBuffers.Put((*[32 << 10]byte)(b)) }

// hostOnly strips the port from a Host header value and lower-cases it; it
// does not allocate for an already lower-case host.
func hostOnly(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i] // [v6]:port or [v6]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	return strings.ToLower(host)
}
