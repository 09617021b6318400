package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// The backend is a deliberately tiny HTTP/1.1 server: it answers every
// request with a fixed body chosen by the path, keeps connections alive,
// and answers pipelined requests in one write. It does the least work a
// server can (one read and one write per request) so that the load side is
// never what limits a proxy. The same backend serves every proxy.

const (
	smallBody = 64
	largeBody = 16 << 10
)

// responses holds the precomputed answers by path.
type responses struct{ small, large []byte }

func newResponses() responses {
	mk := func(n int) []byte {
		body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		hdr := fmt.Sprintf("HTTP/1.1 200 OK\r\nServer: remora-bench\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", n)
		return append([]byte(hdr), body...)
	}
	return responses{small: mk(smallBody), large: mk(largeBody)}
}

// pathFor returns the path that asks the backend for a body of n bytes.
func pathFor(n int) string {
	if n == largeBody {
		return "/16k"
	}
	return "/64"
}

func (r responses) forPath(path []byte) []byte {
	if bytes.HasPrefix(path, []byte("/16k")) {
		return r.large
	}
	return r.small
}

// runBackend listens on n loopback ports, prints their addresses on one
// line of stdout, and serves until stdin closes or a signal arrives (so it
// never outlives the driver).
func runBackend(n int) error {
	resp := newResponses()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addrs = append(addrs, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serveConn(c, resp)
			}
		}()
	}
	fmt.Println(joinComma(addrs))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-sig:
	case <-done:
	}
	return nil
}

func joinComma(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x)
	}
	return b.String()
}

// serveConn answers the requests on c until the peer closes, a request
// asks to close, or a request is malformed or chunked (unsupported here).
func serveConn(c net.Conn, resp responses) {
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	in := make([]byte, 0, 32<<10)
	buf := make([]byte, 32<<10)
	var out []byte
	for {
		k, err := c.Read(buf)
		if k > 0 {
			in = append(in, buf[:k]...)
			var closeAfter bool
			var consumed int
			out, consumed, closeAfter, err = handle(in, out[:0], resp)
			if err != nil {
				return
			}
			in = append(in[:0], in[consumed:]...)
			if len(out) > 0 {
				if _, werr := c.Write(out); werr != nil {
					return
				}
			}
			if closeAfter {
				return
			}
			if cap(out) > 1<<20 {
				out = nil
			}
		}
		if err != nil {
			return
		}
	}
}

var (
	crlf2         = []byte("\r\n\r\n")
	hdrContentLen = []byte("content-length:")
	hdrTransferEn = []byte("transfer-encoding:")
	hdrConnection = []byte("connection:")
)

// handle parses every complete request at the start of in, appends their
// responses to out, and reports how many bytes it consumed and whether the
// connection must close after writing out.
func handle(in, out []byte, resp responses) ([]byte, int, bool, error) {
	consumed := 0
	for {
		rest := in[consumed:]
		end := bytes.Index(rest, crlf2)
		if end < 0 {
			if len(rest) > 64<<10 {
				return out, consumed, true, fmt.Errorf("request head too large")
			}
			return out, consumed, false, nil
		}
		head := rest[:end]
		line, hdrs, _ := bytes.Cut(head, []byte("\r\n"))
		fields := bytes.Fields(line)
		if len(fields) != 3 {
			return out, consumed, true, fmt.Errorf("bad request line %q", line)
		}
		keepAlive := bytes.Equal(fields[2], []byte("HTTP/1.1"))
		bodyLen := 0
		for len(hdrs) > 0 {
			var h []byte
			h, hdrs, _ = bytes.Cut(hdrs, []byte("\r\n"))
			switch {
			case hasPrefixFold(h, hdrContentLen):
				n, err := strconv.Atoi(string(bytes.TrimSpace(h[len(hdrContentLen):])))
				if err != nil || n < 0 {
					return out, consumed, true, fmt.Errorf("bad content-length %q", h)
				}
				bodyLen = n
			case hasPrefixFold(h, hdrTransferEn):
				return out, consumed, true, fmt.Errorf("chunked request bodies are not supported")
			case hasPrefixFold(h, hdrConnection):
				v := bytes.ToLower(bytes.TrimSpace(h[len(hdrConnection):]))
				if bytes.Contains(v, []byte("close")) {
					keepAlive = false
				} else if bytes.Contains(v, []byte("keep-alive")) {
					keepAlive = true
				}
			}
		}
		total := end + len(crlf2) + bodyLen
		if len(rest) < total {
			return out, consumed, false, nil
		}
		consumed += total
		out = append(out, resp.forPath(fields[1])...)
		if !keepAlive {
			return out, consumed, true, nil
		}
	}
}

func hasPrefixFold(s, prefix []byte) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], prefix)
}

// readAddrs reads the backend's address line.
func readAddrs(r io.Reader) ([]string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("backend did not report its addresses: %w", err)
	}
	var addrs []string
	for _, a := range bytes.Split(bytes.TrimSpace([]byte(line)), []byte(",")) {
		addrs = append(addrs, string(a))
	}
	return addrs, nil
}
