// Package tcp proxies raw TCP connections to the nodes of an upstream,
// with the same live node set, balancer and health as HTTP: a connect
// failure is observed (and ejects like any other) and retried on another
// node before the first byte is relayed.
package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// maxAttempts bounds the nodes tried for one connection.
const maxAttempts = 3

// Dial picks a node of up for a client at remoteAddr and connects to it,
// trying other nodes after a connect failure. The caller ends the returned
// node's attempt with n.Stats.End when the connection closes.
func Dial(ctx context.Context, up *upstream.Upstream, remoteAddr string, timeout time.Duration) (net.Conn, *node.Node, error) {
	snap := up.Snapshot()
	info := balancer.Info{RemoteAddr: remoteAddr}
	var tried []*node.Node
	var lastErr error = errors.New("no available node")
	for attempt := 0; attempt < maxAttempts && len(tried) < snap.Available; attempt++ {
		n := snap.Picker.Pick(info)
		for i := 0; n != nil && slices.Contains(tried, n) && i < 8; i++ {
			n = snap.Picker.Pick(balancer.Info{}) // a random other node
		}
		if n == nil || slices.Contains(tried, n) {
			break
		}
		tried = append(tried, n)
		began := time.Now()
		n.Stats.Begin(began)
		c, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", n.HostPort)
		if err != nil {
			n.Stats.End(time.Since(began), true)
			up.Observe(n, health.Outcome{Failure: health.ConnectFailure})
			lastErr = err
			continue
		}
		up.Observe(n, health.Outcome{Status: 200})
		return c, n, nil
	}
	return nil, nil, lastErr
}

// Splice copies both ways until both directions end, half-closing each
// side's write when the other's read ends.
func Splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// Accept returns the next connection on ln. After a temporary error
// (EMFILE and the like) it waits, 5 ms doubling up to 1 s, and accepts
// again, as net/http's server does (Temporary is deprecated for everything
// but this); other errors end it.
func Accept(ln net.Listener) (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		var ne interface{ Temporary() bool }
		if err == nil || !errors.As(err, &ne) || !ne.Temporary() {
			return c, err
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		time.Sleep(backoff)
	}
}

// Server accepts connections on a listener and relays each to a node of
// the upstream that lookup returns (looked up per connection, so a config
// reload takes effect for new connections).
type Server struct {
	Lookup         func() *upstream.Upstream
	ConnectTimeout time.Duration
	Log            *logrus.Entry

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve accepts on ln until Shutdown or Close (it then returns nil) or an
// accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		c, err := Accept(ln)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if !s.track(c, true) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.handle(c)
		}()
	}
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *Server) handle(c net.Conn) {
	up := s.Lookup()
	if up == nil {
		c.Close()
		return
	}
	timeout := s.ConnectTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	backend, n, err := Dial(context.Background(), up, c.RemoteAddr().String(), timeout)
	if err != nil {
		s.Log.WithError(err).WithField("upstream", up.Name()).Warn("tcp: no node reachable; closing the client connection")
		c.Close()
		return
	}
	start := time.Now()
	Splice(c, backend)
	n.Stats.End(time.Since(start), false)
}

// Shutdown closes the listener and waits for open connections to end until
// ctx is done, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
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
