package proxy

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// The direct exchange: a plain HTTP/1.1 request that proxy.Server read,
// sent to a node over Transport's keep-alive pool, without building the
// outgoing http.Request or, for a simple answer, the http.Response.
//
// The request's head is encoded once from the client's request, as
// ReverseProxy and http.Request.Write would have sent it, and written with
// the buffered body on each attempt. The answer's head is parsed where it
// lies in the connection's buffer: a simple one (parseRespHead) goes to the
// client as the node sent it, less its hop-by-hop headers, with its body
// in one write when it is at most maxDirectBody long. Any other answer
// (1xx, chunked, trailers, gRPC, event streams, read-until-close, an
// oversized head) is read with http.ReadResponse and written by
// ReverseProxy, as on every other path. Node choice, retries and health
// accounting are exchange.attempts', shared with pickingTransport.

// directTransport returns the transport that forwards r directly, or nil
// when ReverseProxy forwards it: r came from proxy.Server, the upstream
// speaks plain HTTP/1.1 through a Transport, and r has no body or a body
// short enough to buffer for retries.
func (p *Proxy) directTransport(w http.ResponseWriter, r *http.Request, up *upstream.Upstream) *Transport {
	if _, ok := w.(*response); !ok {
		return nil
	}
	base := p.transport
	if own := up.Transport(); own != nil {
		base = own
	}
	t, ok := base.(*Transport)
	if !ok || !t.direct || up.Scheme() != "http" || !directRequest(r, min(maxDirectBody, up.Policy().Retry.MaxBodyBytes)) {
		return nil
	}
	return t
}

// directRequest reports whether appendRequestHead encodes r as
// ReverseProxy would send it, and its body is at most maxBody long. An
// empty Host (ReverseProxy sends the node's address), an IPv6 zone and
// HEAD (whose answer has no body whatever its header says) are left to
// ReverseProxy.
func directRequest(r *http.Request, maxBody int64) bool {
	if r.Host == "" || strings.IndexByte(r.Host, '%') >= 0 || r.Method == http.MethodHead {
		return false
	}
	return r.Body == http.NoBody || r.ContentLength > 0 && r.ContentLength <= maxBody
}

// directBufs holds the buffers of direct exchanges: a request's head and
// body, or an answer's head and body.
var directBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func putDirectBuf(b *[]byte, used []byte) {
	if cap(used) > maxDirectBody+16<<10 {
		return
	}
	*b = used[:0]
	directBufs.Put(b)
}

// forwardDirect forwards r to a node of st's upstream through t and writes
// the answer to w. It reports whether the answer broke off after its head
// went out: the client's connection must then be aborted.
func (p *Proxy) forwardDirect(ctx context.Context, w *response, r *http.Request, st *exchange, t *Transport) (aborted bool) {
	reqBuf := directBufs.Get().(*[]byte)
	msg := appendRequestHead((*reqBuf)[:0], r)
	defer func() { putDirectBuf(reqBuf, msg) }()
	if r.ContentLength > 0 { // the body follows the head in msg
		n := len(msg)
		msg = slices.Grow(msg, int(r.ContentLength))[:n+int(r.ContentLength)]
		if _, err := io.ReadFull(r.Body, msg[n:]); err != nil {
			p.fail(w, r, st, err)
			return false
		}
		st.body.buffered = msg[n:]
	}
	resend := upstream.Idempotent(r.Method) || hasIdempotencyKey(r.Header)
	got1xx := func(code int, h textproto.MIMEHeader) error {
		dst := w.Header()
		copyHeader(dst, http.Header(h))
		w.WriteHeader(code)
		clear(dst)
		return nil
	}
	var (
		c    *h1Conn
		rh   respHead
		resp *http.Response // an answer that is not simple
		aw   abandonWatcher
	)
	if ctx == r.Context() && r == w.req {
		aw = w.c // nothing but the client watch ends this context
	}
	send := func(n *node.Node, _ int) upstream.Attempt {
		var size int
		var err error
		resp = nil
		c, size, err = t.send(ctx, aw, n.HostPort, msg, resend)
		if err != nil {
			return upstream.Attempt{Err: err}
		}
		if size > 0 {
			if b, _ := c.br.Peek(size); parseRespHead(b, &rh) {
				return upstream.Attempt{Status: rh.status}
			}
		}
		if resp, err = c.readResponse(r, t.headerTimeout, got1xx); err != nil {
			c.conn.Close()
			return upstream.Attempt{Err: err}
		}
		if isGRPC(resp) && resp.StatusCode == http.StatusOK {
			st.grpc = resp
			return upstream.Attempt{Status: resp.StatusCode, Deferred: true}
		}
		return upstream.Attempt{Status: resp.StatusCode}
	}
	drop := func() {
		if resp != nil {
			dropResponse(resp)
			return
		}
		c.dropSimple(&rh)
	}
	if err := st.call.Attempts(ctx, true, send, drop); err != nil {
		p.fail(w, r, st, err)
		return false
	}
	if resp != nil {
		st.prefetched = resp
		return p.reverse(ctx, w, r, st)
	}
	return writeSimple(w, c, &rh)
}

func hasIdempotencyKey(h http.Header) bool {
	return h["Idempotency-Key"] != nil || h["X-Idempotency-Key"] != nil
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// bodyLength is how many body bytes follow a simple head.
func (h *respHead) bodyLength() int64 {
	if h.status == http.StatusNoContent || h.status == http.StatusNotModified {
		return 0 // never a body, whatever the header says
	}
	return h.contentLength
}

// dropSimple reads and drops a simple answer that is retried, keeping the
// connection when the body is short; c is done with.
func (c *h1Conn) dropSimple(h *respHead) {
	n := h.bodyLength()
	if n > maxDrain {
		c.stop()
		c.conn.Close()
		return
	}
	_, err := c.br.Discard(h.size + int(n))
	c.release(err == nil && h.keepAlive && c.stop())
}

// writeSimple writes a simple answer from c to the client and returns c
// to its pool. It reports whether the body broke off after the head went
// out.
func writeSimple(w *response, c *h1Conn, h *respHead) (aborted bool) {
	outBuf := directBufs.Get().(*[]byte)
	out := appendStatusLine((*outBuf)[:0], h.status)
	out = appendRespHeaders(out, h)
	defer func() { putDirectBuf(outBuf, out) }()
	if !h.hasDate {
		out = append(out, "Date: "...)
		out = append(out, httpDate(time.Now())...)
		out = append(out, "\r\n"...)
	}
	if w.closes(true) {
		out = append(out, "Connection: close\r\n"...)
	}
	out = append(out, "\r\n"...)
	_, _ = c.br.Discard(h.size) // the head was peeked: it is there
	length := h.bodyLength()
	w.wroteRaw(h.status, length)
	sniff := !h.hasType && !h.encoded && length > 0
	if length <= maxDirectBody {
		n := len(out)
		out = slices.Grow(out, int(length))[:n+int(length)]
		got, err := io.ReadFull(c.br, out[n:])
		if err != nil {
			c.stop()
			c.conn.Close()
			_, _ = w.c.bw.Write(out[:n+got])
			return true
		}
		c.release(h.keepAlive && c.stop())
		if sniff {
			out = slices.Insert(out, n-2, contentTypeLine(out[n:])...)
		}
		_, _ = w.c.bw.Write(out)
		return false
	}
	// Longer: the head with the first read, then the rest as it comes.
	buf := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(buf)
	for left := length; left > 0; {
		got, err := c.br.Read(buf[:min(left, int64(len(buf)))])
		if got > 0 && sniff {
			out = slices.Insert(out, len(out)-2, contentTypeLine(buf[:got])...)
			sniff = false
		}
		if len(out) > 0 {
			_, _ = w.c.bw.Write(out)
			out = out[:0]
		}
		left -= int64(got)
		if _, werr := w.c.bw.Write(buf[:got]); werr != nil || err != nil && left > 0 {
			c.stop()
			c.conn.Close()
			return true
		}
	}
	c.release(h.keepAlive && c.stop())
	return false
}

// contentTypeLine is the Content-Type net/http's server sniffs for a body
// that starts with b, as a header line.
func contentTypeLine(b []byte) []byte {
	return []byte("Content-Type: " + http.DetectContentType(b) + "\r\n")
}

// appendStatusLine appends an HTTP/1.1 status line for code, with the
// reason phrase net/http's server writes.
func appendStatusLine(dst []byte, code int) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10), ' ')
	if text := http.StatusText(code); text != "" {
		dst = append(dst, text...)
	} else {
		dst = append(dst, "status code "...)
		dst = append(dst, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10))
	}
	return append(dst, "\r\n"...)
}
