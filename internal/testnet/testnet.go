// Package testnet serves raw TCP on loopback for tests: backends that
// misbehave on purpose, and listeners that count what reaches them.
package testnet

import (
	"bufio"
	"net"
	"sync"
	"testing"
)

// Serve listens on 127.0.0.1 and hands each accepted connection to handle
// on its own goroutine. When the test ends it closes the listener and every
// connection it accepted (handle may return and leave one open), and waits
// for the handlers. It returns the listener.
func Serve(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		accepted []net.Conn
		wg       sync.WaitGroup
		ended    bool
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if ended {
				mu.Unlock()
				c.Close()
				return
			}
			accepted = append(accepted, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		ended = true
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln
}

// ServeHeads is Serve for a node that reads requests without bodies: for
// each request head a connection brings (its lines, up to the blank one),
// it calls answer with the connection and its reader. The connection
// closes when answer returns false or the client ends it. It reads with
// ReadSlice, so that a benchmark's node allocates nothing a request.
func ServeHeads(t testing.TB, answer func(c net.Conn, br *bufio.Reader) bool) net.Listener {
	return Serve(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			switch {
			case err == bufio.ErrBufferFull: // a long line's start
			case err != nil:
				return
			case string(line) == "\r\n" && !answer(c, br):
				return
			}
		}
	})
}

// Counter is a listener that counts the connections it gets and closes
// them at once: the place a request must never reach.
type Counter struct {
	net.Listener
	mu sync.Mutex
	n  int
}

// Count starts a Counter that stops when the test ends.
func Count(t testing.TB) *Counter {
	t.Helper()
	c := &Counter{}
	c.Listener = Serve(t, func(conn net.Conn) {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
		conn.Close()
	})
	return c
}

// Accepted is the number of connections so far.
func (c *Counter) Accepted() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
