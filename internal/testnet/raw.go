package testnet

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Raw is a client connection that sends raw requests and reads the
// answers, for tests of servers and proxies; it fails its test on errors.
type Raw struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// Dial connects to addr for at most 10 s; the connection closes when the
// test ends.
func Dial(t *testing.T, addr string) *Raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &Raw{t: t, c: c, br: bufio.NewReader(c)}
}

// Conn is the connection.
func (r *Raw) Conn() net.Conn { return r.c }

// Send writes s.
func (r *Raw) Send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// Read reads the answer to a request with method, and its body.
func (r *Raw) Read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil && resp.StatusCode < 400 { // an error answer may end with a reset
		r.t.Fatalf("reading the body: %v", err)
	}
	return resp, string(body)
}

// Reader is the connection's buffered reader, for what Read does not do.
func (r *Raw) Reader() *bufio.Reader { return r.br }
