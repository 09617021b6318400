package server_test

import (
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/proxy/server"
)

// failingListener fails its first Accepts with errs, then accepts from
// its listener.
type failingListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// lockedBuilder is a log destination safe for the server's goroutines.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuilder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuilder) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Accept errors (out of descriptors, kernel memory, a firewall's EPERM, a
// pending connection's network error) used to end Serve for good but for
// EMFILE and ENFILE, leaving the socket open: clients connected and hung,
// and nothing said why. Serve waits them out, logs the first, and answers
// the next request.
func TestServeAnswersAfterAcceptErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.EPERM, syscall.EPROTO} {
		errs = append(errs, &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: os.NewSyscallError("accept4", errno)})
	}
	var logged lockedBuilder
	srv := server.New(server.Options{ErrorLog: log.New(&logged, "", 0)}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(&failingListener{Listener: ln, errs: errs}) }()
	defer func() {
		srv.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve: %v; want http.ErrServerClosed after Close", err)
		}
	}()

	c := testnet.Dial(t, ln.Addr().String())
	c.Send("GET / HTTP/1.1\r\nHost: u\r\n\r\n")
	if resp, body := c.Read("GET"); resp.StatusCode != 200 || body != "served" {
		t.Fatalf("after accept errors: %d %q; want 200 served", resp.StatusCode, body)
	}
	// One line: the errors after the first come within the minute.
	if lines := strings.Split(strings.TrimSpace(logged.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "too many open files") {
		t.Errorf("ErrorLog: %q; want one line with the first error (too many open files)", logged.String())
	}
}
