package tcp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// Shutdown's deadline bounds it whatever the node does: a node that
// neither reads nor closes (a half-closed relay waits on it) is cut off
// with the client.
func TestShutdownBoundedByItsDeadline(t *testing.T) {
	node, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := node.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never read, never closed until the end
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	defer func() {
		node.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()

	s := serverFor(t, node.Addr().String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("the node got no connection")
	}

	sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(sctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Shutdown with a connection still open at its deadline returned nil; want the deadline's error")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return within 3 s of its 100 ms deadline")
	}
}

// serverFor is a tcp.Server for the upstream "svc" whose one node is at
// addr, once the upstream has it.
func serverFor(t *testing.T, addr string) *tcp.Server {
	t.Helper()
	reg := discoverytest.NewRegistry()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	reg.Set("svc", discovery.Instance{ID: "n1", Address: host, Port: p, Weight: 1, Healthy: true})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u := upstream.New(upstream.Config{Name: "svc"})
	w, _ := reg.Watch(ctx, "svc")
	go u.Run(ctx, w)
	for u.Snapshot().Available == 0 {
		time.Sleep(time.Millisecond)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	return &tcp.Server{Lookup: func() *upstream.Upstream { return u }, Log: logrus.NewEntry(log)}
}

// gatedListener hands out the connections its listener accepts only when
// released, and takes Close as a signal without closing the socket: a
// test can make Accept return a connection after Shutdown began.
type gatedListener struct {
	net.Listener
	release chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	<-l.release
	return c, nil
}

func (l *gatedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// A connection the listener accepted is relayed, even when Shutdown began
// between the accept and its hand-over (as net/http serves a connection
// it accepted): it used to be closed unanswered, which a client sees as a
// reset, and a reload handing a port over to a new listener hit.
func TestConnectionAcceptedAsShutdownBeginsIsRelayed(t *testing.T) {
	node, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	go func() {
		for {
			c, err := node.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // echo
		}
	}()
	s := serverFor(t, node.Addr().String())
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	ln := &gatedListener{Listener: real, release: make(chan struct{}), closed: make(chan struct{})}
	go s.Serve(ln)
	client, err := net.Dial("tcp", real.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(sctx) }()
	<-ln.closed       // Shutdown began
	close(ln.release) // the accepted connection reaches Serve only now
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("a connection accepted as Shutdown began: %q %v; want it relayed", buf, err)
	}
	client.Close()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// errorOnceListener fails its first Accept with err.
type errorOnceListener struct {
	net.Listener
	err    error
	failed atomic.Bool
}

func (l *errorOnceListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, l.err
	}
	return l.Listener.Accept()
}

// An accept error (here ENOMEM) used to end Serve for good, leaving the
// socket open: clients connected and hung. Serve logs it, naming the
// listener, and relays the next connection.
func TestServeRelaysAfterAnAcceptError(t *testing.T) {
	node, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	go func() {
		for {
			c, err := node.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // echo
		}
	}()
	s := serverFor(t, node.Addr().String())
	logger, hook := logtest.NewNullLogger()
	s.Log = logger.WithField("listener", "upstream svc")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accErr := &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: os.NewSyscallError("accept4", syscall.ENOMEM)}
	done := make(chan error, 1)
	go func() { done <- s.Serve(&errorOnceListener{Listener: ln, err: accErr}) }()
	defer func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v; want nil after Close", err)
		}
	}()

	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("a connection after an accept error: %q %v; want it relayed", buf, err)
	}
	var warned bool
	for _, e := range hook.AllEntries() {
		logged, _ := e.Data[logrus.ErrorKey].(error)
		if e.Level == logrus.WarnLevel && e.Data["listener"] == "upstream svc" && errors.Is(logged, syscall.ENOMEM) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming the listener and ENOMEM; log: %v", hook.AllEntries())
	}
}

// The status a connection no node took stands for, in metrics and the
// access log: Remora out of its own resources is a 503 (it answered
// itself), a node that refused a 502, a connect that timed out a 504.
func TestStatusOfFailures(t *testing.T) {
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: %w", upstream.ErrLocalResources, dial(os.NewSyscallError("socket", syscall.EMFILE))), 503},
		{dial(os.NewSyscallError("connect", syscall.ECONNREFUSED)), 502},
		{dial(os.ErrDeadlineExceeded), 504},
		{upstream.ErrNoNode, 503},
		{upstream.ErrRateLimited, 429},
	} {
		if got := tcp.Status(tc.err); got != tc.status {
			t.Errorf("Status(%v) = %d; want %d", tc.err, got, tc.status)
		}
	}
}
