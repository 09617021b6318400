// Package tcp proxies raw TCP connections to the nodes of an upstream,
// through the same attempt path as HTTP (upstream.Call): the live node
// set, the balancer, the canary split (by weight, sticky on the client's
// address when the rule hashes it), the circuit breakers and outlier
// detection. A connect failure is observed (and ejects like any other) and
// retried on another node before the first byte is relayed (unless Remora
// itself is out of descriptors, ports or memory: that is neither observed
// nor retried); once relayed, a connection is bounded by the upstream's
// timeouts.idle and timeouts.total.
package tcp

import (
	"cmp"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/internal/ratelog"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// DefaultConnectTimeout bounds dialing a node unless told otherwise.
const DefaultConnectTimeout = 2 * time.Second

// Dial connects call, begun on its upstream, to one of its nodes, trying
// others after a connect failure (upstream.Call.Attempts' rules), each
// dial bounded by connectTimeout (DefaultConnectTimeout when 0). The
// caller ends call with End once the connection is done with.
func Dial(ctx context.Context, call *upstream.Call, connectTimeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: cmp.Or(connectTimeout, DefaultConnectTimeout), KeepAlive: 30 * time.Second}
	var conn net.Conn
	err := call.Attempts(ctx, false, func(n *node.Node, _ int) upstream.Attempt {
		c, err := d.DialContext(ctx, "tcp", n.HostPort)
		if err != nil {
			return upstream.Attempt{Err: err}
		}
		conn = c
		return upstream.Attempt{Status: StatusConnected}
	}, func() {})
	if err == nil {
		call.Established() // its latency is the connect's, not the relay's life
	}
	return conn, err
}

// StatusConnected is a relayed connection's status in metrics and access
// logs: the node was reached (as an HTTP 200 would say).
const StatusConnected = 200

// Status is the status that stands for err, a failure to reach a node, in
// metrics and access logs, as HTTP would answer it: 429 when rate_limit
// refused it, 503 when no node could be tried or Remora is out of local
// resources, 504 when the connect timed out, 502 otherwise.
func Status(err error) int {
	switch {
	case errors.Is(err, upstream.ErrRateLimited):
		return 429
	case errors.Is(err, upstream.ErrNoNode), errors.Is(err, upstream.ErrNotSynced), errors.Is(err, upstream.ErrBreakerOpen),
		errors.Is(err, upstream.ErrOverloaded), errors.Is(err, upstream.ErrCanaryEmpty), errors.Is(err, upstream.ErrLocalResources):
		return 503
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return 504
	}
	return 502
}

// Relay copies both ways between a and b until both directions end,
// half-closing each side's write when the other's read ends, then closes
// both. When idle is positive it closes both once no byte moved either way
// for that long; when total is positive, once the relay has lasted that
// long. It returns the bytes copied from a to b and from b to a.
//
// A panic in copying one way (a bug of Remora's or of a net.Conn's) is
// contained to the relay, on whose goroutines it happens: both connections
// are closed, Relay returns what was copied, and the panic is logged with
// its stack, once a minute at most, by logrus' standard logger (Relay has
// no logger; Server's relays log to its Log).
func Relay(a, b net.Conn, idle, total time.Duration) (aToB, bToA int64) {
	aToB, bToA, p := relayConns(a, b, idle, total)
	if p != nil {
		relayPanics.Log(relayLog, p, relayPanicked)
	}
	return aToB, bToA
}

// relayLog and relayPanics log the panics Relay contains.
var (
	relayLog    = logrus.NewEntry(logrus.StandardLogger())
	relayPanics panics.Log
)

const relayPanicked = "tcp: relaying a connection panicked; both its ends are closed"

// relayConns is Relay, returning the panic it contained (the first, if
// both directions panicked) instead of logging it.
func relayConns(a, b net.Conn, idle, total time.Duration) (aToB, bToA int64, panicked *panics.Error) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	if total > 0 {
		t := time.AfterFunc(total, closeBoth)
		defer t.Stop()
	}
	var last atomic.Int64 // when a byte last moved either way (node.MonoNow)
	last.Store(node.MonoNow())
	var wg sync.WaitGroup
	var first atomic.Pointer[panics.Error]
	pipe := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		defer func() {
			if v := recover(); v != nil {
				first.CompareAndSwap(nil, panics.New(v))
				closeBoth() // which ends the other direction
			}
		}()
		if idle <= 0 {
			*n, _ = io.Copy(dst, src) // splice(2) between TCP connections
		} else if !copyUntilIdle(dst, src, n, idle, &last) {
			closeBoth()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go pipe(b, a, &aToB)
	go pipe(a, b, &bToA)
	wg.Wait()
	closeBoth()
	return aToB, bToA, first.Load()
}

var relayBuffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

// copyUntilIdle copies src to dst, counting in n, until src ends (true)
// or the relay has been idle — no byte either way since last — for idle
// (false). Each read, and each write (a peer that reads no more stalls
// it), waits at most until the relay would be idle.
func copyUntilIdle(dst, src net.Conn, n *int64, idle time.Duration, last *atomic.Int64) bool {
	buf := relayBuffers.Get().(*[32 << 10]byte)
	defer relayBuffers.Put(buf)
	for {
		_ = src.SetReadDeadline(node.FromMono(last.Load()).Add(idle))
		k, err := src.Read(buf[:])
		if k > 0 {
			last.Store(node.MonoNow())
			if ok, idled := writeUntilIdle(dst, buf[:k], idle, last); !ok {
				return !idled
			}
			*n += int64(k)
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			if time.Since(node.FromMono(last.Load())) >= idle {
				return false
			}
		default:
			return true
		}
	}
}

// writeUntilIdle writes p to dst, each write waiting at most until the
// relay would be idle; bytes written count as the relay moving. It reports
// whether all of p went, and when not, whether the relay went idle (a
// peer that reads no more) rather than the write failing.
func writeUntilIdle(dst net.Conn, p []byte, idle time.Duration, last *atomic.Int64) (ok, idled bool) {
	defer dst.SetWriteDeadline(time.Time{})
	for len(p) > 0 {
		_ = dst.SetWriteDeadline(node.FromMono(last.Load()).Add(idle))
		w, err := dst.Write(p)
		if w > 0 {
			p = p[w:]
			last.Store(node.MonoNow())
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.As(err, &ne) && ne.Timeout():
			if time.Since(node.FromMono(last.Load())) >= idle {
				return false, true
			}
		default:
			return false, false
		}
	}
	return true, false
}

// Accept returns the next connection on ln, waiting out every error but
// ln's closing, as Acceptor does, without reporting them.
func Accept(ln net.Listener) (net.Conn, error) {
	var a Acceptor
	return a.Accept(ln)
}

// Acceptor accepts the connections of one listener. An accept error other
// than the listener's closing — out of file descriptors (EMFILE, ENFILE)
// or kernel memory (ENOMEM, ENOBUFS), a firewall's refusal (EPERM), a
// network error of a pending connection (which accept(2) says to treat as
// EAGAIN) — leaves the listener able to serve once it passes: Accept waits,
// 5 ms doubling up to 1 s as net/http's server does, and accepts again.
// Ending there would leave the socket open and unserved: clients would
// connect and hang. Only the listener's closing (net.ErrClosed) ends it.
//
// An Acceptor is used by one goroutine (its listener's accept loop); its
// zero value reports nothing.
type Acceptor struct {
	// Report, when set, is told of the accept errors waited out: the
	// first at once, then at most one a minute while they go on, with
	// how many came unreported since the last one reported (skipped).
	Report func(err error, skipped int)

	now   func() time.Time // time.Now; tests inject a clock
	limit ratelog.Limiter
}

// Accept returns the next connection on ln, or the error that says ln is
// closed.
func (a *Acceptor) Accept(ln net.Listener) (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil || errors.Is(err, net.ErrClosed) {
			return c, err
		}
		a.report(err)
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		time.Sleep(backoff)
	}
}

// report passes err to Report when it is the first or the last report is
// a minute old, and counts it as skipped otherwise.
func (a *Acceptor) report(err error) {
	if a.Report == nil {
		return
	}
	now := time.Now()
	if a.now != nil {
		now = a.now()
	}
	if ok, skipped := a.limit.Allow(now); ok {
		a.Report(err, skipped)
	}
}

// Server accepts connections on a listener and relays each to a node of
// the upstream that lookup returns (looked up per connection, so a config
// reload takes effect for new connections).
type Server struct {
	Lookup func() *upstream.Upstream
	// ConnectTimeout bounds dialing a node unless the upstream's
	// timeouts.connect says otherwise.
	ConnectTimeout time.Duration
	Log            *logrus.Entry
	// AccessLog, when set, gets one entry per connection, for a share
	// AccessLogSample (0..1; 0 means all) of them.
	AccessLog       *logrus.Entry
	AccessLogSample float64

	panics panics.Log // the relays'

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{} // clients' and nodes': Shutdown's deadline closes both
	closed bool                  // Shutdown or Close began: accept no more
	cut    bool                  // Shutdown's deadline passed: every connection is closed, new ones at once
	relays int                   // connections being handled
	idle   chan struct{}         // made by Shutdown, closed when relays falls to 0
}

// Serve accepts on ln until it is closed (Shutdown, Close): it then
// returns nil. Other accept errors are waited out (see Acceptor) and
// logged: the first at once, then at most one a minute while they go on.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	a := Acceptor{Report: s.logAcceptError}
	for {
		c, err := a.Accept(ln)
		if err != nil {
			return nil // closed
		}
		// A connection accepted is relayed, even when Shutdown began
		// meanwhile, as net/http serves a connection it accepted: closing
		// it would reset a client whose connect had succeeded.
		s.begin(c)
		go func() {
			defer s.end(c)
			s.handle(c)
		}()
	}
}

// logAcceptError logs an accept error Serve waits out.
func (s *Server) logAcceptError(err error, skipped int) {
	if s.Log == nil {
		return
	}
	s.Log.WithError(err).WithField("skipped", skipped).
		Warn("tcp: accept failed; accepting again (logged once a minute at most; skipped: errors since the last line)")
}

// begin counts c as a relay in progress, tracked for Shutdown.
func (s *Server) begin(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.relays++
	s.trackLocked(c)
}

// end counts the relay of c as finished.
func (s *Server) end(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if s.relays--; s.relays == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

// track adds (or removes) c, a connection Shutdown's deadline closes; it
// reports false when that deadline has passed (c is closed then).
func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	return s.trackLocked(c)
}

func (s *Server) trackLocked(c net.Conn) bool {
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	if s.cut {
		c.Close()
		return false
	}
	return true
}

// handle relays c to a node of the upstream.
//
// A panic on its goroutine, or on the relay's, is contained to c (the
// process, and every other connection, go on): it is logged with its
// stack (once a minute at most: it may come with every connection), c and
// its node connection are closed, and the call, if it began, is ended,
// so that what it held (its place under the circuit breaker, the node's
// in-flight count) is given back.
func (s *Server) handle(c net.Conn) {
	var (
		call    upstream.Call
		backend net.Conn
		ending  bool // call.End was called
	)
	defer func() {
		if v := recover(); v != nil {
			s.contain(panics.New(v), c, backend, &call, ending)
		}
	}()
	up := s.Lookup()
	if up == nil {
		c.Close()
		return
	}
	pol := up.Policy()
	remote := c.RemoteAddr().String()
	err := call.Begin(context.Background(), up, balancer.Info{RemoteAddr: remote})
	if err == nil {
		backend, err = Dial(context.Background(), &call, cmp.Or(pol.Timeouts.Connect, s.ConnectTimeout))
	}
	if err == nil {
		// Tracked too: a relay half-closed by its client waits on the
		// node, and Shutdown's deadline must end that wait.
		if !s.track(backend, true) {
			backend.Close()
			err = errors.New("tcp: shutting down")
		} else {
			defer s.track(backend, false)
		}
	}
	var in, out int64
	if err != nil {
		// Out of local resources, every connection may meet it: the
		// upstream logs it once a minute at most.
		if !errors.Is(err, upstream.ErrLocalResources) {
			s.Log.WithError(err).WithField("upstream", up.Name()).Warn("tcp: no node reachable; closing the client connection")
		}
		// Closed once the call has ended (below): a client that connects
		// again on seeing it closed must not find it still counted
		// against max_requests.
		defer c.Close()
	} else {
		var p *panics.Error
		in, out, p = relayConns(c, backend, pol.Timeouts.Idle, pol.Timeouts.Total)
		if p != nil {
			s.panics.Log(s.log().WithField("upstream", up.Name()).WithField("client", remote), p, relayPanicked)
		}
	}
	ending = true
	took := call.End(false)
	if s.AccessLog != nil && (s.AccessLogSample <= 0 || s.AccessLogSample >= 1 || rand.Float64() < s.AccessLogSample) {
		status := StatusConnected
		if err != nil {
			status = Status(err)
		}
		LogAccess(s.AccessLog, &call, status, took, false).WithFields(logrus.Fields{
			"protocol": "tcp", "client": remote, "bytes_in": in, "bytes_out": out,
		}).Info("connection")
	}
}

// contain ends the handling of c after the panic p: it is logged, c and
// backend (if any) are closed, and call, if it began and was not ending,
// is ended.
func (s *Server) contain(p *panics.Error, c, backend net.Conn, call *upstream.Call, ending bool) {
	s.panics.Log(s.log(), p, "tcp: handling a connection panicked; it is closed, with its node connection")
	if backend != nil {
		backend.Close()
	}
	// The call ends before c closes: a client that connects again on
	// seeing c closed must not find it still counted against
	// max_requests.
	if !ending && call.Upstream() != nil {
		if p := panics.Catch(func() { call.End(false) }); p != nil {
			s.panics.Log(s.log(), p, "tcp: ending the call of a connection whose handling panicked panicked too")
		}
	}
	c.Close()
}

// log is s.Log, or relayLog when it is nil.
func (s *Server) log() *logrus.Entry {
	if s.Log != nil {
		return s.Log
	}
	return relayLog
}

// LogAccess returns entry with the fields an access log entry of call
// has whatever its protocol: upstream, node and its address, pool, status,
// the reason and its flag when no node answered (gone: the client went
// away), the total duration and the kept attempt's (upstream_ms), and
// attempts.
func LogAccess(entry *logrus.Entry, call *upstream.Call, status int, took time.Duration, gone bool) *logrus.Entry {
	f := logrus.Fields{
		"upstream": call.Upstream().Name(), "pool": call.Pool().String(), "status": status,
		"duration_ms": ms(took), "attempts": call.Tries(),
	}
	if n := call.Node(); n != nil {
		f["node"], f["upstream_addr"], f["upstream_ms"] = n.ID, n.HostPort, ms(time.Since(call.Began()))
	}
	reason := call.Reason()
	if gone {
		reason = upstream.ReasonClientClosed
	}
	if reason != upstream.ReasonNone {
		f["reason"], f["flag"] = reason.String(), reason.Flag()
	}
	return entry.WithFields(f)
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Shutdown closes the listener and waits for open connections to end until
// ctx is done, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	if ctx.Err() != nil {
		s.cut = true // Close: a connection accepted from now on is closed too
	}
	if s.relays == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	done := s.idle
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		s.cut = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
