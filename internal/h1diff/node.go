// Package h1diff is a differential harness for the connection state of an
// HTTP/1.1 proxy. A raw client sends bytes — well-formed, pipelined,
// corrupt, slow — through the proxy under test and through a reference
// proxy (net/http's server with httputil.ReverseProxy and http.Transport),
// each in front of its own scriptable node that may misbehave on purpose.
// Every answer a node gives names the request it answers (X-Req: the
// request target), so the harness can tell when an answer reached the
// wrong request, and every request a node receives is recorded, so it can
// tell when a request was smuggled.
//
// Compare states the rule: the proxy under test is never more lenient
// than the reference where leniency can desynchronize a connection. Its
// client gets the reference's answers, in order, and no others; its node
// gets the reference node's requests and no others; it closes a client
// connection at least as soon as the reference does.
package h1diff

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Request is a request a node received.
type Request struct {
	Conn   int    // the node connection it came on, from 1
	Method string // as sent
	Target string // as sent; the answers name it in X-Req
	Head   string // the head as received
	Body   string // the body as the node framed it
}

// ID is what an answer to r names: its target.
func (r *Request) ID() string { return r.Target }

func (r *Request) String() string {
	if r.Body == "" {
		return r.Method + " " + r.Target
	}
	return fmt.Sprintf("%s %s (body %q)", r.Method, r.Target, r.Body)
}

// Answer is a node's raw reply to a request. Two markers act instead of
// being sent: Pause waits 50 ms (a slow node); Close closes the connection
// (at the end: after the reply). An answer of just Close, or "", closes
// without a reply.
type Answer func(r *Request) string

const (
	Pause = "\x00pause\x00"
	Close = "\x00close\x00"
)

// OK is a plain 200 answer to r, with its ID as header and body.
func OK(r *Request) string { return Status(r, 200, "") }

// Status is a status answer to r with its ID as body and extra header
// lines (each ending in CRLF).
func Status(r *Request, code int, extra string) string {
	return fmt.Sprintf("HTTP/1.1 %d X\r\nX-Req: %s\r\n%sContent-Length: %d\r\n\r\n%s", code, r.ID(), extra, len(r.ID()), r.ID())
}

// Node is a scriptable HTTP/1.1 node on loopback. It frames requests as a
// lenient origin server would (Content-Length or chunked; a chunked
// Transfer-Encoding wins over a length), records each one and replies with
// Answer.
type Node struct {
	// Answer replies to each request; OK when nil.
	Answer Answer
	// IgnoreGETBody makes the node read a GET's or HEAD's body as the
	// start of the next request, whatever its Content-Length says (a
	// server that ignores bodies on those methods).
	IgnoreGETBody bool

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	got   []Request
}

// Start listens on 127.0.0.1 and serves until Stop.
func (n *Node) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	n.ln = ln
	n.wg.Go(func() {
		for id := 1; ; id++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.mu.Lock()
			n.conns = append(n.conns, c)
			n.mu.Unlock()
			n.wg.Go(func() { n.serve(c, id) })
		}
	})
	return nil
}

// Addr is the node's address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Stop closes the listener and every connection and waits for them.
func (n *Node) Stop() {
	n.ln.Close()
	n.mu.Lock()
	for _, c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// Received returns the requests received so far.
func (n *Node) Received() []Request {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Request(nil), n.got...)
}

// Conns is the number of connections accepted.
func (n *Node) Conns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

func (n *Node) serve(c net.Conn, id int) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r, err := readNodeRequest(br, n.IgnoreGETBody)
		if err != nil {
			if err != io.EOF && !isNetErr(err) {
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nX-Req: node-400\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			return
		}
		r.Conn = id
		n.mu.Lock()
		n.got = append(n.got, *r)
		n.mu.Unlock()
		answer := n.Answer
		if answer == nil {
			answer = OK
		}
		out := answer(r)
		if out == "" {
			return
		}
		for out != "" {
			i := strings.IndexByte(out, 0)
			if i < 0 {
				i = len(out)
			}
			if i > 0 {
				if _, err := io.WriteString(c, out[:i]); err != nil {
					return
				}
				out = out[i:]
				continue
			}
			switch {
			case strings.HasPrefix(out, Pause):
				time.Sleep(50 * time.Millisecond)
				out = out[len(Pause):]
			case strings.HasPrefix(out, Close):
				return
			default:
				panic("h1diff: a NUL in an answer that is not a marker")
			}
		}
	}
}

func isNetErr(err error) bool {
	_, ok := err.(net.Error)
	return ok
}

// readNodeRequest reads one request as the node frames it.
func readNodeRequest(br *bufio.Reader, ignoreGETBody bool) (*Request, error) {
	var head strings.Builder
	line, err := br.ReadString('\n')
	for err == nil && (line == "\r\n" || line == "\n") && head.Len() == 0 {
		line, err = br.ReadString('\n') // RFC 9112 2.2: empty lines before a request
	}
	if err != nil {
		if line == "" {
			return nil, io.EOF
		}
		return nil, err
	}
	head.WriteString(line)
	parts := strings.Fields(line)
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return nil, fmt.Errorf("bad request line %q", line)
	}
	r := &Request{Method: parts[0], Target: parts[1]}
	length, chunked := int64(0), false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		head.WriteString(line)
		if line == "\r\n" || line == "\n" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("bad header line %q", line)
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "content-length":
			if length, err = strconv.ParseInt(v, 10, 64); err != nil || length < 0 {
				return nil, fmt.Errorf("bad Content-Length %q", v)
			}
		case "transfer-encoding":
			chunked = strings.HasSuffix(strings.ToLower(v), "chunked")
		}
	}
	r.Head = head.String()
	if ignoreGETBody && (r.Method == "GET" || r.Method == "HEAD") {
		return r, nil
	}
	var body []byte
	switch {
	case chunked:
		body, err = readChunked(br)
	case length > 0:
		if length > 1<<24 {
			return nil, fmt.Errorf("Content-Length %d too large for a test node", length)
		}
		body = make([]byte, length)
		_, err = io.ReadFull(br, body)
	}
	if err != nil {
		return nil, err
	}
	r.Body = string(body)
	return r, nil
}

func readChunked(br *bufio.Reader) ([]byte, error) {
	var body []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n < 0 || n > 1<<24 {
			return nil, fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers
				line, err := br.ReadString('\n')
				if err != nil {
					return nil, err
				}
				if line == "\r\n" || line == "\n" {
					return body, nil
				}
			}
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return nil, err
		}
		if string(chunk[n:]) != "\r\n" {
			return nil, fmt.Errorf("chunk not followed by CRLF")
		}
		body = append(body, chunk[:n]...)
	}
}
