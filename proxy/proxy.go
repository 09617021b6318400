// Package proxy forwards HTTP requests from the local application to the
// nodes of an upstream.
//
// A plain HTTP/1.1 request that Server read for a plain HTTP/1.1 upstream
// takes the direct exchange (direct.go): its head is encoded once, written
// to a pooled connection, and a simple answer is passed on from the read
// buffer. Everything else goes through httputil.ReverseProxy, extended only
// through its hooks: Rewrite sets the destination, a RoundTripper picks the
// node (and picks again after a connect error), ErrorHandler classifies
// failures. Both share exchange.attempts: node choice, retries and health
// accounting.
//
// The request path holds no lock: it loads the routing table and the
// upstream's snapshot with one atomic load each.
package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/stdlog"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// StatusClientClosedRequest is logged when the client went away before the
// response (nginx's and Caddy's 499). It is never charged to a node.
const StatusClientClosedRequest = 499

// Options tune the proxy. The zero value is usable.
type Options struct {
	// ConnectTimeout bounds dialing a node; 0 means 2 s.
	ConnectTimeout time.Duration
	// IdleConnTimeout closes idle upstream connections; 0 means 90 s.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool per node; 0 means 256.
	MaxIdleConnsPerHost int
	// ResponseHeaderTimeout bounds each attempt until the response
	// headers arrive (an upstream's per-try timeout); 0 means none.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds a node's answer head; a larger one
	// is answered 502. 0 means DefaultMaxResponseHeaderBytes.
	MaxResponseHeaderBytes int64
	// H2C speaks HTTP/2 without TLS (prior knowledge) to the nodes, as
	// gRPC servers expect.
	H2C bool
	// TLS, when set, speaks TLS to the nodes with this config (mTLS when
	// it holds a client certificate).
	TLS *tls.Config
	// Log is the logger; one that discards when nil.
	Log *logrus.Entry
	// Transport replaces the upstream transport (tests); nil builds one.
	Transport http.RoundTripper
	// AccessLog, when set, gets one entry per proxied request.
	AccessLog *logrus.Entry
	// AccessLogSample is the share of requests logged, 0..1; 0 means 1.
	AccessLogSample float64
}

// Proxy is the HTTP forwarding engine. It is safe for concurrent use; the
// routing table is swapped atomically with SetTable.
type Proxy struct {
	connectTimeout time.Duration
	table          atomic.Pointer[upstream.Table]
	rp             *httputil.ReverseProxy
	transport      http.RoundTripper
	log            *logrus.Entry
	access         *logrus.Entry
	sample         float64
}

// New returns a proxy with an empty routing table.
func New(opts Options) *Proxy {
	if opts.Log == nil {
		opts.Log = discovery.Env{}.Logger()
	}
	p := &Proxy{log: opts.Log, transport: opts.Transport, access: opts.AccessLog, sample: opts.AccessLogSample, connectTimeout: opts.ConnectTimeout}
	if p.sample <= 0 || p.sample > 1 {
		p.sample = 1
	}
	if p.connectTimeout <= 0 {
		p.connectTimeout = 2 * time.Second
	}
	if p.transport == nil {
		p.transport = NewTransport(opts)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    pickingTransport{base: p.transport},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { p.fail(w, r, exchangeOf(r.Context()), err) },
		ErrorLog:     stdlog.New(opts.Log, logrus.WarnLevel),
		BufferPool:   bufferPool{},
	}
	p.table.Store(upstream.NewTable())
	return p
}

// SetTable replaces the routing table.
func (p *Proxy) SetTable(t *upstream.Table) { p.table.Store(t) }

// Table returns the current routing table.
func (p *Proxy) Table() *upstream.Table { return p.table.Load() }

// Close releases idle upstream connections.
func (p *Proxy) Close() {
	if t, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// ServeHTTP routes by the Host header: its host part (port ignored) names
// the upstream. An unknown host gets 404 and nothing is dialed, so Remora is
// never an open proxy.
//
// Absolute-form requests (GET http://user-service/path) route the same way,
// so an application can set HTTP_PROXY to Remora's address. CONNECT opens a
// TCP tunnel to a node, and only for a known upstream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.table.Load()
	host := hostOnly(r.Host)
	up := t.Lookup(host)
	if up == nil {
		p.notFound(w, r, t, host)
		return
	}
	if r.Method == http.MethodConnect {
		p.tunnel(w, r, up)
		return
	}
	p.forward(w, r, up)
}

// tunnel answers CONNECT to a known upstream with a TCP tunnel to one of
// its nodes.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, up *upstream.Upstream) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusNotImplemented, "remora: CONNECT needs HTTP/1.1")
		return
	}
	backend, n, err := tcp.Dial(r.Context(), up, r.RemoteAddr, p.connectTimeout)
	if err != nil {
		p.log.WithError(err).WithField("upstream", up.Name()).Warn("CONNECT: no node reachable")
		writeError(w, http.StatusBadGateway, fmt.Sprintf("remora: upstream %q: %v", up.Name(), err))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		backend.Close()
		n.Stats.End(0, false)
		return
	}
	start := time.Now()
	_, _ = conn.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n"))
	if k := buf.Reader.Buffered(); k > 0 {
		pending, _ := buf.Reader.Peek(k)
		_, _ = backend.Write(pending)
	}
	tcp.Splice(conn, backend)
	n.Stats.End(time.Since(start), false)
}

// ForUpstream returns a handler that sends every request to the named
// upstream whatever its Host header (a dedicated listener). The name is
// resolved against the current table on each request.
func (p *Proxy) ForUpstream(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := p.table.Load()
		up := t.Lookup(name)
		if up == nil {
			p.notFound(w, r, t, name)
			return
		}
		p.forward(w, r, up)
	})
}

func (p *Proxy) notFound(w http.ResponseWriter, r *http.Request, t *upstream.Table, host string) {
	p.log.WithFields(logrus.Fields{"host": r.Host, "status": http.StatusNotFound}).Debug("no upstream for host")
	writeError(w, http.StatusNotFound, fmt.Sprintf("remora: no upstream named %q (Host %q); known upstreams: %s",
		host, r.Host, strings.Join(t.Names(), ", ")))
}

// forward proxies r to a node of up.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, up *upstream.Upstream) {
	snap := up.Snapshot()
	if snap.Available == 0 {
		reason := fmt.Sprintf("remora: upstream %q has no available node (%d known)", up.Name(), len(snap.Nodes))
		if !snap.Synced {
			reason = fmt.Sprintf("remora: upstream %q has not received its nodes from the registry yet", up.Name())
		}
		p.log.WithFields(logrus.Fields{"upstream": up.Name(), "status": http.StatusServiceUnavailable}).Warn(reason)
		writeError(w, http.StatusServiceUnavailable, reason)
		up.RecordLocal(http.StatusServiceUnavailable)
		return
	}
	if !up.BeginRequest() {
		up.RecordLocal(http.StatusServiceUnavailable)
		w.Header().Set("X-Remora-Overloaded", "upstream max_requests")
		p.log.WithFields(logrus.Fields{"upstream": up.Name(), "status": http.StatusServiceUnavailable}).Warn("circuit breaker: max_requests in flight")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("remora: upstream %q: circuit breaker open (circuit_breaker.max_requests %d in flight)",
			up.Name(), up.Policy().CircuitBreaker.MaxRequests))
		return
	}
	defer up.EndRequest()
	st := newExchange(w)
	*st = exchange{up: up, snap: snap, client: r.Context(), start: time.Now()}
	ctx := r.Context()
	if total := up.Policy().Timeouts.Total; total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, total)
		defer cancel()
	}
	var aborted bool
	if t := p.directTransport(w, r, up); t != nil {
		aborted = p.forwardDirect(ctx, w.(*response), r, st, t)
	} else {
		aborted = p.reverse(ctx, w, r, st)
	}
	if st.grpc != nil && st.client.Err() == nil {
		up.Observe(st.node, health.Outcome{Status: grpcHTTPStatus(st.grpc)})
	}
	if st.node != nil {
		st.node.Stats.End(time.Since(st.began), false)
	}
	took := time.Since(st.start)
	status := st.status
	switch {
	case st.client.Err() != nil:
		up.Metrics().ClientClosed.Add(1)
		status = StatusClientClosedRequest
	case st.picker != nil:
		up.Record(st.pool, st.status, took)
	}
	if status == 0 {
		status = st.errStatus
	}
	if p.access != nil && (p.sample >= 1 || rand.Float64() < p.sample) {
		p.logAccess(r, st, status, took)
	}
	for ; st.retries > 0; st.retries-- {
		up.EndRetry()
	}
	if aborted {
		panic(http.ErrAbortHandler) // the server drops the connection
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
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, exchangeKey{}, st)))
	return false
}

// exchange is the per-request state shared by the hooks. It is used by the
// request's own goroutine only (RoundTrip runs on it).
type exchange struct {
	up     *upstream.Upstream
	snap   *upstream.Snapshot
	client context.Context // the client's context: its end means "client gone"
	start  time.Time
	node   *node.Node // the node that answered, until the exchange ends
	began  time.Time  // when the answering attempt began
	tried  []*node.Node
	triedA [4]*node.Node // backing store for tried
	// retries counts places held in the upstream's retry budget.
	retries int
	body    requestBody
	// The pool chosen for the request and its picker and size.
	pool      canary.Pool
	picker    balancer.Picker
	avail     int
	status    int // the final response status, 0 without a response
	errStatus int // the status fail answered with
	// grpc is a gRPC response whose outcome is judged by its grpc-status
	// once the body (and trailers) went through.
	grpc *http.Response
	// prefetched is an answer the direct path read and hands to
	// ReverseProxy to write (see forwardDirect).
	prefetched *http.Response
}

// isGRPC reports whether resp is a gRPC response.
func isGRPC(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
}

// grpcHTTPStatus maps a finished gRPC response's grpc-status (trailer, or
// header for a trailers-only response) to the HTTP status outlier detection
// understands: UNAVAILABLE (14) is a gateway failure, like a 503; anything
// else says the node is up.
func grpcHTTPStatus(resp *http.Response) int {
	code := resp.Trailer.Get("Grpc-Status")
	if code == "" {
		code = resp.Header.Get("Grpc-Status")
	}
	if code == "14" {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// logAccess writes the access log entry of a finished request.
func (p *Proxy) logAccess(r *http.Request, st *exchange, status int, took time.Duration) {
	nodeID := ""
	if st.node != nil {
		nodeID = st.node.ID
	}
	p.access.WithFields(logrus.Fields{
		"upstream": st.up.Name(), "node": nodeID, "pool": st.pool.String(), "status": status,
		"duration_ms": float64(took.Microseconds()) / 1000, "attempts": len(st.tried),
		"method": r.Method, "path": r.URL.Path, "host": r.Host,
	}).Info("request")
}

// newExchange returns the exchange of a request answered through w: the
// one proxy.Server's connection keeps for its requests (they come one at
// a time, and nothing holds an exchange after forward returns), else a
// new one.
func newExchange(w http.ResponseWriter) *exchange {
	if dw, ok := w.(*response); ok {
		return &dw.c.exchange
	}
	return new(exchange)
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	st, _ := ctx.Value(exchangeKey{}).(*exchange)
	return st
}

// rewrite keeps the client's Host header; the transport fills in the node.
func rewrite(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = pr.In.Host
}

// maxConnectRetries bounds the retries after connect errors in one request.
const maxConnectRetries = 3

var (
	errNoNode      = errors.New("no available node")
	errOverloaded  = errors.New("every node is at circuit_breaker.max_requests_per_node")
	errCanaryEmpty = errors.New("the canary pool has no available node (canary.strict)")
)

// pickingTransport is ReverseProxy's transport: it makes the request's body
// replayable when it can, then sends each attempt exchange.attempts makes
// through the upstream's transport.
type pickingTransport struct{ base http.RoundTripper }

func (t pickingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := exchangeOf(req.Context())
	if st == nil {
		return nil, errors.New("remora: request without routing state")
	}
	if resp := st.prefetched; resp != nil {
		st.prefetched = nil // the direct path's answer (see forwardDirect)
		return resp, nil
	}
	base := t.base
	if own := st.up.Transport(); own != nil {
		base = own
	}
	pol := st.up.Policy()
	body := &st.body
	if err := body.prepare(req, pol.Retry.MaxBodyBytes); err != nil {
		return nil, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || body.buffered != nil || upstream.Idempotent(req.Method)
	var resp *http.Response
	err := st.attempts(req, replayable, func(n *node.Node, attempt int) attemptResult {
		if attempt > 1 {
			// The transport may still hold the last attempt's request.
			req = req.Clone(req.Context())
		}
		body.rewind(req)
		req.URL.Scheme, req.URL.Host = st.up.Scheme(), n.HostPort
		var err error
		resp, err = base.RoundTrip(req)
		switch {
		case err != nil:
			return attemptResult{err: err}
		case isGRPC(resp) && resp.StatusCode == http.StatusOK:
			// The verdict is in grpc-status, after the body: forward
			// observes it when the exchange ends.
			st.grpc = resp
			return attemptResult{status: resp.StatusCode, deferred: true}
		}
		return attemptResult{status: resp.StatusCode}
	}, func() { dropResponse(resp) })
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// maxDrain is how much of a retried answer's body is read and dropped to
// keep its connection; a longer one closes it.
const maxDrain = 64 << 10

// dropResponse releases an answer that is retried.
func dropResponse(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
}

// attemptResult is what one attempt at a node came to: a status, or an
// error before any.
type attemptResult struct {
	status int
	err    error
	// deferred: the outcome is judged when the exchange ends (gRPC); the
	// answer is kept as it is.
	deferred bool
}

// attempts picks a node for each attempt and runs send on it, retrying on
// another node: connect errors always (nothing was sent), retryable
// statuses and broken connections when replayable (the method is
// idempotent or the body can be sent again), within max_attempts and the
// retry budget. Every attempt's outcome feeds outlier detection; the
// client's cancellation never does. drop releases an answer that is
// retried. The kept answer's node, start and status are recorded in st.
func (st *exchange) attempts(req *http.Request, replayable bool, send func(n *node.Node, attempt int) attemptResult, drop func()) error {
	pol := st.up.Policy()
	body := &st.body
	st.tried = st.triedA[:0]
	if err := st.choosePool(req); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		n, err := pickNode(st, req, pol.CircuitBreaker.MaxRequestsPerNode)
		if err != nil {
			return err
		}
		st.tried = append(st.tried, n)
		began := time.Now()
		n.Stats.Begin(began)
		res := send(n, attempt)
		err = res.err
		if err != nil && st.client.Err() != nil {
			n.Stats.End(0, false) // the client went away: no sample, no blame
			return err
		}
		if res.deferred {
			st.node, st.began, st.status = n, began, res.status
			return nil
		}
		var out health.Outcome
		retry := false
		switch {
		case err == nil:
			out.Status = res.status
			retry = pol.RetryableStatus(res.status) && replayable
		case isConnectError(err):
			out.Failure = health.ConnectFailure
			retry = !body.touched || body.buffered != nil
		default:
			out.Failure = health.GatewayFailure
			retry = replayable && req.Context().Err() == nil
		}
		st.up.Observe(n, out)
		if out.Failure == health.ConnectFailure {
			// Nothing reached the node: always worth another node, outside
			// max_attempts and the budget, at most maxConnectRetries times.
			retry = retry && attempt <= maxConnectRetries && st.avail > len(st.tried)
		} else {
			retry = retry && attempt < pol.Retry.MaxAttempts && st.avail > len(st.tried) && st.up.TryRetry()
			if retry {
				st.retries++
			}
		}
		if !retry {
			if err != nil {
				n.Stats.End(time.Since(began), true)
				return err
			}
			st.node, st.began, st.status = n, began, res.status
			return nil
		}
		if err == nil {
			drop()
		}
		n.Stats.End(time.Since(began), true)
	}
}

// choosePool decides between stable and canary (see package canary). A
// chosen pool without nodes falls back to the other, unless the canary rule
// is strict.
func (st *exchange) choosePool(req *http.Request) error {
	st.pool, st.picker, st.avail = canary.Stable, st.snap.Picker, st.snap.StableAvailable
	split := st.snap.Canary
	if split == nil {
		st.avail = st.snap.Available
		return nil
	}
	if split.Choose(req) == canary.Canary {
		if split.Available > 0 {
			st.pool, st.picker, st.avail = canary.Canary, split.Picker, split.Available
			return nil
		}
		if split.Rule.Strict() {
			return errCanaryEmpty
		}
	}
	if st.avail == 0 && split.Available > 0 {
		st.pool, st.picker, st.avail = canary.Canary, split.Picker, split.Available
	}
	return nil
}

// pickNode picks a node not tried yet in this request when the picker
// offers one within a few tries, skipping nodes at their in-flight limit.
func pickNode(st *exchange, req *http.Request, perNode int) (*node.Node, error) {
	info := balancer.Info{Request: req}
	var n *node.Node
	for i := 0; i < 8; i++ {
		n = st.picker.Pick(info)
		if n == nil {
			return nil, errNoNode
		}
		if (perNode == 0 || n.Stats.InFlight.Load() < int64(perNode)) && !slices.Contains(st.tried, n) {
			return n, nil
		}
	}
	if perNode > 0 && n.Stats.InFlight.Load() >= int64(perNode) {
		return nil, errOverloaded
	}
	return n, nil
}

// isConnectError reports whether err happened before the request reached the
// node (so it is safe to send it elsewhere).
func isConnectError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// requestBody makes a request body replayable across attempts: a body up to
// the size limit is buffered; a larger one is streamed through a guard that
// records whether the transport read from it.
type requestBody struct {
	buffered []byte // the whole body, when it fit
	touched  bool   // a streamed body was read from
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
	req.Body = &replayGuard{rc: req.Body, touched: &b.touched}
	return nil
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

// replayGuard records whether the transport read the request body, and keeps
// it open across a failed attempt so a retry can send it. The server closes
// the underlying body when the handler returns.
type replayGuard struct {
	rc      io.Reader
	touched *bool
}

func (g *replayGuard) Read(p []byte) (int, error) {
	*g.touched = true
	return g.rc.Read(p)
}

func (g *replayGuard) Close() error { return nil }

// fail answers a request that got no answer from a node, with the status
// its error calls for; st is the exchange, or nil.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, st *exchange, err error) {
	fields := logrus.Fields{"error": err.Error()}
	if st != nil {
		fields["upstream"] = st.snap.Name
	}
	status := http.StatusBadGateway
	switch {
	case st != nil && st.client.Err() != nil || st == nil && r.Context().Err() != nil:
		fields["status"] = StatusClientClosedRequest
		p.log.WithFields(fields).Info("client closed the request")
		w.WriteHeader(StatusClientClosedRequest)
		return
	case errors.Is(err, errNoNode), errors.Is(err, errCanaryEmpty):
		status = http.StatusServiceUnavailable
	case errors.Is(err, errOverloaded):
		status = http.StatusServiceUnavailable
		w.Header().Set("X-Remora-Overloaded", "node max_requests_per_node")
	case isTimeout(err):
		status = http.StatusGatewayTimeout
	}
	fields["status"] = status
	if st != nil {
		st.errStatus = status
	}
	p.log.WithFields(fields).Warn("upstream request failed")
	writeError(w, status, fmt.Sprintf("remora: upstream %v: %v", fields["upstream"], err))
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
