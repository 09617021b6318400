package tcp

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails its first Accepts with errs, then accepts from its
// listener; it counts the calls.
type flakyListener struct {
	net.Listener
	errs  []error
	calls int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls++
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// acceptError is the error net's listener returns when accept4(2)
// fails with errno.
func acceptError(addr net.Addr, errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: addr, Err: os.NewSyscallError("accept4", errno)}
}

// Nothing but the listener's closing ends Accept: out of descriptors
// (EMFILE, ENFILE, which it always waited out), out of kernel memory
// (ENOMEM, ENOBUFS), a firewall's refusal (EPERM) and the network errors
// accept(2) passes on from a pending connection (which its manual says to
// treat as EAGAIN) are waited out, and the listener serves on. Each error
// is reported: the first at once, the next ones of the same minute only
// counted.
func TestAcceptWaitsOutEveryErrorButClosing(t *testing.T) {
	for _, errno := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.EPERM,
		syscall.EPROTO, syscall.ENETDOWN, syscall.ENOPROTOOPT, syscall.EHOSTDOWN,
		syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH, syscall.ECONNABORTED,
	} {
		t.Run(errno.Error(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()

			var reported []error
			var skipped []int
			a := Acceptor{Report: func(err error, n int) { reported, skipped = append(reported, err), append(skipped, n) }}
			fl := &flakyListener{Listener: ln, errs: []error{acceptError(ln.Addr(), errno), acceptError(ln.Addr(), errno)}}
			c, err := a.Accept(fl)
			if err != nil {
				t.Fatalf("Accept gave up on a transient accept error: %v", err)
			}
			c.Close()
			if fl.calls != 3 {
				t.Errorf("%d accepts; want 3 (two errors, then the connection)", fl.calls)
			}
			if len(reported) != 1 || !errors.Is(reported[0], errno) || skipped[0] != 0 {
				t.Errorf("reported %v (skipped %v); want the first %v alone", reported, skipped, errno)
			}

			// The plain Accept, without a report, waits it out too.
			client2, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client2.Close()
			if c, err := Accept(&flakyListener{Listener: ln, errs: []error{acceptError(ln.Addr(), errno)}}); err != nil {
				t.Errorf("Accept gave up on a transient accept error: %v", err)
			} else {
				c.Close()
			}
		})
	}
}

// A closed listener ends Accept at once, also after errors it waited out,
// and also when it closes while Accept waits.
func TestAcceptEndsWhenTheListenerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr()
	go func() {
		time.Sleep(20 * time.Millisecond)
		ln.Close()
	}()
	if _, err := Accept(ln); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a listener closed while it waited: %v; want net.ErrClosed", err)
	}
	fl := &flakyListener{Listener: ln}
	if _, err := Accept(fl); !errors.Is(err, net.ErrClosed) || fl.calls != 1 {
		t.Fatalf("Accept on a closed listener: %v after %d accepts; want net.ErrClosed after 1", err, fl.calls)
	}
	fl = &flakyListener{Listener: ln, errs: []error{acceptError(addr, syscall.EMFILE), acceptError(addr, syscall.ENOMEM)}}
	if _, err := Accept(fl); !errors.Is(err, net.ErrClosed) || fl.calls != 3 {
		t.Fatalf("Accept on a closed listener after two errors: %v after %d accepts; want net.ErrClosed after 3", err, fl.calls)
	}
}

// Errors that go on are reported once a minute, with how many came
// unreported since the last report.
func TestAcceptReportsOnceAMinute(t *testing.T) {
	now := time.Unix(1000, 0)
	var reported []int
	a := Acceptor{Report: func(_ error, skipped int) { reported = append(reported, skipped) }, now: func() time.Time { return now }}
	err := acceptError(nil, syscall.EMFILE)
	for _, step := range []time.Duration{0, time.Second, 58 * time.Second, time.Second, 30 * time.Second, time.Hour} {
		now = now.Add(step)
		a.report(err)
	}
	// At 0 (the first), at 60 s (2 skipped), at 1 h 90 s (1 skipped).
	if len(reported) != 3 || reported[0] != 0 || reported[1] != 2 || reported[2] != 1 {
		t.Fatalf("reports with skipped counts %v; want [0 2 1]", reported)
	}
}
