package shortage

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
)

func TestIs(t *testing.T) {
	dial := func(syscallName string, errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError(syscallName, errno)}
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{dial("socket", syscall.EMFILE), true},
		{dial("socket", syscall.ENFILE), true},
		{dial("socket", syscall.ENOBUFS), true},
		{dial("socket", syscall.ENOMEM), true},
		{dial("connect", syscall.EADDRNOTAVAIL), true},
		{&url.Error{Op: "Get", URL: "http://n/health", Err: dial("socket", syscall.EMFILE)}, true}, // an HTTP probe's
		{fmt.Errorf("attempt: %w", dial("socket", syscall.EMFILE)), true},
		{dial("connect", syscall.ECONNREFUSED), false}, // the node's
		{dial("connect", syscall.ETIMEDOUT), false},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ENOMEM)}, false}, // not a dial
		{syscall.EMFILE, false},
		{nil, false},
	} {
		if got := Is(tc.err); got != tc.want {
			t.Errorf("Is(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
