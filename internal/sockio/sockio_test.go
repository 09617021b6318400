package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair is a connected loopback TCP pair: local is what the code under test
// reads and writes, peer the other end.
func pair(t *testing.T) (local, peer *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	return c.(*net.TCPConn), p.(*net.TCPConn)
}

// reset makes peer's Close send a reset, and waits for it to arrive.
func reset(peer *net.TCPConn) {
	_ = peer.SetLinger(0)
	peer.Close()
	time.Sleep(50 * time.Millisecond)
}

// outcome is what one step returned, with the connection's addresses
// taken out of the error's text, so two connections compare.
type outcome struct {
	n     int
	err   string
	op    string
	is    []bool // io.EOF, ECONNRESET, EPIPE, os.ErrDeadlineExceeded, net.ErrClosed
	extra string
}

func outcomeOf(local net.Conn, n int, err error) outcome {
	o := outcome{n: n}
	if err == nil {
		return o
	}
	o.err = err.Error()
	o.err = strings.ReplaceAll(o.err, local.LocalAddr().String(), "LOCAL")
	o.err = strings.ReplaceAll(o.err, local.RemoteAddr().String(), "REMOTE")
	var oe *net.OpError
	if errors.As(err, &oe) {
		o.op = oe.Op
	}
	for _, target := range []error{io.EOF, syscall.ECONNRESET, syscall.EPIPE, os.ErrDeadlineExceeded, net.ErrClosed} {
		o.is = append(o.is, errors.Is(err, target))
	}
	return o
}

// The differential test: each case runs once on a net.Conn and once on a
// Socket, on connections of its own, and must come out the same.
func TestSocketActsAsItsConn(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	cases := []struct {
		name string
		run  func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome
	}{
		{"read what came", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			peer.Write([]byte("hello"))
			b := make([]byte, 16)
			n, err := rw.Read(b)
			return outcome{n: n, extra: string(b[:n]), err: errString(err)}
		}},
		{"read waits for what comes", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			time.AfterFunc(20*time.Millisecond, func() { peer.Write([]byte("late")) })
			b := make([]byte, 16)
			n, err := rw.Read(b)
			return outcome{n: n, extra: string(b[:n]), err: errString(err)}
		}},
		{"read nothing into nothing", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			n, err := rw.Read(nil)
			return outcomeOf(local, n, err)
		}},
		{"read the end", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			peer.Close()
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read the bytes, then the end", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			peer.Write([]byte("last"))
			peer.Close()
			b, err := io.ReadAll(rw)
			return outcome{n: len(b), extra: string(b), err: errString(err)}
		}},
		{"read a reset", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			reset(peer)
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read past its deadline", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			local.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read with a deadline passed before", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			peer.Write([]byte("there"))
			time.Sleep(20 * time.Millisecond)
			local.SetReadDeadline(time.Unix(1, 0))
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read interrupted while it waits", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			time.AfterFunc(20*time.Millisecond, func() { local.SetDeadline(time.Unix(1, 0)) })
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read a closed connection", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			local.Close()
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"read closed while it waits", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			time.AfterFunc(20*time.Millisecond, func() { local.Close() })
			n, err := rw.Read(make([]byte, 16))
			return outcomeOf(local, n, err)
		}},
		{"write nothing", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			n, err := rw.Write(nil)
			return outcomeOf(local, n, err)
		}},
		{"write more than the buffers hold, read as it goes", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			var got []byte
			var wg sync.WaitGroup
			wg.Go(func() { got, _ = io.ReadAll(peer) })
			n, err := rw.Write(big)
			local.CloseWrite()
			wg.Wait()
			return outcome{n: n, err: errString(err), extra: strings.Repeat("same", boolInt(bytes.Equal(got, big)))}
		}},
		{"write to a peer that reads nothing, past the deadline", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			local.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := rw.Write(big)
			o := outcomeOf(local, 0, err)
			o.extra = strings.Repeat("some but not all", boolInt(n > 0 && n < len(big)))
			return o
		}},
		{"write after a reset", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			reset(peer)
			n, err := rw.Write([]byte("x"))
			first := outcomeOf(local, n, err)
			n, err = rw.Write([]byte("y"))
			second := outcomeOf(local, n, err)
			first.extra = second.err
			return first
		}},
		{"write a closed connection", func(t *testing.T, local, peer *net.TCPConn, rw io.ReadWriter) outcome {
			local.Close()
			n, err := rw.Write([]byte("x"))
			return outcomeOf(local, n, err)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local, peer := pair(t)
			want := tc.run(t, local, peer, local)
			local, peer = pair(t)
			var s Socket
			s.Init(local)
			if s.Raw() == nil || s.sys != supported {
				t.Fatalf("a TCP connection: RawConn %v, recv and send %v", s.Raw(), s.sys)
			}
			got := tc.run(t, local, peer, &s)
			if !equal(got, want) {
				t.Errorf("Socket: %+v\nnet.Conn: %+v", got, want)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func equal(a, b outcome) bool {
	if a.n != b.n || a.err != b.err || a.op != b.op || a.extra != b.extra || len(a.is) != len(b.is) {
		return false
	}
	for i := range a.is {
		if a.is[i] != b.is[i] {
			return false
		}
	}
	return true
}

// A connection that is not a socket, or one whose bytes another layer
// may hold, is read and written as it is.
func TestSocketUsesAConnThatIsNotASocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var s Socket
	s.Init(a)
	if s.Raw() != nil {
		t.Fatal("net.Pipe got a RawConn")
	}
	go b.Write([]byte("piped"))
	buf := make([]byte, 8)
	if n, err := s.Read(buf); err != nil || string(buf[:n]) != "piped" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	local, _ := pair(t)
	var wrapped Socket
	wrapped.Init(struct{ net.Conn }{local})
	if wrapped.Raw() != nil {
		t.Fatal("a wrapped connection got a RawConn")
	}
}

func TestSocketAllocatesNothing(t *testing.T) {
	if !supported {
		t.Skip("a Socket is its net.Conn here")
	}
	local, peer := pair(t)
	var s Socket
	s.Init(local)
	msg, buf := make([]byte, 64), make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(&s, buf); err != nil {
			t.Fatal(err)
		}
	})
	// The peer's side is a net.Conn, which allocates nothing either.
	if allocs != 0 {
		t.Fatalf("%v allocations a round trip", allocs)
	}
	runtime.KeepAlive(peer)
}

// TestPeekLeavesWhatItFinds: Peek answers EAGAIN on an empty socket, sees
// bytes without taking them (the next read gets them), and 0 bytes with no
// error at the peer's end.
func TestPeekLeavesWhatItFinds(t *testing.T) {
	local, peer := pair(t)
	raw, err := local.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	peek := func() (n int, errno syscall.Errno, got string) {
		var b [8]byte
		if err := raw.Read(func(fd uintptr) bool {
			n, errno = Peek(fd, b[:])
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return n, errno, string(b[:n])
	}
	if n, errno, _ := peek(); n != 0 || errno != syscall.EAGAIN {
		t.Fatalf("an empty socket: Peek = %d, %v; want 0, EAGAIN", n, errno)
	}
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, errno, got := peek()
		if errno == 0 && n == 5 && got == "hello" {
			break
		}
		if errno != syscall.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("Peek = %d, %v, %q; want 5, 0, \"hello\"", n, errno, got)
		}
		time.Sleep(time.Millisecond)
	}
	var s Socket
	s.Init(local)
	b := make([]byte, 8)
	if n, err := s.Read(b); err != nil || string(b[:n]) != "hello" {
		t.Fatalf("the read after the peek: %q, %v; want the bytes peeked", b[:n], err)
	}
	peer.Close()
	for {
		n, errno, _ := peek()
		if errno == 0 && n == 0 {
			break
		}
		if errno != syscall.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("after the peer's end: Peek = %d, %v; want 0, 0", n, errno)
		}
		time.Sleep(time.Millisecond)
	}
}
