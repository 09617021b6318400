package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/proxy/server"
)

// upgradeRequest goes to net/http (an upgrade), whose handler may hijack.
const upgradeRequest = "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"

// hijacker answers an upgrade by hijacking its connection, writing "up",
// and keeping it until release is closed.
func hijacker(release <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		fmt.Fprint(c, "up")
		go func() {
			<-release
			c.Close()
		}()
	}
}

func dialUpgraded(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprint(c, upgradeRequest)
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "up" {
		t.Fatalf("the upgrade: %q, %v", buf, err)
	}
	return c
}

// Shutdown waits for the connections net/http handed over (upgrades,
// CONNECT, h2c) until they close, as it does for requests in flight.
func TestShutdownWaitsForHijackedConnections(t *testing.T) {
	release := make(chan struct{})
	addr, srv := directServer(t, server.Options{}, hijacker(release))
	dialUpgraded(t, addr)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while an upgraded connection was open", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Shutdown did not return once the upgraded connection closed")
	}
}

// At its deadline, Shutdown closes the connections handed over.
func TestShutdownClosesHijackedConnectionsAtItsDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr, srv := directServer(t, server.Options{}, hijacker(release))
	c := dialUpgraded(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown with an upgraded connection open at its deadline: nil; want the deadline's error")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Shutdown took %v with a 200 ms deadline", took)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the upgraded connection after the deadline: %v; want it closed", err)
	}
}

// An h2c request in flight when Shutdown starts is answered; Shutdown
// returns after it.
func TestShutdownLetsH2CStreamsFinish(t *testing.T) {
	entered := make(chan struct{}, 1)
	addr, srv := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		time.Sleep(500 * time.Millisecond)
		fmt.Fprint(w, "done")
	})
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	got := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	if g := <-got; g != "200 done" {
		t.Fatalf("the h2c request in flight: %s", g)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown did not return after the h2c stream finished")
	}
}

// A handler may hand the request body to a goroutine that goes on
// reading it after the handler returned (a transport still sending it
// when the node answered early), while the server drops the rest of the
// body to reach the next request. The two must not read the connection
// at once (run with -race): the server waits for the read in progress,
// and later reads get an error; the next request is answered.
func TestBodyReadAfterTheHandlerReturned(t *testing.T) {
	var got bytes.Buffer
	readerDone := make(chan error, 1)
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/1" {
			go func() {
				buf := make([]byte, 4)
				for {
					n, err := r.Body.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						readerDone <- err
						return
					}
				}
			}()
			time.Sleep(20 * time.Millisecond) // the reader is blocked on the client
		}
		fmt.Fprint(w, r.URL.Path)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
	time.Sleep(100 * time.Millisecond) // the handler has returned
	fmt.Fprint(c, "56789GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufioReader(c)
	if a := readAnswer(t, br); a != "/1" {
		t.Fatalf("first answer %q", a)
	}
	if a := readAnswer(t, br); a != "/2" {
		t.Fatalf("the next request's answer %q; want /2", a)
	}
	select {
	case err := <-readerDone:
		if err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
			t.Errorf("the late reader ended with %v; want EOF or ErrBodyReadAfterClose", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late reader never ended")
	}
	if !strings.HasPrefix("0123456789", got.String()) {
		t.Errorf("the late reader read %q; want a part of the body", got.String())
	}
}

func bufioReader(c net.Conn) *bufio.Reader {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return bufio.NewReader(c)
}

// readAnswer reads one answer and returns its body.
func readAnswer(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// An Upgrade: h2c request with a body is served as the HTTP/1.1 request
// it also is, body streamed to the handler: the h2c upgrade would read
// the whole body into memory first (net/http's server never upgrades to
// h2c).
func TestH2CUpgradeWithABodyIsServedAsHTTP1(t *testing.T) {
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s upgrade=%q", body, r.Header.Get("Upgrade"))
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n\r\nhello")
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != `hello upgrade=""` {
		t.Fatalf("an h2c upgrade with a body: %d %q; want it served as HTTP/1.1", resp.StatusCode, body)
	}

	// Without a body, the upgrade happens.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprint(c2, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
	line, err := bufioReader(c2).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 101") {
		t.Fatalf("an h2c upgrade without a body: %q, %v; want 101", line, err)
	}
}

// read_header_timeout bounds the whole HTTP/2 preface: a client that
// sends its first line and stops is cut off, as net/http's server does.
func TestHalfAnH2CPrefaceIsCutOff(t *testing.T) {
	addr, _ := directServer(t, server.Options{ReadHeaderTimeout: 300 * time.Millisecond}, func(w http.ResponseWriter, r *http.Request) {})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "PRI * HTTP/2.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("a half preface still held after %v; want it closed at read_header_timeout", time.Since(start).Round(time.Millisecond))
	}

	// A whole preface is served.
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("h2c with prior knowledge: %d %s", resp.StatusCode, resp.Proto)
	}
}

// h2cTransport speaks HTTP/2 with prior knowledge to http:// addresses.
func h2cTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}
}

// An Upgrade: h2c that cannot be made (RFC 7540 section 3.2.1: no
// HTTP2-Settings, two of them, or a Connection header that does not list
// it) is served as the HTTP/1.1 request it also is, without the h2c
// token and HTTP2-Settings: never answered 500, and never passed on for
// a node to upgrade to h2c (which would carry the client's HTTP/2 past
// the proxy).
func TestH2CUpgradeThatCannotBeMadeIsServedAsHTTP1(t *testing.T) {
	addr, _ := directServer(t, server.Options{}, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upgrade=%q settings=%q", r.Header["Upgrade"], r.Header["Http2-Settings"])
	})
	const settings = "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
	for _, tc := range []struct{ head, want string }{
		{"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n", `upgrade=[] settings=[]`},
		{"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n" + settings + settings, `upgrade=[] settings=[]`},
		{"Connection: Upgrade\r\nUpgrade: h2c\r\n" + settings, `upgrade=[] settings=[]`},
		{"Connection: Upgrade\r\nUpgrade: h2c, websocket\r\n", `upgrade=["websocket"] settings=[]`},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n"+tc.head+"\r\n")
		resp, err := http.ReadResponse(bufioReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("%q: %d %q; want 200 %q", tc.head, resp.StatusCode, body, tc.want)
		}
	}
}
