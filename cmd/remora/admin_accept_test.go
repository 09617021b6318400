package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// failingOnce is a listener whose first Accept fails with errno.
type failingOnce struct {
	net.Listener
	errno  syscall.Errno
	failed atomic.Bool
}

func (l *failingOnce) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.errno)}
	}
	return l.Listener.Accept()
}

// The admin API, served by net/http, waits out an accept error net/http
// does not take for temporary (it ended Serve, and the admin API with it:
// no /readyz), as the proxy's listeners do.
func TestAdminServesAfterAnAcceptError(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOMEM, syscall.EPERM, syscall.EMFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			a := &app{log: testLogger()}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
			a.serve(newServer("admin", &failingOnce{Listener: ln, errno: errno}, srv))
			defer func() {
				srv.Close()
				a.serving.Wait()
			}()
			c := &http.Client{Timeout: 5 * time.Second}
			resp, err := c.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatalf("after %v: %v", errno, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok" {
				t.Fatalf("after %v: %q", errno, body)
			}
		})
	}
}
