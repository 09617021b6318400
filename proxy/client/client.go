// Package client is Remora's client side: the transport that reaches the
// nodes of one upstream, with its own options and its own keep-alive pool
// per node.
//
// Plain HTTP/1.1 requests without a body, or with a small body of known
// length, take the direct path: the request is written and its answer read
// on the caller's goroutine, over a keep-alive connection from a per-node
// pool. net/http's Transport runs two goroutines per connection and hands
// every request and response between them and the caller; on a proxy's hot
// path those hand-offs cost more CPU than the forwarding itself. Everything
// else — TLS, h2c, upgrades, Expect, trailers, streamed or large bodies —
// goes through net/http's Transport, configured the same way.
//
// The direct path's connection state is as strict as net/http's: a
// connection goes back to its pool only at the end of an answer with
// nothing more read from it, a pooled connection on which the node sent
// anything (or closed) while it was idle is closed instead of used, and an
// answer's head is bounded by MaxResponseHeaderBytes.
package client

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/remora-mesh/remora/internal/sockio"
	"github.com/remora-mesh/remora/internal/tlsfiles"
	"github.com/remora-mesh/remora/proxy/h1"
)

// Options configure a Transport. The zero value is usable.
type Options struct {
	// ConnectTimeout bounds dialing a node; 0 means 2 s.
	ConnectTimeout time.Duration
	// IdleConnTimeout closes idle connections; 0 means 90 s.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool per node; 0 means 256.
	MaxIdleConnsPerHost int
	// ResponseHeaderTimeout bounds each request until the answer's head
	// has arrived (an upstream's per-try timeout); 0 means none.
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds an answer's head; 0 means
	// DefaultMaxResponseHeaderBytes.
	MaxResponseHeaderBytes int64
	// H2C speaks HTTP/2 without TLS (prior knowledge) to the nodes, as
	// gRPC servers expect.
	H2C bool
	// TLS, when set, speaks TLS to the nodes with this config (mTLS when
	// it holds a client certificate; HTTP/2 when its NextProtos has h2).
	TLS *tls.Config
}

// Same reports whether o and p build the same Transport: equal settings,
// and TLS configs that trust and present the same certificates (see
// tlsfiles.Same), so a reload that loads unchanged files again keeps a
// route's transport and its pooled connections.
func (o Options) Same(p Options) bool {
	if !tlsfiles.Same(o.TLS, p.TLS) {
		return false
	}
	o.TLS, p.TLS = nil, nil
	return reflect.DeepEqual(o, p)
}

// MaxDirectBody is the largest request body the direct path sends: a body
// of known length that fits in the socket buffers, so writing it all before
// reading the answer cannot stall against a node that answers early.
const MaxDirectBody = 64 << 10

// Transport reaches the nodes of an upstream (see the package comment). It
// is safe for concurrent use; the pool of each node is guarded by its own
// mutex, held only to push or pop a connection.
type Transport struct {
	std           *http.Transport
	direct        bool // plain HTTP/1.1: the direct path is on
	h2            bool // the nodes may speak HTTP/2 (h2c, or TLS offering h2)
	dialer        net.Dialer
	idleTimeout   time.Duration
	perHost       int
	headerTimeout time.Duration
	maxHead       int64    // bytes a node's answer head may take
	scheme        string   // "http", or "https" with TLS
	pools         sync.Map // "host:port" → *connPool
	// closeIdle is set by CloseIdleConnections and cleared by the next
	// use: while it is set, a connection given back is closed, not
	// pooled (as net/http's Transport does), so a transport a reload
	// dropped keeps none of the connections that were in use then.
	closeIdle atomic.Bool
	// retired is set by Retire: closeIdle stays set for good.
	retired atomic.Bool
}

// Scheme is how the nodes are spoken to: "http", or "https" with TLS.
func (t *Transport) Scheme() string { return t.scheme }

// Direct reports whether the transport takes the direct path (plain
// HTTP/1.1 to the nodes: no TLS, no h2c).
func (t *Transport) Direct() bool { return t.direct }

// DefaultMaxResponseHeaderBytes bounds a node's answer head unless
// Options say otherwise (net/http's Transport allows 10 MiB; a sidecar's
// nodes never need that much, and Envoy's default is 60 KiB).
const DefaultMaxResponseHeaderBytes = 64 << 10

// New returns the tuned transport used to reach nodes: HTTP/1.1
// keep-alive pools, no environment proxy, no transparent compression.
func New(opts Options) *Transport {
	connect := opts.ConnectTimeout
	if connect <= 0 {
		connect = 2 * time.Second
	}
	idle := opts.IdleConnTimeout
	if idle <= 0 {
		idle = 90 * time.Second
	}
	perHost := opts.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = 256
	}
	maxHead := opts.MaxResponseHeaderBytes
	if maxHead <= 0 {
		maxHead = DefaultMaxResponseHeaderBytes
	}
	t := &Transport{
		maxHead:       maxHead,
		dialer:        net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second},
		idleTimeout:   idle,
		perHost:       perHost,
		headerTimeout: opts.ResponseHeaderTimeout,
		direct:        !opts.H2C && opts.TLS == nil,
		scheme:        "http",
	}
	if opts.TLS != nil {
		t.scheme = "https"
	}
	t.std = &http.Transport{
		Proxy:                  nil, // never forward to an environment proxy
		DialContext:            t.dialer.DialContext,
		MaxIdleConns:           0, // no global cap; bounded per node
		MaxIdleConnsPerHost:    perHost,
		IdleConnTimeout:        idle,
		TLSHandshakeTimeout:    connect, // reaching a TLS node is its dial and its handshake
		ExpectContinueTimeout:  0,       // the body is already coming: the server said 100 Continue
		ResponseHeaderTimeout:  opts.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: maxHead,
		DisableCompression:     true, // pass bodies through untouched
		ForceAttemptHTTP2:      false,
		TLSClientConfig:        opts.TLS,
	}
	switch {
	case opts.H2C:
		t.std.Protocols = new(http.Protocols)
		t.std.Protocols.SetUnencryptedHTTP2(true)
		t.h2 = true
	case opts.TLS != nil && slices.Contains(opts.TLS.NextProtos, "h2"):
		t.std.ForceAttemptHTTP2 = true
		t.h2 = true
	}
	return t
}

// CloseIdleConnections closes the connections no request is using, and
// those in use once given back, until the transport is used again.
func (t *Transport) CloseIdleConnections() {
	t.closeIdle.Store(true)
	t.std.CloseIdleConnections()
	t.pools.Range(func(_, v any) bool {
		v.(*connPool).closeIdle()
		return true
	})
}

// Retire is CloseIdleConnections for a transport that takes no new work
// (a reload replaced it): the requests already routed to it are served,
// and every connection they give back is closed, not pooled, however many
// come.
func (t *Transport) Retire() {
	t.retired.Store(true)
	t.CloseIdleConnections()
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.scheme == "https" {
		return t.roundTripTLS(req)
	}
	if !t.takesDirect(req) {
		return t.stdRoundTrip(req)
	}
	ctx := req.Context()
	var resp *http.Response
	_, err := t.onConn(ctx, req.URL.Host, func(c *Conn) (err error) {
		resp, err = c.roundTrip(ctx, req, t.headerTimeout)
		return err
	}, func() (bool, error) { return resendable(req), nil })
	return resp, err
}

// roundTripTLS is RoundTrip to a TLS node. A failure before the request
// had a connection (the TLS handshake failed or ran past the connect
// timeout) is returned as a dial's: nothing reached the node, and the
// request may go to another, as after any connect failure (Envoy counts
// a handshake's failure as the connection's).
func (t *Transport) roundTripTLS(req *http.Request) (*http.Response, error) {
	var connected atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }}
	resp, err := t.stdRoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err == nil || connected.Load() || req.Context().Err() != nil {
		return resp, err
	}
	if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
		return resp, err
	}
	return resp, &net.OpError{Op: "dial", Net: "tcp", Err: err}
}

// stdRoundTrip is RoundTrip on the standard transport. Its limit on an
// answer's head restarts after a 1xx passed on to a trace, and does not
// count what of the next head its reads of the 1xx buffered: a final head
// after a 1xx may come through at up to twice MaxResponseHeaderBytes. An
// HTTP/1 answer whose parsed head is larger than the limit (the node sent
// at least that many bytes) is refused here as on Remora's own
// connections.
func (t *Transport) stdRoundTrip(req *http.Request) (*http.Response, error) {
	var resp *http.Response
	var err error
	if t.h2 {
		resp, err = t.h2RoundTrip(req)
	} else {
		resp, err = t.std.RoundTrip(req)
	}
	if err != nil || resp.ProtoMajor != 1 || minHeadSize(resp.Header) <= t.maxHead {
		return resp, err
	}
	resp.Body.Close()
	return nil, errRespHeadTooLarge{t.maxHead}
}

// ErrNotProcessed is why a request ended that an HTTP/2 node refused
// without processing it, again and again (REFUSED_STREAM, or a GOAWAY
// below its stream): it is returned inside a dial error, as nothing
// reached the node's application, so that the call goes to another node.
var ErrNotProcessed = errors.New("the node refused the request without processing it (HTTP/2 REFUSED_STREAM or GOAWAY)")

// h2RoundTrip is the standard transport's RoundTrip on a transport that
// may speak HTTP/2, whose code sends a request its node did not process
// again, to the same node, up to seven times with a back-off that adds up
// to a minute: a node refusing every stream, or closing each connection
// with GOAWAY as it drains, held each request that long. The first resend
// is kept when it goes on a new connection (a node that rotates its
// connections, as gRPC servers with a maximum connection age do, then
// serves it); a resend on the connection that refused the request, or a
// second one, ends the request with ErrNotProcessed instead.
func (t *Transport) h2RoundTrip(req *http.Request) (*http.Response, error) {
	parent := req.Context()
	ctx, cancel := context.WithCancelCause(parent)
	var (
		conns int
		first net.Conn
	)
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		// Called once a try, one try after another.
		conns++
		switch {
		case conns == 1:
			first = info.Conn
		case conns >= 3, info.Conn == first:
			cancel(ErrNotProcessed)
		}
	}}
	resp, err := t.std.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	if err != nil {
		cancel(nil)
		if context.Cause(ctx) == ErrNotProcessed && parent.Err() == nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: nodeAddr(req), Err: ErrNotProcessed}
		}
	}
	return resp, err
}

// nodeAddr is req's node as a net.Addr for an error, or nil.
func nodeAddr(req *http.Request) net.Addr {
	if ap, err := netip.ParseAddrPort(req.URL.Host); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return nil
}

// minHeadSize is the fewest bytes an HTTP/1 head can take on the wire to
// parse into h: a status line of "HTTP/1.1 200" and its CRLF, a line
// "Name:value" and its CRLF per value, and the blank line.
func minHeadSize(h http.Header) int64 {
	n := int64(len("HTTP/1.1 200\r\n\r\n"))
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(":\r\n") + len(v))
		}
	}
	return n
}

// Send writes a request already encoded (head and body) on an idle
// connection to hostport, or a new one, and waits until the answer's head
// is in the connection's buffer (or the buffer is full). A pooled
// connection that the node closed before answering is replaced once by a
// new one when resend allows it. Until the connection is done with, it is
// interrupted when the client goes away (aw) or, when aw is nil, when ctx
// ends.
func (t *Transport) Send(ctx context.Context, aw Abandoner, hostport string, msg []byte, resend bool) (*Conn, error) {
	return t.onConn(ctx, hostport, func(c *Conn) (err error) {
		c.headSize, err = c.send(ctx, aw, msg, t.headerTimeout)
		return err
	}, func() (bool, error) { return resend, nil })
}

// Head parses the answer's head into h when it is whole in the buffer and
// simple (h1.ParseResponse). Otherwise it reports false: ReadResponse reads
// the answer.
func (c *Conn) Head(h *h1.Response) bool {
	if c.headSize == 0 {
		return false
	}
	b, _ := c.br.Peek(c.headSize)
	if !h1.ParseResponse(b, h) {
		return false
	}
	c.want, c.headLeft = time.Time{}, -1 // the final head is here
	return true
}

// Discard skips n bytes of the answer (a simple head Head parsed).
func (c *Conn) Discard(n int) { _, _ = c.br.Discard(n) }

// Read reads the answer from the connection's buffer: a simple answer's
// body, after Discard skipped its head.
func (c *Conn) Read(p []byte) (int, error) { return c.br.Read(p) }

// ReadNow is Read without the wait: what the buffer holds, else one read
// of the socket; wait reports that nothing was there (n is 0, err nil),
// so that a caller can pass on what it has before Read waits. On a
// connection that is not a socket it always reports wait.
func (c *Conn) ReadNow(p []byte) (n int, wait bool, err error) {
	if c.br.Buffered() > 0 {
		n, err = c.br.Read(p)
		return n, false, err
	}
	if !c.want.Equal(c.deadline) {
		c.setReadDeadline(c.want) // as readConn: the one reads are to have
	}
	n, wait, err = c.sock.ReadNow(p)
	c.nread += n
	return n, wait, err
}

// Done ends the exchange: the connection goes back to its pool when keep
// is set (the answer was read to its end and the node keeps it) and it
// was not interrupted, and is closed otherwise.
func (c *Conn) Done(keep bool) { c.release(keep && c.stop()) }

// Close ends the exchange and closes the connection (an answer that broke
// off, or one not read).
func (c *Conn) Close() {
	c.stop()
	c.conn.Close()
}

// DropSimple reads and drops a simple answer that is retried, keeping the
// connection when the body is short; the exchange is done.
func (c *Conn) DropSimple(h *h1.Response) {
	n := h.BodyLength()
	if n > maxDrain {
		c.Close()
		return
	}
	_, err := c.br.Discard(h.Size + int(n))
	c.release(err == nil && h.KeepAlive && c.stop())
}

// maxDrain is how much of a retried answer's body is read and dropped to
// keep its connection; a longer one closes it.
const maxDrain = 64 << 10

// onConn runs exchange on an idle connection to hostport, or a new one,
// and returns the connection when it succeeds. When it fails on a pooled
// connection that the node closed or reset without sending anything back
// — it may have closed it while it sat in the pool, so that the request
// did not reach the node — and resend allows it, the exchange runs once
// more on a new connection, as net/http's Transport does. A header
// timeout or an interrupt is no such end: the node may be working on the
// request. A failed connection is closed.
func (t *Transport) onConn(ctx context.Context, hostport string, exchange func(*Conn) error, resend func() (bool, error)) (*Conn, error) {
	if t.closeIdle.Load() && !t.retired.Load() {
		t.closeIdle.Store(false) // in use again: pool again
	}
	pool := t.pool(hostport)
	fresh := false // after a stale pooled connection, dial a new one
	for {
		var c *Conn
		if !fresh {
			c = pool.get(time.Now())
			if c != nil && !c.quiet() {
				c.conn.Close() // the node sent what no request asked for, or closed
				continue
			}
		}
		reused := c != nil
		if c == nil {
			conn, err := t.dialer.DialContext(ctx, "tcp", hostport)
			if err != nil {
				return nil, err
			}
			c = newConn(conn, pool, t.maxHead, t.headerTimeout)
		}
		err := exchange(c)
		if err == nil {
			return c, nil
		}
		c.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fresh || !reused || c.nread != 0 || isTimeout(err) || c.interrupted.Load() {
			return nil, err
		}
		if again, rerr := resend(); rerr != nil || !again {
			return nil, cmp.Or(rerr, err)
		}
		fresh = true
	}
}

// takesDirect reports whether req can take the direct path.
func (t *Transport) takesDirect(req *http.Request) bool {
	if !t.direct || req.URL.Scheme != "http" || len(req.Trailer) > 0 {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && (req.ContentLength <= 0 || req.ContentLength > MaxDirectBody) {
		return false
	}
	return h1.Plain(req.Method, req.Header)
}

// resendable reports whether req may be sent again after its pooled
// connection ended before any answer: h1.Resendable, and no body (even one
// GetBody could produce again: the node may have read it).
func resendable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	return h1.Resendable(req.Method, req.Header)
}

func (t *Transport) pool(hostport string) *connPool {
	if p, ok := t.pools.Load(hostport); ok {
		return p.(*connPool)
	}
	p, _ := t.pools.LoadOrStore(hostport, &connPool{max: t.perHost, maxIdle: t.idleTimeout, closing: &t.closeIdle})
	return p.(*connPool)
}

// connPool holds the idle keep-alive connections to one node, the most
// recently used last. Its mutex is held only to push or pop.
type connPool struct {
	mu      sync.Mutex
	idle    []*Conn
	max     int
	maxIdle time.Duration // how long a connection may sit idle
	// sweeper closes the connections that idled maxIdle when no request
	// comes to take one (see sweep); armed while any is idle, nil
	// otherwise. It is a timer, not a goroutine.
	sweeper *time.Timer
	closing *atomic.Bool // the transport's closeIdle
}

// get returns the most recently used idle connection, or nil. When that one
// has been idle longer than maxIdle, so have all the others: all are closed.
func (p *connPool) get(now time.Time) *Conn {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	c := p.idle[n-1]
	if now.Sub(c.idleSince) < p.maxIdle {
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c
	}
	stale := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range stale {
		c.conn.Close()
	}
	return nil
}

// put returns c to the pool, or closes it when the pool is full. The
// oldest idle connection is closed when it has idled too long.
func (p *connPool) put(c *Conn, now time.Time) {
	if p.closing.Load() {
		c.conn.Close()
		return
	}
	c.idleSince = now
	var drop *Conn
	p.mu.Lock()
	if len(p.idle) > 0 && now.Sub(p.idle[0].idleSince) >= p.maxIdle {
		drop = p.idle[0]
		p.idle = append(p.idle[:0], p.idle[1:]...)
	}
	if len(p.idle) >= p.max {
		p.mu.Unlock()
		c.conn.Close()
	} else {
		p.idle = append(p.idle, c)
		if p.sweeper == nil {
			p.sweeper = time.AfterFunc(p.maxIdle, p.sweep)
		}
		p.mu.Unlock()
	}
	if drop != nil {
		drop.conn.Close()
	}
}

// sweep closes the connections that have idled maxIdle or longer, without
// waiting for the pool's next use, which may never come (a node gone, an
// upstream no longer called, a transport a reload replaced), and arms
// itself again for the oldest left, if any.
func (p *connPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleSince) >= p.maxIdle {
		n++
	}
	stale := slices.Clone(p.idle[:n])
	k := copy(p.idle, p.idle[n:])
	clear(p.idle[k:])
	p.idle = p.idle[:k]
	if k > 0 {
		p.sweeper.Reset(p.idle[0].idleSince.Add(p.maxIdle).Sub(now))
	} else {
		p.sweeper = nil
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.conn.Close()
	}
}

func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
}

// Conn is one keep-alive connection to a node. It is used by one request
// at a time: the pool hands it out and takes it back. A direct exchange
// holds it from Transport.Send until Done, DropSimple or Close: it reads
// the answer with Head (a simple answer, then Discard, Read and Done) or
// ReadResponse.
type Conn struct {
	conn      net.Conn
	sock      sockio.Socket // reads and writes conn (with recv and send)
	br        *bufio.Reader
	bw        *bufio.Writer
	pool      *connPool
	nread     int // bytes read for the current request
	headSize  int // the answer head's size when Send found it whole, else 0
	idleSince time.Time
	// While an answer's head is read, headLeft is what it may still take
	// (see Read); otherwise it is negative.
	headLeft      int64
	maxHead       int64
	headerTimeout time.Duration // the transport's, for ReadResponse
	// stop ends the current request's watch on its context (see
	// interrupt); it reports false when the watch fired.
	stop        func() bool
	interrupt   func() // interrupts reads and writes, for context.AfterFunc
	interrupted atomic.Bool
	raw         syscall.RawConn // for writeAndWait; nil for other than a socket
	// The read deadline: the one set on conn (zero: none), and the one
	// reads that may wait are to have. A deadline costs a timer
	// operation in the runtime, about as much as a small system call, so
	// readConn sets want only before a read that may wait: not the read
	// right after writeAndWait saw the answer arrive (readable).
	deadline, want time.Time
	readable       bool
	// writeAndWait's state, for writeThenWait.
	pending []byte
	waited  bool
	werr    error
	waitFn  func(uintptr) bool
	// quiet's state, for peekIdle.
	peekFn    func(uintptr) bool
	peekBuf   [1]byte
	peekErrno syscall.Errno // EAGAIN: nothing was there
}

func newConn(conn net.Conn, pool *connPool, maxHead int64, headerTimeout time.Duration) *Conn {
	c := &Conn{conn: conn, pool: pool, maxHead: maxHead, headLeft: -1, headerTimeout: headerTimeout}
	c.interrupt = func() {
		c.interrupted.Store(true)
		_ = c.conn.SetDeadline(time.Unix(1, 0))
	}
	c.sock.Init(conn)
	if c.raw = c.sock.Raw(); c.raw != nil {
		c.waitFn = c.writeThenWait
		c.peekFn = c.peekIdle
	}
	c.br = bufio.NewReaderSize(connReader{c}, 4<<10)
	c.bw = bufio.NewWriterSize(&c.sock, 4<<10)
	return c
}

// connReader is what a Conn's buffer reads from (see readConn).
type connReader struct{ c *Conn }

func (r connReader) Read(p []byte) (int, error) { return r.c.readConn(p) }

// readConn counts what the node sent, so a failure can tell "nothing came
// back" from "an answer broke off", and bounds an answer's head: while
// one is read (headLeft ≥ 0) no more than maxHead bytes are read for it,
// as net/http's Transport does.
func (c *Conn) readConn(p []byte) (int, error) {
	readable := c.readable
	if readable {
		c.readable = false
	} else if !c.want.Equal(c.deadline) {
		c.setReadDeadline(c.want)
	}
	if c.headLeft >= 0 {
		if c.headLeft == 0 {
			return 0, errRespHeadTooLarge{c.maxHead}
		}
		if int64(len(p)) > c.headLeft {
			p = p[:c.headLeft]
		}
	}
	n, err := c.sock.Read(p)
	if readable && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.interrupted.Load() {
		// The wait saw the answer arrive, but this goroutine ran again
		// only after the wait's bound had passed (a busy process), and a
		// read whose deadline passed fails before it looks. The answer is
		// there: read it under the deadline the read is to have.
		c.setReadDeadline(c.want)
		n, err = c.sock.Read(p)
	}
	c.nread += n
	if c.headLeft > 0 {
		c.headLeft -= int64(n)
	}
	return n, err
}

// setReadDeadline sets the read deadline to t, unless it is t already. An
// interrupt stays in force: it is set again if it came meanwhile.
func (c *Conn) setReadDeadline(t time.Time) {
	if t.Equal(c.deadline) {
		return
	}
	_ = c.conn.SetReadDeadline(t)
	c.deadline = t
	if c.interrupted.Load() {
		c.interrupt()
	}
}

// errRespHeadTooLarge is a node's answer head larger than the limit.
type errRespHeadTooLarge struct{ limit int64 }

func (e errRespHeadTooLarge) Error() string {
	return fmt.Sprintf("the node's answer head is larger than max_response_header_bytes (%d)", e.limit)
}

// quiet reports whether nothing arrived on c while it sat idle in the
// pool: no byte and no end. Bytes no request asked for (an answer to a
// HEAD with a body, a body longer than its length, an answer to a request
// the node read from another's body) would be taken for the next
// request's answer; net/http's Transport closes such a connection
// ("Unsolicited response received on idle HTTP channel"), and so does
// the pool's caller. It costs one non-blocking peek at the socket.
func (c *Conn) quiet() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true // not a socket: nothing to peek at
	}
	c.peekErrno = 0
	if err := c.raw.Read(c.peekFn); err != nil {
		return false
	}
	return c.peekErrno == syscall.EAGAIN
}

// peekIdle is quiet's callback, made once per connection: a peek that
// does not wait. Bytes or an end leave peekErrno 0, nothing EAGAIN.
func (c *Conn) peekIdle(fd uintptr) bool {
	for {
		_, errno := sockio.Peek(fd, c.peekBuf[:])
		if errno != syscall.EINTR {
			c.peekErrno = errno
			return true
		}
	}
}

func noWatch() bool { return true }

// watch interrupts the connection when ctx ends, until c.stop.
func (c *Conn) watch(ctx context.Context) {
	c.stop = noWatch
	if ctx.Done() != nil {
		c.stop = context.AfterFunc(ctx, c.interrupt)
	}
}

// Abandoner tells a direct exchange that its client went away, in place
// of its context's AfterFunc: the server's ResponseWriter implements it
// (package server), without allocating per request.
type Abandoner interface {
	// OnAbandon arranges for interrupt to run if the client goes away
	// (at once if it has), until the stop it returns is called; stop
	// reports false when interrupt ran or runs.
	OnAbandon(interrupt func()) (stop func() bool)
}

// send writes an encoded request and reads until the answer's head is in
// c.br (see Transport.send), under the header timeout, which Head (for a
// simple answer) or ReadResponse clears once the final head is there: a
// 1xx head does not end it. It is interrupted when aw reports the client
// gone or, when aw is nil, when ctx ends. On an error, c.stop has been
// called and c must be closed.
func (c *Conn) send(ctx context.Context, aw Abandoner, msg []byte, headerTimeout time.Duration) (int, error) {
	c.nread = c.br.Buffered()
	c.headLeft = c.maxHead
	c.interrupted.Store(false) // the last request's stop ended its interrupt
	if aw != nil {
		c.stop = aw.OnAbandon(c.interrupt)
	} else {
		c.watch(ctx)
	}
	now := time.Now()
	var deadline time.Time
	if headerTimeout > 0 {
		deadline = now.Add(headerTimeout)
	}
	c.want, c.readable = deadline, false
	if c.raw != nil && c.br.Buffered() == 0 {
		if err := c.writeAndWait(msg, now, deadline); err != nil {
			c.stop()
			return 0, err
		}
	} else {
		_, _ = c.bw.Write(msg)
		if err := c.bw.Flush(); err != nil {
			c.stop()
			return 0, err
		}
	}
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		if n, bareLF := h1.HeadEnd(b); n > 0 {
			if bareLF {
				return 0, nil // http.ReadResponse reads it, under the same limits
			}
			// The head is here. Head ends the header timeout and the
			// head's bound for a simple (final) one; ReadResponse, for
			// any other, once the final head is read: a 1xx is not it.
			c.readable = false
			return n, nil
		}
		if len(b) == c.br.Size() {
			return 0, nil // http.ReadResponse reads it, under the header timeout
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			c.stop()
			if errors.Is(err, io.EOF) {
				err = errNodeClosed
			}
			return 0, err
		}
	}
}

// waitCheck bounds writeAndWait's wait: after it, a read looks.
const waitCheck = 250 * time.Millisecond

// testHookAfterWait, when set by a test, runs when writeAndWait saw the
// answer arrive, before it is read. Atomic: a test sets it while
// connections of earlier tests may still be in use.
var testHookAfterWait atomic.Pointer[func()]

// writeAndWait writes msg, then waits until the connection is readable;
// deadline (zero: none) bounds the wait, and the reads after it.
//
// It saves a system call per request: Go's reads try the socket before
// they wait for it, and right after the request is written the answer is
// never there yet (about 1.7 µs on a virtual machine, 5% of a request).
// The write is made inside the wait's callback, after the poller cleared
// the socket's readiness, so the answer's arrival is seen however soon it
// comes. Only an end that arrived while the connection was idle (a node's
// half close, whose readiness the clearing drops) would go unseen: the
// wait is bounded by waitCheck, after which the caller's read finds it.
// The bound set for an earlier wait is kept while it falls no more than
// waitCheck/16 short of now+waitCheck: a busy connection moves it about
// once in 15 ms, not twice a request.
func (c *Conn) writeAndWait(msg []byte, now, deadline time.Time) error {
	wait, bounded := now.Add(waitCheck), true
	if !deadline.IsZero() && deadline.Before(wait) {
		wait, bounded = deadline, false
	}
	if d := wait.Sub(c.deadline); !bounded || d < 0 || d > waitCheck/16 {
		c.setReadDeadline(wait)
	}
	c.pending, c.waited, c.werr = msg, false, nil
	err := c.raw.Read(c.waitFn)
	written, werr := len(msg)-len(c.pending), c.werr
	c.pending = nil
	switch {
	case werr != nil && werr != syscall.EAGAIN:
		return &net.OpError{Op: "write", Net: "tcp", Source: c.conn.LocalAddr(), Addr: c.conn.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	case written < len(msg):
		if _, err := c.sock.Write(msg[written:]); err != nil {
			return err
		}
	case err != nil && !(bounded && isTimeout(err) && !c.interrupted.Load()):
		return err // interrupted, the header timeout, or the socket failed
	case err == nil:
		c.readable = true // the first read finds the answer: no deadline for it
		if h := testHookAfterWait.Load(); h != nil {
			(*h)()
		}
	}
	if c.interrupted.Load() {
		c.interrupt() // it may have come after the check: keep it in force
	}
	return nil
}

// writeThenWait is writeAndWait's callback, made once per connection (a
// closure would be allocated for each request): it writes c.pending, then
// asks to wait; called again once readable, it is done.
func (c *Conn) writeThenWait(fd uintptr) bool {
	if c.waited {
		return true // readable: the caller's read gets it
	}
	for len(c.pending) > 0 {
		n, errno := sockio.Send(fd, c.pending)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			c.werr = errno // EAGAIN: the rest is written the usual way
			return true
		}
		c.pending = c.pending[n:]
	}
	c.waited = true
	return false
}

// roundTrip writes req and reads the answer's header. The body, when there
// is one, returns the connection to the pool once read to its end.
func (c *Conn) roundTrip(ctx context.Context, req *http.Request, headerTimeout time.Duration) (*http.Response, error) {
	c.nread = c.br.Buffered() // never anything here, but it would count as an answer
	c.headLeft = c.maxHead
	c.watch(ctx)
	if err := req.Write(c.bw); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		c.stop()
		return nil, err
	}
	c.want, c.readable = time.Time{}, false
	if headerTimeout > 0 {
		c.want = time.Now().Add(headerTimeout)
	}
	var got1xx func(int, textproto.MIMEHeader) error
	if trace := httptrace.ContextClientTrace(ctx); trace != nil {
		got1xx = trace.Got1xxResponse
	}
	return c.readResponse(req, headerTimeout, got1xx)
}

// ReadResponse reads the answer to req, passing 1xx answers to got1xx
// (ReverseProxy's trace forwards them), and clears the header timeout. The
// body, when there is one, returns the connection to the pool once read to
// its end (or closes it when closed before). On an error the connection is
// closed.
func (c *Conn) ReadResponse(req *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	resp, err := c.readResponse(req, c.headerTimeout, got1xx)
	if err != nil {
		c.conn.Close()
	}
	return resp, err
}

// readResponse is ReadResponse; on an error, c.stop has been called and c
// must be closed.
func (c *Conn) readResponse(req *http.Request, headerTimeout time.Duration, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			c.stop()
			if c.headLeft == 0 {
				err = errRespHeadTooLarge{c.maxHead}
			} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errNodeClosed
			}
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if got1xx != nil {
			if err := got1xx(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				c.stop()
				return nil, err
			}
			// Passed on: the next head has a limit of its own (as in
			// net/http's Transport), which counts what of it is in the
			// buffer already: it came in the 1xx's reads.
			c.headLeft = c.maxHead - int64(c.br.Buffered())
		}
	}
	c.headLeft = -1
	c.want = time.Time{}
	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.Body == http.NoBody {
		c.release(keep && c.stop())
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, keep: keep}
	return resp, nil
}

// release returns the connection to its pool, or closes it. Only a
// connection at an answer's end with nothing more read from it goes back:
// bytes beyond the answer are no answer to anything.
func (c *Conn) release(reuse bool) {
	if reuse && c.br.Buffered() == 0 {
		c.pool.put(c, time.Now())
		return
	}
	c.conn.Close()
}

var errNodeClosed = errors.New("the node closed the connection without an answer")

// h1Body is a response body on the direct path: at its end the connection
// goes back to the pool; closed before its end, the connection is closed.
type h1Body struct {
	rc   io.ReadCloser
	c    *Conn
	keep bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(complete bool) {
	b.done = true
	interrupted := !b.c.stop()
	b.c.release(complete && b.keep && !interrupted)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
