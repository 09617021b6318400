package tcp

import (
	"io"
	"net"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// relay starts Relay between the proxy-side ends of two pairs and returns
// the outer ends (client, node) and a channel closed when Relay returns.
func relay(t *testing.T, idle, total time.Duration) (client, node net.Conn, done chan struct{}) {
	client, in := pair(t)
	out, node := pair(t)
	done = make(chan struct{})
	go func() {
		defer close(done)
		Relay(in, out, idle, total)
	}()
	return client, node, done
}

func ended(t *testing.T, done chan struct{}, within time.Duration) bool {
	t.Helper()
	select {
	case <-done:
		return true
	case <-time.After(within):
		return false
	}
}

// timeouts.idle closes a relay on which nothing moved either way for that
// long, and only such a relay: bytes flowing one way keep it open.
func TestRelayIdleTimeout(t *testing.T) {
	_, _, done := relay(t, 150*time.Millisecond, 0)
	if !ended(t, done, 2*time.Second) {
		t.Fatal("an idle relay was not closed")
	}

	client, node, done := relay(t, 150*time.Millisecond, 0)
	go io.Copy(io.Discard, node)
	for range 12 { // 600 ms of a one-way trickle
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatalf("write on a busy relay: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ended(t, done, 0) {
		t.Fatal("a relay with bytes flowing one way was closed as idle")
	}
	if !ended(t, done, 2*time.Second) {
		t.Fatal("the relay was not closed once it went quiet")
	}
}

// timeouts.total closes a relay after that long, busy or not.
func TestRelayTotalTimeout(t *testing.T) {
	client, node, done := relay(t, 0, 200*time.Millisecond)
	go io.Copy(io.Discard, node)
	start := time.Now()
	for !ended(t, done, 20*time.Millisecond) {
		client.Write([]byte("x"))
		if time.Since(start) > 3*time.Second {
			t.Fatal("the relay outlived timeouts.total")
		}
	}
}

// A relay without timeouts ends when both sides are done, after passing
// each side's end on as a half-close.
func TestRelayHalfCloses(t *testing.T) {
	client, node, done := relay(t, 0, 0)
	client.Write([]byte("ping"))
	client.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(node)
	if string(got) != "ping" {
		t.Fatalf("node got %q", got)
	}
	node.Write([]byte("pong"))
	node.Close()
	got, _ = io.ReadAll(client)
	if string(got) != "pong" {
		t.Fatalf("client got %q", got)
	}
	if !ended(t, done, 2*time.Second) {
		t.Fatal("Relay did not return")
	}
}

// A peer that stops reading stalls the relay's write to it: with idle
// set, that counts as quiet too, and the relay ends. (The other direction
// may have ended already, so nothing else would notice.)
func TestRelayIdleTimeoutBoundsAStalledWrite(t *testing.T) {
	client, node, done := relay(t, 200*time.Millisecond, 0)
	node.(*net.TCPConn).CloseWrite() // the node is done sending, and reads no more
	go func() {
		chunk := make([]byte, 64<<10)
		for range 256 { // 16 MiB: far more than the socket buffers hold
			if _, err := client.Write(chunk); err != nil {
				return
			}
		}
	}()
	if !ended(t, done, 5*time.Second) {
		t.Fatal("a relay whose write to a peer that reads no more stalled was not closed")
	}
}
