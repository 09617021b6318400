package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lineConn is a connection that exchanges lines.
type lineConn struct {
	c  net.Conn
	br *bufio.Reader
}

// say sends a line and returns the answer ("" when there is none).
func (l *lineConn) say(msg string) string {
	_ = l.c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintln(l.c, msg)
	line, _ := l.br.ReadString('\n')
	return strings.TrimSpace(line)
}

// openThrough opens a connection to addr and sends head (an HTTP request
// that turns into a byte stream: an Upgrade or a CONNECT), expecting the
// status line want.
func openThrough(t *testing.T, addr, head, want string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l := &lineConn{c: c, br: bufio.NewReader(c)}
	if head == "" {
		return l
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprint(c, head)
	resp, err := http.ReadResponse(l.br, nil)
	if err != nil || !strings.HasPrefix(resp.Status, want) {
		t.Fatalf("%q: %v %v; want %s", head, resp, err, want)
	}
	if resp.StatusCode >= 300 {
		io.Copy(io.Discard, resp.Body) // an answer, not a stream
	}
	return l
}

// upgradeNode answers an Upgrade with 101 and then echoes lines.
func upgradeNode(t *testing.T) string {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(brw, "ws:%s", line)
			brw.Flush()
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// SIGTERM with a WebSocket, a CONNECT tunnel and a tcp upstream's
// connection open, and an idle keep-alive connection (closed cleanly): readiness turns off, the listeners stop accepting, and
// each of them keeps relaying within drain_timeout; once they are closed
// by their clients Remora exits 0 without waiting for the rest of
// drain_timeout.
func TestSIGTERMLetsStreamsFinish(t *testing.T) {
	echo, ws := echoNode(t, "tcp"), upgradeNode(t)
	adminAddr, out, tcpPort := freeAddr(t), freeAddr(t), freeAddr(t)
	p := startProcess(t, adminAddr, fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_delay: 200ms
drain_timeout: 8s
registries: [{name: s, type: static, static: {services: {echo: [{address: %q}], ws: [{address: %q}]}}}]
upstreams:
  - {name: echo, protocol: tcp, listen: %q}
  - {name: ws}
`, adminAddr, out, echo, ws, tcpPort))
	tcpConn := openThrough(t, tcpPort, "", "")
	tunnel := openThrough(t, out, "CONNECT echo:80 HTTP/1.1\r\nHost: echo:80\r\n\r\n", "200")
	wsConn := openThrough(t, out, "GET /chat HTTP/1.1\r\nHost: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "101")
	for name, c := range map[string]*lineConn{"tcp": tcpConn, "tunnel": tunnel, "websocket": wsConn} {
		if got := c.say("before"); !strings.HasSuffix(got, ":before") {
			t.Fatalf("%s before SIGTERM: %q", name, got)
		}
	}
	// An idle HTTP/1.1 keep-alive connection, after one request.
	idle := openThrough(t, out, "GET / HTTP/1.1\r\nHost: ws-none\r\n\r\n", "404")
	_ = idle.c.SetDeadline(time.Time{})
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "readiness off", func() bool { code, _ := p.readyz(t); return code == 503 })
	eventually(t, 3*time.Second, "the listeners closed", func() bool {
		c, err := net.DialTimeout("tcp", out, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The idle connection is closed cleanly (FIN, not a reset).
	_ = idle.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := idle.br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the idle keep-alive connection during the drain: %d bytes, %v; want it closed (EOF)", n, err)
	}
	time.Sleep(500 * time.Millisecond)
	for name, c := range map[string]*lineConn{"tcp": tcpConn, "tunnel": tunnel, "websocket": wsConn} {
		if got := c.say("during"); !strings.HasSuffix(got, ":during") {
			t.Fatalf("%s during the drain: %q; an open stream must keep relaying within drain_timeout", name, got)
		}
		c.c.Close()
	}
	start := time.Now()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("remora did not exit once the streams closed")
	}
	if !p.exitedOK() {
		t.Fatalf("remora exited with an error")
	}
	t.Logf("exited %v after the last stream closed", time.Since(start).Round(time.Millisecond))
}

// SIGTERM with an h2c stream in flight (HTTP/2 without TLS from the
// application): the connection gets GOAWAY, the stream's answer finishes
// within drain_timeout, and Remora exits 0 once it has.
func TestSIGTERMLetsAnH2CStreamFinish(t *testing.T) {
	release := make(chan struct{})
	node := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first half;")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "second half")
	}))
	adminAddr, out := freeAddr(t), freeAddr(t)
	p := startProcess(t, adminAddr, fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_delay: 200ms
drain_timeout: 8s
registries: [{name: s, type: static, static: {services: {slow: [{address: %q}]}}}]
upstreams: [{name: slow}]
`, adminAddr, out, node))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+out+"/stream", nil)
	req.Host = "slow"
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("the application spoke %s; want HTTP/2", resp.Proto)
	}
	first := make([]byte, len("first half;"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "readiness off", func() bool { code, _ := p.readyz(t); return code == 503 })
	time.Sleep(500 * time.Millisecond) // past drain_delay: the listener is shut down
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second half" {
		t.Fatalf("the h2c stream's answer after SIGTERM: %q %v; want it finished", rest, err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("remora did not exit once the stream finished")
	}
	if !p.exitedOK() {
		t.Fatal("remora exited with an error")
	}
}

// httptestServer serves h on loopback until the test ends and returns its
// address.
func httptestServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A request in flight on a dedicated port that a reload took away goes on
// within drain_timeout, and SIGTERM waits for it as for the ports that
// still serve: the reload's drain is the shutdown's too.
func TestSIGTERMWaitsForAPortAReloadRetired(t *testing.T) {
	arrived := make(chan struct{}, 1)
	node := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(w, "slow answer")
	}))
	adminAddr, out, port := freeAddr(t), freeAddr(t), freeAddr(t)
	config := func(listen string) string {
		return fmt.Sprintf(`
admin: {address: %q}
listeners: [{name: outbound, address: %q}]
drain_delay: 0s
drain_timeout: 8s
registries: [{name: s, type: static, static: {services: {slow: [{address: %q}]}}}]
upstreams: [{name: slow%s}]
`, adminAddr, out, node, listen)
	}
	p := startProcess(t, adminAddr, config(fmt.Sprintf(", listen: %q", port)))
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + port + "/")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{string(b), err}
	}()
	<-arrived
	p.write(t, config(""))
	if err := p.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "the dedicated port retired", func() bool {
		c, err := net.DialTimeout("tcp", port, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := p.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.body != "slow answer" {
		t.Fatalf("the request in flight on the retired port: %q, %v; want its answer", r.body, r.err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("remora did not exit once the request ended")
	}
	if !p.exitedOK() {
		t.Fatal("remora exited with an error")
	}
}
