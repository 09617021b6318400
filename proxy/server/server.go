// Package server is Remora's server side: it serves a proxy listener.
// Plain HTTP/1.1 requests (h1.ParseRequest, h1.ServerTakes) are read,
// handled and answered on the connection's own goroutine, with a
// ResponseWriter that is as strict as net/http's about the connection's
// state; anything else goes, with every byte read for it, to net/http's
// server (h2c included), whose handler, limits and error answers then
// apply for good.
//
// Its contract with the handler is net/http's, plus two capabilities of
// the direct path's ResponseWriter, found by type assertion as
// http.Hijacker is: RawWriter (write an answer already encoded) and
// client.Abandoner (learn, without allocating, that the client went away).
package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c" //lint:ignore SA1019 net/http's own unencrypted HTTP/2 takes prior knowledge only; h2c also takes Upgrade: h2c, which applications use

	"github.com/remora-mesh/remora/internal/sockio"
	"github.com/remora-mesh/remora/proxy/h1"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// Options are a listener's limits. The zero value is net/http's defaults.
type Options struct {
	// ReadHeaderTimeout bounds reading a request's head: a new
	// connection's first head from the connection's start, a later one
	// from its first byte.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for a keep-alive connection's next
	// request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head (net/http's rule, with its
	// 4 KiB for the request line); larger ones get 431.
	MaxHeaderBytes int
	// ErrorLog gets what net/http's server would log.
	ErrorLog *log.Logger
}

// RawWriter is implemented by the ResponseWriter of a request the server
// read on its direct path: a handler with an answer already encoded (a
// node's head, rewritten) writes it straight to the connection's buffer
// instead of through Header and WriteHeader.
type RawWriter interface {
	// BeginRaw commits the answer: a final status whose body is length
	// bytes (0 for a status that has none). It returns the header line
	// the server needs in the head — "Connection: close\r\n" when the
	// connection ends after this answer, else "" — and the writer for the
	// head (status line, header lines with that one, empty line) and then
	// the length body bytes. A handler that cannot write them all must
	// abort (panic http.ErrAbortHandler): the connection then closes.
	BeginRaw(status int, length int64) (connHeader string, w io.Writer)
}

var _ RawWriter = (*response)(nil)

// Server serves a proxy listener. Plain HTTP/1.1 requests in origin form
// are read, handled and answered on the connection's own goroutine: unlike
// net/http's server, it starts no goroutine per request to watch the client
// (that costs a goroutine, a system call and two switches per request). A
// request still running after ClientWatchDelay gets such a watcher, so a
// client that goes away still cancels its upstream call: one without a
// body from its start, one with a body once the body has been read to its
// end (by a direct exchange, or by the transport streaming it to the
// node), as net/http's server watches from a body's end.
//
// Anything else — HTTP/1.0, h2c, upgrades, CONNECT, absolute-form, Expect,
// a malformed or oversized request — hands the connection, with every byte
// read from it, to a net/http server with the same handler (and h2c) and
// limits, whose error answers then apply to it for good.
//
// Serve, Shutdown and Close may be called from any goroutine.
type Server struct {
	hs           *http.Server
	handler      http.Handler
	handoff      *handoffListener
	shuttingDown atomic.Bool

	mu    sync.Mutex
	ln    net.Listener
	conns map[*srvConn]struct{}
	// hijacked are the handed-off connections net/http gave up (h2c,
	// upgrades, CONNECT): Shutdown waits for them too, and closes them at
	// its deadline.
	hijacked map[*prefixConn]struct{}
}

// ClientWatchDelay is how long a request runs before its connection is
// watched for the client going away.
const ClientWatchDelay = 100 * time.Millisecond

// maxBodyDrain is how much of a request body the handler left unread is
// read and dropped to keep the connection; beyond it, the connection closes.
const maxBodyDrain = 256 << 10

// New returns a server for h: on its direct path, and through net/http's
// server (HTTP/1.x and h2c) for the rest, both with opts.
func New(opts Options, h http.Handler) *Server {
	h2s := &http2.Server{} //lint:ignore SA1019 see the h2c import
	hs := &http.Server{
		Handler:           h2cOrPlain(h, h2c.NewHandler(h, h2s)), //lint:ignore SA1019 see the import
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          opts.ErrorLog,
	}
	s := &Server{hs: hs, handler: h, conns: map[*srvConn]struct{}{}, hijacked: map[*prefixConn]struct{}{}}
	hs.ConnState = s.connState
	// Shutdown then sends h2c connections GOAWAY: their streams in flight
	// finish, and they close. (It fails only for a TLS config: none here.)
	_ = http2.ConfigureServer(hs, h2s) //lint:ignore SA1019 see the h2c import
	return s
}

// h2cOrPlain hands an HTTP/1.1 request that asks to upgrade to h2c to
// upgrader (the h2c handler) only when the upgrade can be made: no body,
// Connection lists HTTP2-Settings and there is one such header (RFC 7540
// section 3.2). Any other such request is served with h as the HTTP/1.1
// request it also is, without its h2c Upgrade token and HTTP2-Settings
// (section 3.2.1: the server does not upgrade); any other request goes to
// upgrader, which takes h2c with prior knowledge and passes the rest to
// h. Otherwise the h2c handler would answer 500 to one without
// HTTP2-Settings, read a body whole into memory before it switches
// (net/http's own server does not upgrade to h2c at all, so a client
// could make Remora hold any amount), and pass one whose Connection does
// not list HTTP2-Settings to h, which would send it on to a node as an
// upgrade: a node that took it would carry the client's HTTP/2 past
// Remora. h2c is Remora's own hop, never its nodes'.
func h2cOrPlain(h, upgrader http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "h2c") {
			upgrader.ServeHTTP(w, r) // h2c with prior knowledge; h for the rest
			return
		}
		if (r.Body == nil || r.Body == http.NoBody) && len(r.Header["Http2-Settings"]) == 1 &&
			httpguts.HeaderValuesContainsToken(r.Header["Connection"], "HTTP2-Settings") {
			upgrader.ServeHTTP(w, r)
			return
		}
		var rest []string
		for _, v := range r.Header["Upgrade"] {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" && !strings.EqualFold(p, "h2c") {
					rest = append(rest, p)
				}
			}
		}
		if rest == nil {
			r.Header.Del("Upgrade")
		} else {
			r.Header["Upgrade"] = []string{strings.Join(rest, ", ")}
		}
		r.Header.Del("Http2-Settings")
		h.ServeHTTP(w, r)
	})
}

// connState tracks the handed-off connections net/http hijacks: they
// leave its Shutdown's care.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	pc, ok := c.(*prefixConn)
	if !ok || st != http.StateHijacked {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !pc.closed {
		s.hijacked[pc] = struct{}{}
	}
}

// hijackedLeft closes the hijacked connections when closeThem, and
// reports how many are open.
func (s *Server) hijackedLeft(closeThem bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if closeThem {
		for pc := range s.hijacked {
			pc.Conn.Close()
		}
	}
	return len(s.hijacked)
}

// Serve accepts connections on ln until Shutdown or Close; it then returns
// http.ErrServerClosed (or, when ln was closed by another hand, its
// error). Other accept errors are waited out (see tcp.Acceptor) and
// logged to ErrorLog: the first at once, then at most one a minute while
// they go on.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shuttingDown.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.handoff = newHandoffListener(ln.Addr())
	s.mu.Unlock()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.hs.Serve(s.handoff)
	}()
	defer func() { <-served }()
	a := tcp.Acceptor{Report: s.logAcceptError}
	for {
		nc, err := a.Accept(ln)
		if err != nil {
			if s.shuttingDown.Load() {
				return http.ErrServerClosed
			}
			s.handoff.Close()
			return err
		}
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, and waits until the
// requests in flight are answered (their connections then close) or ctx
// ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	hsDone := make(chan error, 1)
	go func() { hsDone <- s.hs.Shutdown(ctx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !s.closeIdle() {
		select {
		case <-ctx.Done():
			<-hsDone
			s.hijackedLeft(true)
			return ctx.Err()
		case <-tick.C:
		}
	}
	if err := <-hsDone; err != nil {
		s.hijackedLeft(true)
		return err
	}
	// net/http does not wait for what it handed over (h2c connections,
	// which got GOAWAY; upgraded connections; CONNECT tunnels).
	for s.hijackedLeft(false) > 0 {
		select {
		case <-ctx.Done():
			s.hijackedLeft(true)
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.stopAccepting()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	err := s.hs.Close()
	s.hijackedLeft(true)
	return err
}

func (s *Server) stopAccepting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shuttingDown.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
}

// closeIdle closes the connections waiting for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) newConn(nc net.Conn) *srvConn {
	c := &srvConn{srv: s, nc: nc, remote: nc.RemoteAddr().String(), watchDone: make(chan struct{}, 1)}
	// The values net/http's server gives its requests. ReverseProxy reads
	// ServerContextKey: with it, a body that breaks off after the header
	// went out aborts the answer (http.ErrAbortHandler) instead of ending
	// it as if complete.
	c.ctx = context.WithValue(context.WithValue(context.Background(), http.ServerContextKey, s.hs), http.LocalAddrContextKey, nc.LocalAddr())
	c.br = bufio.NewReaderSize(c, 4<<10)
	c.sock.Init(nc)
	c.bw = bufio.NewWriterSize(&c.sock, 4<<10)
	c.limit = s.hs.MaxHeaderBytes
	if c.limit <= 0 {
		c.limit = http.DefaultMaxHeaderBytes
	}
	c.limit += 4096 // net/http's slack for the request line
	c.watch = time.AfterFunc(time.Hour, c.watchClient)
	c.watch.Stop()
	c.unwatchFn = c.unwatch
	if c.raw = c.sock.Raw(); c.raw != nil {
		c.waitFn, c.peekFn = c.waitThenGo, c.peekArrived
	}
	c.header = make(http.Header, 8)
	c.reqHeader = make(http.Header, 8)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *srvConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// logAcceptError logs an accept error Serve waits out.
func (s *Server) logAcceptError(err error, skipped int) {
	s.logf("remora: %v; accepting again (logged once a minute at most; %d more since the last such line)", err, skipped)
}

func (s *Server) logf(format string, args ...any) {
	if s.hs.ErrorLog != nil {
		s.hs.ErrorLog.Printf(format, args...)
	}
}

const (
	connIdle int32 = iota
	connActive
	connClosed
)

// srvConn is one client connection on the direct path. Its fields are used
// by its own goroutine, except where noted.
type srvConn struct {
	srv    *Server
	nc     net.Conn
	sock   sockio.Socket // reads and writes nc for br and bw (with recv and send)
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	ctx    context.Context // the base of each request's context
	state  atomic.Int32    // connIdle, connActive, connClosed; Shutdown reads it

	// What was read for the current request's head, to hand the
	// connection over with it.
	rec          []byte
	recording    bool
	limit        int       // bytes a request head may read from the connection
	headRead     int       // bytes read from it for the current head
	headDeadline time.Time // when the head must be in; zero: no bound
	// deadline is the read deadline set on nc (zero: none); the client
	// watch changes it while it runs (see setReadDeadline).
	deadline time.Time

	// Waiting for the next request before reading it (see waitRequest).
	raw       syscall.RawConn // nil when nc is not a socket
	waitFn    func(uintptr) bool
	peekFn    func(uintptr) bool
	waited    bool
	peeked    bool
	readable  bool // waitRequest saw the request arrive: the read finds it
	readFirst int  // requests left to read first, as Go does: an arrival went unseen (see readFirstSpan)
	afterPOST bool // the last request was a POST (see skipLineEnds)
	idle      time.Duration
	unflushed bool // the last answer waits in bw for waitRequest to write it
	quit      bool // waitRequest's callback ended the connection

	// The client watch: watch starts watchClient after ClientWatchDelay;
	// watchClient reports on watchDone when it ends. pending holds a byte it
	// read ahead, served to br before the connection.
	watch      *time.Timer
	watchArmed atomic.Bool // for the current request (see serveRequest, armAfterBody)
	watchDone  chan struct{}
	cancel     context.CancelCauseFunc
	pending    []byte

	// What the client watch interrupts besides the request's context: the
	// node connection a direct exchange waits on (see onAbandon).
	abandonMu sync.Mutex
	abandoned bool   // the client went away during this request
	served    bool   // the handler returned: armAfterBody does nothing
	ending    bool   // endWatch is stopping the watch
	interrupt func() // registered by onAbandon
	unwatchFn func() bool

	resp   response    // the current request's, reused
	header http.Header // its header map, cleared for each request

	// The parts of a request readPlainRequest parses, reused: the handler
	// gets reqBase itself, with the request's context, and must not keep
	// it (or its URL, header or body) past ServeHTTP.
	reqBase   http.Request
	reqURL    url.URL
	reqHeader http.Header
	reqVals   []string
	reqBody   fixedBody
}

// wantsClose reports whether req asks for its connection to end after its
// answer, as net/http's server decides it (Request.wantsClose): req.Close,
// which splits the Connection header at commas, or "close" as a word of
// the first Connection value where spaces and tabs also part words
// ("Connection: keep-alive close", or a folded line joined so).
func wantsClose(req *http.Request) bool {
	if req.Close {
		return true
	}
	v := ""
	if vv := req.Header["Connection"]; len(vv) > 0 {
		v = vv[0]
	}
	return hasToken(v, "close")
}

// hasToken is net/http's: whether token, ASCII case aside, is in v
// between word boundaries (start, end, space, comma, tab).
func hasToken(v, token string) bool {
	for sp := 0; sp+len(token) <= len(v); sp++ {
		if sp > 0 && !isTokenBoundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !isTokenBoundary(v[end]) {
			continue
		}
		if asciiEqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}

// asciiEqualFold reports whether a and b are equal, ASCII case aside
// (no Unicode folding: a header is bytes).
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isTokenBoundary(b byte) bool { return b == ' ' || b == ',' || b == '\t' }

var errTooLarge = errors.New("request head larger than max_header_bytes")

// Read feeds br: first a byte the client watch read ahead, then the
// connection. While recording, what is read is kept for a hand-over.
func (c *srvConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if c.recording {
			c.rec = append(c.rec, p[:n]...)
		}
		return n, nil
	}
	if c.recording {
		// net/http's limit, to the byte: it counts what is read from the
		// connection for the head, not what the buffer held already (the
		// start of a pipelined request).
		if c.headRead >= c.limit {
			return 0, errTooLarge
		}
		if len(p) > c.limit-c.headRead {
			p = p[:c.limit-c.headRead]
		}
	}
	readable := c.readable
	switch {
	case readable:
		c.readable = false // the request is there: no deadline to set
	case !c.recording && !c.deadline.IsZero():
		c.setReadDeadline(time.Time{}) // the wait's, or the head's: not a body's
	}
	n, err := c.sock.Read(p)
	if readable && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		// The wait saw the request arrive, but this goroutine ran again
		// only after the wait's bound had passed (a busy process), and a
		// read whose deadline passed fails before it looks. The request
		// is there: read it without the bound.
		c.setReadDeadline(time.Time{})
		n, err = c.sock.Read(p)
	}
	if c.recording {
		c.rec = append(c.rec, p[:n]...)
		c.headRead += n
	}
	return n, err
}

// setReadDeadline sets the connection's read deadline unless it is set
// to t already. A deadline costs a timer operation in the runtime, about
// as much as a small system call: the serve loop sets one only when a
// read may wait on it.
func (c *srvConn) setReadDeadline(t time.Time) {
	if t.Equal(c.deadline) {
		return
	}
	_ = c.nc.SetReadDeadline(t)
	c.deadline = t
}

// requestWait bounds waitRequest's wait; after it, a read looks.
const requestWait = 25 * time.Millisecond

// readFirstSpan is how many requests a connection reads first, without
// waiting, after a wait ran out its bound and a request was there all the
// same. A pipelining client sends its next request before the answer, so
// the wait cannot see it arrive (a read-ahead is not an arrival it waits
// for), and each wait would cost it requestWait; but a goroutine that
// merely ran late (a stall of the process, CPU throttling) ends the same
// way, and its connection would otherwise make a read that finds nothing
// for every request of its life. After the span, the connection waits
// first again: a pipelining client then pays requestWait once per span.
// Atomic, for tests: one sets it while connections of earlier tests may
// still run.
var readFirstSpan atomic.Int32

func init() { readFirstSpan.Store(1024) }

// Set by tests: testHookAfterWait runs when waitRequest saw a request
// arrive, before it is read; testHookWaitBound when its bound ran out.
// Atomic: a test sets them while connections of earlier tests may still
// be ending.
var testHookAfterWait, testHookWaitBound atomic.Pointer[func()]

// waitRequest waits until the next request arrives, without reading: the
// read that follows finds it. It saves a system call per request: Go's
// reads try the socket before they wait for it, and right after an
// answer the next request is never there yet (a read that finds nothing
// costs 1.1–1.7 µs on a virtual machine).
//
// Waiting first is safe when the request arrives after the wait began.
// The poller's memory of an arrival is cleared as the wait begins, so a
// request that came between the last read and now (a client that
// pipelines: it cannot have answered this connection's last answer yet)
// goes unseen; the wait is bounded by requestWait, after which a peek
// tells, and such a connection reads first from then on. An idle
// connection's wait goes on under the idle timeout, read first.
func (c *srvConn) waitRequest(idle time.Duration) bool {
	want := time.Now().Add(requestWait)
	if d := want.Sub(c.deadline); d < 0 || d > requestWait/16 {
		c.setReadDeadline(want)
	}
	c.waited, c.quit = false, false
	err := c.raw.Read(c.waitFn)
	if c.unflushed && !c.goIdle() { // the wait never began: the connection failed
		return false
	}
	if c.quit {
		return false
	}
	if err == nil {
		c.readable = true
		if h := testHookAfterWait.Load(); h != nil {
			(*h)()
		}
		return true
	}
	// The bound ran out (or the connection failed: the read says so). A
	// deadline in the past fails a RawConn's Read before its callback:
	// the idle one goes first.
	if h := testHookWaitBound.Load(); h != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		(*h)()
	}
	if idle > 0 {
		c.armIdle(idle)
	} else {
		c.setReadDeadline(time.Time{})
	}
	c.peeked = false
	_ = c.raw.Read(c.peekFn)
	if c.peeked {
		c.readFirst = int(readFirstSpan.Load())
	}
	return true
}

// waitThenGo is waitRequest's callback, made once per connection: wait,
// then done.
//
// The last answer, when finish left it in bw, is written here: once the
// wait has begun, so that a client that sends its next request only on
// this answer (any client that does not pipeline) cannot send it before
// the wait can see it arrive.
func (c *srvConn) waitThenGo(uintptr) bool {
	if c.waited {
		return true
	}
	c.waited = true
	if c.unflushed && !c.goIdle() {
		c.quit = true
		return true
	}
	return false
}

// peekArrived is waitRequest's check after its bound: did a request
// arrive unseen?
func (c *srvConn) peekArrived(fd uintptr) bool {
	var b [1]byte
	for {
		n, errno := sockio.Peek(fd, b[:])
		if errno == syscall.EINTR {
			continue
		}
		c.peeked = errno == 0 && n > 0
		return true
	}
}

// armIdle bounds the wait for the next request by the idle timeout. A
// deadline set for an earlier wait is kept while it falls no more than
// idle/64 short of now+idle: a busy connection moves it about once in
// idle/64 rather than twice a request, and the wait ends at most 1.6%
// early.
func (c *srvConn) armIdle(idle time.Duration) {
	want := time.Now().Add(idle)
	if d := want.Sub(c.deadline); d >= 0 && d <= idle/64 {
		return
	}
	c.setReadDeadline(want)
}

func (c *srvConn) serve() {
	handedOff := false
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.srv.logf("proxy: panic serving %s: %v", c.remote, v)
		}
		c.watch.Stop()
		// What is buffered goes out before the connection closes, as
		// net/http's server flushes its buffer: the last answer held for
		// the wait, or what an aborted answer had written.
		if c.unflushed || !handedOff && c.bw.Buffered() > 0 {
			_ = c.bw.Flush()
		}
		if !handedOff {
			c.nc.Close()
		}
		c.srv.forget(c)
	}()
	hs := c.srv.hs
	idle := hs.IdleTimeout
	if idle <= 0 {
		idle = hs.ReadTimeout
	}
	c.idle = idle
	headTimeout := hs.ReadHeaderTimeout
	if headTimeout <= 0 {
		headTimeout = hs.ReadTimeout
	}
	for first := true; ; first = false {
		// Wait for a request. The first request's head counts from the
		// connection's start, as net/http's does: a client that connects
		// and sends nothing is held for the header timeout, not the idle
		// one. A later request's head counts from its first byte.
		c.rec = append(c.rec[:0], c.buffered()...)
		c.recording, c.headRead = true, 0
		c.headDeadline = time.Time{}
		switch {
		case first && headTimeout > 0:
			c.headDeadline = time.Now().Add(headTimeout)
			c.setReadDeadline(c.headDeadline)
		case !first && c.unflushed:
			// Only an answer held back for the wait makes waiting first
			// safe: one written whole already (a large one) may have been
			// answered by the next request before the wait begins.
			if !c.waitRequest(idle) {
				return
			}
		case idle > 0:
			c.armIdle(idle)
		default:
			c.setReadDeadline(time.Time{})
		}
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !first && !c.nextArrived(idle) {
			return
		}
		if c.afterPOST {
			c.skipLineEnds(headTimeout)
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // Shutdown closed it
		}
		// Nearly every head is whole in the buffer by now: it is parsed
		// without another read, so the deadline the wait had is left as it
		// is (Read and the client watch clear it before a read of the
		// request's own). Only a head still coming gets its own bound.
		req, plain := c.readPlainRequest()
		var err error
		if !plain {
			switch {
			case !first && headTimeout > 0:
				c.headDeadline = time.Now().Add(headTimeout)
				c.setReadDeadline(c.headDeadline)
			case !first:
				c.setReadDeadline(time.Time{})
			}
			req, err = http.ReadRequest(c.br)
			if err == nil && req.Method == "PRI" && req.RequestURI == "*" && req.Proto == "HTTP/2.0" {
				// The HTTP/2 preface: net/http reads its rest without a
				// deadline once it has the head. It comes within the
				// head's (and is recorded for the hand-over), or the
				// connection ends.
				_, err = c.br.Peek(len(prefaceRest))
			}
		}
		c.recording = false
		if err != nil && !errors.Is(err, errTooLarge) && isCommonNetReadError(err) {
			return
		}
		if err != nil || !plain && !h1.ServerTakes(req, c.rec[:len(c.rec)-c.br.Buffered()]) {
			handedOff = c.handOff()
			return
		}
		c.afterPOST = req.Method == http.MethodPost
		if c.readFirst > 0 {
			c.readFirst--
		}
		if !c.serveRequest(req) {
			return
		}
		if c.unflushed {
			continue // waitRequest writes the answer, then goes idle
		}
		if !c.state.CompareAndSwap(connActive, connIdle) || c.srv.shuttingDown.Load() {
			return
		}
	}
}

// nextArrived is the end of the wait for a request after the first, as
// net/http's server waits (conn.serve's Peek(4)): until 4 bytes of it
// are here, under the idle timeout, before the head's limit and timeout
// start. What the wait read does not count toward the limit (a request
// sent after its answer may be up to a read of the buffer longer than
// the first); a connection that ends, or idles out, with fewer than 4
// bytes of a request is closed without an answer. It reports false then.
func (c *srvConn) nextArrived(idle time.Duration) bool {
	if c.br.Buffered() < 4 {
		if idle > 0 {
			c.armIdle(idle)
		} else {
			c.setReadDeadline(time.Time{})
		}
		if _, err := c.br.Peek(4); err != nil {
			return false
		}
	}
	c.headRead = 0
	return true
}

// skipLineEnds drops the CR and LF bytes, up to four, that start what
// follows a POST: net/http's server tolerates them (RFC 9112 section 2.2:
// old clients end a POST's body with CRLF), and would otherwise answer
// the next request 400. As net/http's, it waits for four bytes first
// (under the head's bound), and leaves any error to the head's read.
func (c *srvConn) skipLineEnds(headTimeout time.Duration) {
	b := c.buffered()
	if b[0] != '\r' && b[0] != '\n' {
		return
	}
	if len(b) < 4 {
		c.headDeadline = time.Time{}
		if headTimeout > 0 {
			c.headDeadline = time.Now().Add(headTimeout)
		}
		c.setReadDeadline(c.headDeadline)
		b, _ = c.br.Peek(4)
	}
	n := 0
	for n < min(len(b), 4) && (b[n] == '\r' || b[n] == '\n') {
		n++
	}
	_, _ = c.br.Discard(n)
	c.rec = append(c.rec[:0], c.rec[n:]...) // they were its first bytes
}

// prefaceRest is what follows the head "PRI * HTTP/2.0\r\n\r\n" in the
// HTTP/2 client preface.
const prefaceRest = "SM\r\n\r\n"

// canWaitFirst reports whether the wait for the next request may begin
// before a read (waitRequest): on a socket, unless an arrival went unseen
// in the last readFirstSpan requests, when nothing of the next request is
// here yet.
func (c *srvConn) canWaitFirst() bool {
	return c.raw != nil && c.readFirst == 0 && (c.idle <= 0 || c.idle > requestWait) &&
		c.br.Buffered() == 0 && len(c.pending) == 0
}

// goIdle writes the answer finish left in bw and marks the connection
// idle; it reports false when the connection is to close (the write
// failed, or Shutdown began).
func (c *srvConn) goIdle() bool {
	c.unflushed = false
	if err := c.bw.Flush(); err != nil {
		return false
	}
	return c.state.CompareAndSwap(connActive, connIdle) && !c.srv.shuttingDown.Load()
}

// readPlainRequest parses the request whose head is whole in br, when
// h1.ParseRequest takes it (nearly every request of an application): it
// then takes the direct path. Otherwise it reports false and consumes
// nothing.
func (c *srvConn) readPlainRequest() (*http.Request, bool) {
	b, _ := c.br.Peek(c.br.Buffered())
	n, bareLF := h1.HeadEnd(b)
	if n <= 0 || bareLF {
		return nil, false
	}
	clear(c.reqHeader)
	var ok bool
	r := &c.reqBase
	if c.reqVals, ok = h1.ParseRequest(string(b[:n]), r, &c.reqURL, c.reqHeader, c.reqVals); !ok {
		return nil, false
	}
	_, _ = c.br.Discard(n)
	if r.ContentLength > 0 {
		c.reqBody = fixedBody{br: c.br, n: r.ContentLength}
		r.Body = &c.reqBody
	}
	return r, true
}

// buffered is what br holds beyond the last request: the start of the next.
func (c *srvConn) buffered() []byte {
	b, _ := c.br.Peek(c.br.Buffered())
	return b
}

// isCommonNetReadError reports a client that went away or timed out while
// a request head was awaited: the connection just closes. As net/http's,
// it does not cover an end inside a head (io.ErrUnexpectedEOF: a client
// that half-closed there): net/http answers that 400, and so does the
// hand-over.
func isCommonNetReadError(err error) bool {
	if err == io.EOF || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handOff gives the connection, with every byte read for the request
// head, to the net/http server. It reports whether it was taken.
func (c *srvConn) handOff() bool {
	c.setReadDeadline(time.Time{})
	prefix := append([]byte(nil), c.rec...)
	return c.srv.handoff.give(&prefixConn{Conn: c.nc, prefix: prefix, headDeadline: c.headDeadline, srv: c.srv})
}

// serveRequest runs the handler for req and finishes its response. It
// reports whether the connection can carry another request.
func (c *srvConn) serveRequest(req *http.Request) bool {
	delete(req.Header, "Host")
	req.RemoteAddr = c.remote
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	*req = *req.WithContext(ctx) // in place: the copy stays on the stack
	c.cancel = cancel
	c.abandoned = false // the watch is not running: no lock needed
	clear(c.header)
	w := &c.resp
	*w = response{c: c, head: req.Method == http.MethodHead, wantsClose: wantsClose(req), header: c.header, contentLength: -1, held: w.held[:0]}
	var body *directBody
	if req.Body != http.NoBody {
		body = &directBody{rc: req.Body, c: c}
		c.served = false // no goroutine reads the body yet
		req.Body = body
		w.body = body
	} else if c.br.Buffered() == 0 {
		c.watchArmed.Store(true)
		c.watch.Reset(ClientWatchDelay)
	}
	c.srv.handler.ServeHTTP(w, req)
	if body != nil {
		c.abandonMu.Lock()
		c.served = true // from here on, no read of the body arms the watch
		c.abandonMu.Unlock()
	}
	if c.watchArmed.Swap(false) {
		c.endWatch()
	}
	return w.finish()
}

// directBody is a request body on the direct path. Its Close does not read
// the rest without bound (http.ReadRequest's bodies do); the response
// drops what the handler left, up to maxBodyDrain.
//
// As net/http's, it may be read by another goroutine than the handler's
// (a transport sending it on), even after the handler returned: mu
// serialises reads, Close and drain, and once closed (by Close, or by the
// drain that ends the request) a read gets http.ErrBodyReadAfterClose, so
// that nothing but the server reads the connection from then on.
type directBody struct {
	rc io.ReadCloser
	// c's armAfterBody runs, with mu held, when a read first reaches the
	// body's end before Close; nil: nothing runs.
	c *srvConn

	mu     sync.Mutex
	eof    bool // read to its end: the connection is at the next request
	broken bool // a read failed (a corrupt chunk, a short body, a timeout)
	closed bool
}

// Read reads the body. Only its end (io.EOF) leaves the connection at a
// request boundary: after any other error, what remains on the wire is
// not a request and must never be read as one (net/http's rule).
func (b *directBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.read(p)
}

// read is Read with mu held.
func (b *directBody) read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		if !b.eof && !b.closed && b.c != nil {
			b.c.armAfterBody()
		}
		b.eof = true
	case err != nil:
		b.broken = true
	}
	return n, err
}

// Close ends reading: a later Read gets http.ErrBodyReadAfterClose. What
// is left is the server's to drop (drain).
func (b *directBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// atEnd reports whether the body was read to its end.
func (b *directBody) atEnd() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// drain closes the body, reads and drops what is left of it, and reports
// whether it all went (the connection can carry the next request). A read
// in progress on another goroutine ends first.
func (b *directBody) drain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof || b.broken {
		return b.eof
	}
	n, err := io.CopyN(io.Discard, readFunc(b.read), maxBodyDrain+1)
	ok := n <= maxBodyDrain && err != nil && b.eof && errors.Is(err, io.EOF)
	if !ok {
		b.broken = true // the connection closes: never drain again
	}
	return ok
}

// readFunc is a func as an io.Reader.
type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// endWatch stops the armed client watch, and waits for it if it started.
func (c *srvConn) endWatch() {
	if c.watch.Stop() {
		return
	}
	c.deadline = time.Unix(1, 0) // the watch may have changed it: the next wait sets its own
	select {
	case <-c.watchDone: // ran and ended already
		return
	default:
	}
	c.abandonMu.Lock()
	c.ending = true
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	c.abandonMu.Unlock()
	<-c.watchDone
	c.ending = false
}

var errClientGone = errors.New("the client closed the connection")

// watchClient runs on its own goroutine once a request has run for
// ClientWatchDelay: a read that ends with an error means the client went
// away, and cancels the request; a byte read is the next request and is
// kept for it.
func (c *srvConn) watchClient() {
	defer func() { c.watchDone <- struct{}{} }()
	var b [1]byte
	for {
		n, err := c.nc.Read(b[:])
		if n > 0 {
			c.pending = append(c.pending[:0], b[0])
			return
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			break // the client went away
		}
		// endWatch interrupted the read, or the deadline of the wait
		// for this request ran out: the request has no read deadline.
		c.abandonMu.Lock()
		ending := c.ending
		if !ending {
			_ = c.nc.SetReadDeadline(time.Time{})
		}
		c.abandonMu.Unlock()
		if ending {
			return
		}
	}
	c.cancel(errClientGone)
	c.abandonMu.Lock()
	c.abandoned = true
	interrupt := c.interrupt
	c.interrupt = nil
	c.abandonMu.Unlock()
	if interrupt != nil {
		interrupt()
	}
}

// onAbandon arranges for interrupt to run if the client goes away during
// the current request (at once if it has), until the stop it returns is
// called; stop reports false when interrupt ran or runs. It does for a
// direct exchange what context.AfterFunc on the request's context would,
// without allocating: that context is cancelled only by the client watch.
func (c *srvConn) onAbandon(interrupt func()) (stop func() bool) {
	c.abandonMu.Lock()
	if c.abandoned {
		c.abandonMu.Unlock()
		interrupt()
		return c.unwatchFn
	}
	c.interrupt = interrupt
	c.abandonMu.Unlock()
	return c.unwatchFn
}

// armAfterBody arms the client watch for a request whose body was read
// to its end, when nothing of a next request is buffered: what is left on
// the connection is then the client's next request or its going away, as
// for a request without a body (armed by serveRequest at once), and as
// net/http's server watches once a body hits its end. A body's reads use
// the connection, so a request with one is not watched before.
//
// It runs on the goroutine that reads the body, with the body's mu held:
// the handler's, or a transport's sending the body on while the handler
// waits for the node (nothing else reads br meanwhile). Once the handler
// has returned (served) it does nothing: serveRequest ends only a watch
// armed before that.
func (c *srvConn) armAfterBody() {
	if c.br.Buffered() > 0 {
		return
	}
	c.abandonMu.Lock()
	defer c.abandonMu.Unlock()
	if !c.served {
		c.watchArmed.Store(true)
		c.watch.Reset(ClientWatchDelay)
	}
}

func (c *srvConn) unwatch() bool {
	c.abandonMu.Lock()
	defer c.abandonMu.Unlock()
	c.interrupt = nil
	return !c.abandoned
}

// prefixConn is a connection handed over with what was read from it, and
// the time its request head was due: net/http's first deadline for it is
// kept to that, so a slow client does not get a second header timeout.
type prefixConn struct {
	net.Conn
	prefix       []byte
	headDeadline time.Time
	// srv is the server that handed it over (immutable); closed is set,
	// under srv.mu, once it is closed.
	srv    *Server
	closed bool
}

// Close closes the connection and, if it was hijacked, forgets it.
func (p *prefixConn) Close() error {
	p.srv.mu.Lock()
	p.closed = true
	delete(p.srv.hijacked, p)
	p.srv.mu.Unlock()
	return p.Conn.Close()
}

// SetReadDeadline sets the read deadline; the first one (net/http's for
// the head) is no later than the head's due time.
func (p *prefixConn) SetReadDeadline(t time.Time) error {
	if d := p.headDeadline; !d.IsZero() {
		p.headDeadline = time.Time{}
		if t.IsZero() || t.After(d) {
			t = d
		}
	}
	return p.Conn.SetReadDeadline(t)
}

// CloseWrite half-closes the connection, as net/http does before it
// closes after an error answer (net.Conn does not promote it).
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// handoffListener is the listener the net/http server serves: it accepts
// the connections the direct path hands over.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// response is the http.ResponseWriter of a direct request. The header is
// written with the first body bytes (or at the end), framed by the
// handler's Content-Length, else chunked — or, when the handler ended
// without flushing a small body, with the length it wrote.
type response struct {
	c *srvConn
	// What the answer needs of its request, taken before the handler runs
	// (which may change the request, as net/http's server assumes too).
	head          bool // a HEAD request
	wantsClose    bool // Connection: close
	header        http.Header
	status        int
	wroteHeader   bool // the handler called WriteHeader (or Write)
	committed     bool // the header is on its way to the client
	noBody        bool // HEAD, 1xx, 204, 304
	chunked       bool
	contentLength int64 // -1: unknown
	written       int64
	held          []byte // body written and not yet out: a buffer of holdLimit bytes
	trailers      []string
	closeAfter    bool
	body          *directBody // nil without a request body
}

// holdLimit is the buffer net/http's ResponseWriter keeps in front of the
// connection's (bufferBeforeChunkingSize): the framing waits until it
// fills, and an aborted answer loses what it holds, as net/http's does.
const holdLimit = 2048

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader, w.status = true, code
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.header.Del("Content-Length")
		}
	}
}

// writeInformational sends a 1xx answer with the current header at once,
// without the headers that would frame a body (net/http's
// excludedHeadersNoBody): a 1xx answer has none.
func (w *response) writeInformational(code int) {
	bw := w.c.bw
	writeStatusLine(bw, code)
	writeHeaderLines(bw, w.header, noBodyHeaders[:])
	bw.WriteString("\r\n")
	_ = bw.Flush()
}

// noBodyHeaders are the headers a 1xx answer is written without.
var noBodyHeaders = [...]string{"Content-Length", "Transfer-Encoding"}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.noBody {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	// Through the buffer, as bufio.Writer would: what does not fit goes
	// out, and what it holds when an answer is aborted never does.
	n := len(p)
	for len(p) > holdLimit-len(w.held) {
		if len(w.held) == 0 {
			return n, w.emit(p) // written through
		}
		k := holdLimit - len(w.held)
		w.held = append(w.held, p[:k]...)
		p = p[k:]
		if err := w.emit(nil); err != nil {
			return n - len(p), err
		}
	}
	w.held = append(w.held, p...)
	return n, nil
}

// emit writes body bytes out of the buffer to the connection's: what it
// holds, or p (then it holds nothing), after the header if it has not
// gone out yet.
func (w *response) emit(p []byte) error {
	if len(w.held) > 0 {
		p = w.held
	}
	if !w.committed {
		w.commit(false, p)
	}
	err := w.writeBody(p)
	w.held = w.held[:0]
	return err
}

func (w *response) writeBody(p []byte) error {
	bw := w.c.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		return err
	}
	_, err := bw.Write(p)
	return err
}

// Flush implements http.Flusher: what was written goes to the client.
func (w *response) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(w.held) > 0 {
		_ = w.emit(nil)
	} else if !w.committed {
		w.commit(false, nil)
	}
	_ = w.c.bw.Flush()
}

// commit decides the framing and writes the status line and header.
// ended says the handler has returned (the buffer then holds the whole
// body); next is the body about to be written, to sniff its type.
func (w *response) commit(ended bool, next []byte) {
	w.committed = true
	h := w.header
	_, handlerTE := h["Transfer-Encoding"]
	if tr := h["Trailer"]; len(tr) > 0 && !w.noBody {
		for _, v := range tr {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
		w.chunked = true // trailers need chunks
	}
	if !w.noBody && w.contentLength < 0 && !w.chunked {
		if ended {
			w.contentLength = int64(len(w.held))
			h.Set("Content-Length", strconv.Itoa(len(w.held)))
		} else {
			w.chunked = true
		}
	}
	if w.chunked {
		w.contentLength = -1
		h.Del("Content-Length")
		h.Set("Transfer-Encoding", "chunked")
	} else if w.noBody {
		h.Del("Transfer-Encoding")
	}
	switch {
	case w.status == http.StatusNotModified || w.status == http.StatusNoContent:
		// What net/http's server suppresses (RFC 9110 8.6, 15.4.5).
		h.Del("Content-Length")
		if w.status == http.StatusNotModified {
			h.Del("Content-Type")
		}
	case w.noBody, handlerTE, h.Get("Content-Encoding") != "":
		// Nothing to sniff, or an encoded body (net/http's rule).
	default:
		if _, ok := h["Content-Type"]; !ok {
			if len(next) == 0 {
				next = w.held
			}
			if len(next) > 0 {
				h.Set("Content-Type", http.DetectContentType(next))
			}
		}
	}
	if w.closes(ended) {
		h.Set("Connection", "close")
	}
	bw := w.c.bw
	writeStatusLine(bw, w.status)
	writeHeaderLines(bw, h, w.trailers)
	if _, ok := h["Date"]; !ok {
		writeHeaderLine(bw, "Date", h1.Date(time.Now()))
	}
	bw.WriteString("\r\n")
}

// closes decides whether the connection ends after this answer, records
// it in closeAfter and reports it: when the handler left a request body
// (dropped instead when small and the handler has ended), when the client
// or the handler asked for it, or when the server is shutting down.
func (w *response) closes(ended bool) bool {
	if w.body != nil && (ended && !w.body.drain() || !ended && !w.body.atEnd()) {
		w.closeAfter = true
	}
	if w.wantsClose || w.c.srv.shuttingDown.Load() || httpguts.HeaderValuesContainsToken(w.header["Connection"], "close") {
		w.closeAfter = true
	}
	return w.closeAfter
}

// BeginRaw implements RawWriter.
func (w *response) BeginRaw(status int, length int64) (string, io.Writer) {
	w.wroteHeader, w.committed, w.status, w.contentLength, w.written = true, true, status, length, length
	if w.closes(true) {
		return "Connection: close\r\n", w.c.bw
	}
	return "", w.c.bw
}

// BytesWritten is how many body bytes the answer has had so far.
func (w *response) BytesWritten() int64 { return w.written }

// OnAbandon implements client.Abandoner for the request (see
// srvConn.onAbandon): the handler's context is cancelled only by the
// client watch.
func (w *response) OnAbandon(interrupt func()) (stop func() bool) { return w.c.onAbandon(interrupt) }

// finish ends the response after the handler returned, and reports whether
// the connection can carry another request.
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	}
	if len(w.held) > 0 {
		_ = w.emit(nil)
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	// Cut short, the client must see the connection end.
	keep := !(w.contentLength >= 0 && w.written < w.contentLength && !w.noBody) && !w.closeAfter
	if keep && bw.Buffered() > 0 && w.c.canWaitFirst() {
		w.c.unflushed = true // waitRequest writes it once its wait began
		return true
	}
	if err := bw.Flush(); err != nil {
		return false
	}
	return keep
}

// writeTrailers writes the declared trailers and those set with
// http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.c.bw
	for _, k := range w.trailers {
		for _, v := range w.header[k] {
			writeHeaderLine(bw, k, v)
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				writeHeaderLine(bw, http.CanonicalHeaderKey(name), v)
			}
		}
	}
}

// writeStatusLine writes an HTTP/1.1 status line (h1.AppendStatusLine).
func writeStatusLine(bw *bufio.Writer, code int) {
	_, _ = bw.Write(h1.AppendStatusLine(bw.AvailableBuffer(), code))
}

// writeHeaderLines writes h except the keys in skip (an answer's
// trailers, or what a 1xx answer goes without) and TrailerPrefix keys.
func writeHeaderLines(bw *bufio.Writer, h http.Header, skip []string) {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || len(skip) > 0 && slices.Contains(skip, k) {
			continue
		}
		for _, v := range vv {
			writeHeaderLine(bw, k, v)
		}
	}
}

// writeHeaderLine writes one header line (h1.AppendHeaderLine).
func writeHeaderLine(bw *bufio.Writer, k, v string) {
	_, _ = bw.Write(h1.AppendHeaderLine(bw.AvailableBuffer(), k, v))
}

// fixedBody is a request body of known length read from the connection's
// buffer.
type fixedBody struct {
	br *bufio.Reader
	n  int64 // bytes left
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.br.Read(p)
	b.n -= int64(k)
	if err == io.EOF && b.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

func (b *fixedBody) Close() error { return nil }
