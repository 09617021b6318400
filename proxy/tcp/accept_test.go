package tcp

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// flakyListener fails its first Accepts with EMFILE, as a process out of
// file descriptors does, then with err.
type flakyListener struct {
	net.Listener
	emfile int
	err    error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.emfile > 0 {
		l.emfile--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return nil, l.err
}

func TestAcceptWaitsOutTemporaryErrors(t *testing.T) {
	l := &flakyListener{emfile: 3, err: net.ErrClosed}
	if _, err := Accept(l); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("error %v; want net.ErrClosed after the EMFILEs", err)
	}
	if l.emfile != 0 {
		t.Fatalf("Accept gave up with %d EMFILEs to go", l.emfile)
	}
}
