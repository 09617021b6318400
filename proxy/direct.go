package proxy

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"sync"
	"time"

	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/client"
	"github.com/remora-mesh/remora/proxy/h1"
	"github.com/remora-mesh/remora/proxy/server"
)

// The direct exchange: a plain HTTP/1.1 request that package server read,
// sent to a node over the upstream's client.Transport pool, without
// building the outgoing http.Request or, for a simple answer, the
// http.Response.
//
// The request's head is encoded once from the client's request
// (h1.AppendRequestHead, as ReverseProxy and http.Request.Write would send
// it) and written with the buffered body on each attempt. The answer's
// head is parsed where it lies in the connection's buffer: a simple one
// (h1.ParseResponse) goes to the client through the server's RawWriter as
// the node sent it, less its hop-by-hop headers, with its body in one
// write when it is at most client.MaxDirectBody long. Any other answer
// (1xx, chunked, trailers, gRPC, event streams, read-until-close, an
// oversized head) is read with http.ReadResponse and written by
// ReverseProxy, as on every other path. Node choice, retries and health
// accounting are the request's upstream.Call's, as on every path.

// direct reports whether r takes the direct exchange to route's upstream:
// the upstream speaks plain HTTP/1.1 (client.Transport.Direct), r is
// h1.Encodable and has no body or one short enough to buffer for retries,
// its answer's headers are passed on as they are (no response header
// rules) and the listener does not append to its forwarding headers.
func direct(r *http.Request, route *route, st *exchange) bool {
	maxBody := min(client.MaxDirectBody, route.up.Policy().Retry.MaxBodyBytes)
	return route.tr.Direct() && h1.Encodable(r) && (r.Body == http.NoBody || r.ContentLength > 0 && r.ContentLength <= maxBody) &&
		st.ruleResp == nil && st.respRules == nil && st.forwarded != ForwardedAppend &&
		!(st.forwardingRules && st.forwarded == ForwardedDrop) // the encoder would drop what the rules set
}

// directBufs holds the buffers of direct exchanges: a request's head and
// body, or an answer's head and body.
var directBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

func putDirectBuf(b *[]byte, used []byte) {
	if cap(used) > client.MaxDirectBody+16<<10 {
		return
	}
	*b = used[:0]
	directBufs.Put(b)
}

// forwardDirect forwards r to a node of st's upstream and writes the
// answer to w (raw, its RawWriter). It reports whether the answer broke
// off after its head went out: the client's connection must then be
// aborted.
func (p *Proxy) forwardDirect(ctx context.Context, w http.ResponseWriter, raw server.RawWriter, r *http.Request, st *exchange) (aborted bool) {
	reqBuf := directBufs.Get().(*[]byte)
	var idLine [len("X-Request-Id: ") + 36 + 2]byte
	opts := h1.HeadOptions{KeepForwarded: st.forwarded == ForwardedKeep}
	if st.newID {
		n := copy(idLine[:], "X-Request-Id: ")
		n += copy(idLine[n:], st.reqID[:])
		copy(idLine[n:], "\r\n")
		opts.Extra = idLine[:]
	}
	msg := h1.AppendRequestHead((*reqBuf)[:0], r, opts)
	defer func() { putDirectBuf(reqBuf, msg) }()
	if r.ContentLength > 0 { // the body follows the head in msg
		n := len(msg)
		msg = slices.Grow(msg, int(r.ContentLength))[:n+int(r.ContentLength)]
		if _, err := io.ReadFull(r.Body, msg[n:]); err != nil {
			p.fail(w, r, st, err)
			return false
		}
		// Read its end too: a body read to its end lets the server watch
		// for the client going away while the node answers.
		_, _ = r.Body.Read(nil)
		st.body.buffered = msg[n:]
	}
	resend := r.ContentLength == 0 && h1.Resendable(r.Method, r.Header)
	got1xx := func(code int, h textproto.MIMEHeader) error {
		dst := w.Header()
		copyHeader(dst, http.Header(h))
		w.WriteHeader(code)
		clear(dst)
		return nil
	}
	var (
		c    *client.Conn
		head h1.Response
		resp *http.Response // an answer that is not simple
		aw   client.Abandoner
	)
	if a, ok := w.(client.Abandoner); ok && ctx == r.Context() {
		aw = a // nothing but the client watch ends this context
	}
	send := func(n *node.Node, _ int) upstream.Attempt {
		var err error
		resp = nil
		if c, err = st.tr.Send(ctx, aw, n.HostPort, msg, resend); err != nil {
			return upstream.Attempt{Err: err}
		}
		if c.Head(&head) {
			return upstream.Attempt{Status: head.Status}
		}
		if resp, err = c.ReadResponse(r, got1xx); err != nil {
			return upstream.Attempt{Err: err}
		}
		if err = badSwitch(r.Header, resp); err != nil {
			resp = nil
			return upstream.Attempt{Err: err}
		}
		if isGRPC(resp) && resp.StatusCode == http.StatusOK {
			return grpcAttempt(st, resp)
		}
		return upstream.Attempt{Status: resp.StatusCode}
	}
	drop := func() {
		if resp != nil {
			dropResponse(resp)
			return
		}
		c.DropSimple(&head)
	}
	if err := st.call.Attempts(ctx, true, send, drop); err != nil {
		p.fail(w, r, st, err)
		return false
	}
	if resp != nil {
		st.prefetched = resp
		return p.reverse(ctx, w, r, st)
	}
	return writeSimple(raw, c, &head, &st.nodeBroke)
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// writeSimple writes a simple answer from c to the client through w and
// ends c's exchange. It reports whether the body broke off after the head
// went out, and sets *broke when the node broke it off (not the client).
//
// An answer that breaks off reaches the client as far as it would from
// ReverseProxy and net/http's server: ReverseProxy copies the body in
// reads of up to 32 KiB, and the server's ResponseWriter keeps the last
// bytes written in a 2 KiB buffer (bufferBeforeChunkingSize) that is
// dropped when the answer is aborted, and writes the head only with the
// first bytes that leave it (see heldBack).
func writeSimple(w server.RawWriter, c *client.Conn, h *h1.Response, broke *bool) (aborted bool) {
	outBuf := directBufs.Get().(*[]byte)
	out := h1.AppendStatusLine((*outBuf)[:0], h.Status)
	out = h.AppendHeaders(out)
	defer func() { putDirectBuf(outBuf, out) }()
	if !h.HasDate {
		out = append(out, "Date: "...)
		out = append(out, h1.Date(time.Now())...)
		out = append(out, "\r\n"...)
	}
	length := h.BodyLength()
	connHeader, dst := w.BeginRaw(h.Status, length)
	out = append(out, connHeader...)
	out = append(out, "\r\n"...)
	c.Discard(h.Size) // the head was peeked: it is there
	sniff := !h.HasType && !h.Encoded && length > 0
	if length <= client.MaxDirectBody {
		// The body is read whole into out and written with the head at
		// once, unless the node pauses inside it: then, before the wait,
		// what has left the server's buffer by then (see heldBack) goes
		// out, as ReverseProxy writes each read at once, so a client sees
		// a slow body as it comes, and one that breaks off as far as it
		// came. A body that is all there when read (nearly every one) is
		// one write: two would cost a send a request.
		n := len(out)
		out = slices.Grow(out, int(length))[:n+int(length)]
		var hb heldBack
		wrote := -1 // body bytes written; -1 until the head is
		for got := 0; got < int(length); {
			end := min(got+copyChunk, int(length))
			k, wait, err := c.ReadNow(out[n+got : n+end])
			if wait {
				if hb.sent > max(wrote, 0) {
					out, n, wrote = writeSent(dst, out, n, wrote, hb.sent, sniff)
				}
				k, err = c.Read(out[n+got : n+end])
			}
			got += k
			hb.write(k)
			if err != nil && got < int(length) {
				if hb.sent > max(wrote, 0) {
					writeSent(dst, out, n, wrote, hb.sent, sniff)
				}
				*broke = true
				c.Close()
				return true
			}
		}
		c.Done(h.KeepAlive)
		writeSent(dst, out, n, wrote, int(length), sniff)
		return false
	}
	// Longer: through a buffer as the server's, the head with the first
	// bytes that leave it, the rest as it comes.
	buf := copyBuffers.Get().(*[32 << 10]byte)
	defer copyBuffers.Put(buf)
	hw := heldWriter{dst: dst, out: out, head: len(out), sniff: sniff}
	for left := length; left > 0; {
		got, err := c.Read(buf[:min(left, int64(len(buf)))])
		left -= int64(got)
		if werr := hw.write(buf[:got]); werr != nil || err != nil && left > 0 {
			*broke = werr == nil
			out = hw.out
			c.Close()
			return true
		}
	}
	hw.flush()
	out = hw.out
	c.Done(h.KeepAlive)
	return false
}

// writeSent writes out[n+wrote:n+sent], the body bytes of out (which
// start at n) that are to leave next, preceded by the head out[:n] when
// wrote is -1 (with the Content-Type net/http's server sniffs from the
// first of them, when sniff is set). It returns out and n, moved by the
// sniffed line, and sent.
//
// The head and a part of the body are two writes, as the server's
// chunkWriter makes them to its connection's buffer: what reaches the
// client before the rest of the body depends on it. The whole body goes
// with the head in one.
func writeSent(dst io.Writer, out []byte, n, wrote, sent int, sniff bool) ([]byte, int, int) {
	if wrote < 0 {
		if sniff {
			line := contentTypeLine(out[n : n+sent])
			out = slices.Insert(out, n-2, line...)
			n += len(line)
		}
		if n+sent == len(out) {
			_, _ = dst.Write(out)
			return out, n, sent
		}
		_, _ = dst.Write(out[:n])
		wrote = 0
	}
	_, _ = dst.Write(out[n+wrote : n+sent])
	return out, n, sent
}

// copyChunk is the most ReverseProxy reads of a body at once (its copy
// buffer).
const copyChunk = 32 << 10

// responseBuffer is the buffer net/http's ResponseWriter keeps in front
// of the connection (bufferBeforeChunkingSize).
const responseBuffer = 2048

// heldBack counts what of a body written in pieces has left a buffer of
// responseBuffer bytes (bufio.Writer's rule) and what it holds.
type heldBack struct{ held, sent int }

func (h *heldBack) write(n int) {
	for n > responseBuffer-h.held {
		if h.held == 0 {
			h.sent += n // written through
			return
		}
		n -= responseBuffer - h.held
		h.sent += responseBuffer
		h.held = 0
	}
	h.held += n
}

// heldWriter writes a body to dst through a buffer of responseBuffer
// bytes, as the server's ResponseWriter does (see heldBack): out[:head]
// is the head, written (with a sniffed Content-Type when sniff is set)
// with the first bytes that leave the buffer; the buffer is out[head:]
// until then, and out after.
type heldWriter struct {
	dst   io.Writer
	out   []byte
	head  int
	sniff bool
	err   error
}

func (w *heldWriter) write(p []byte) error {
	for w.err == nil && len(p) > responseBuffer-(len(w.out)-w.head) {
		if len(w.out) == w.head {
			w.send(p) // written through
			return w.err
		}
		k := responseBuffer - (len(w.out) - w.head)
		w.out = append(w.out, p[:k]...)
		p = p[k:]
		w.send(nil)
	}
	w.out = append(w.out, p...)
	return w.err
}

// send writes the head (if it has not gone yet), the buffer and p.
func (w *heldWriter) send(p []byte) {
	if w.head > 0 && w.sniff {
		first := w.out[w.head:]
		if len(first) == 0 {
			first = p
		}
		w.out = slices.Insert(w.out, w.head-2, contentTypeLine(first)...)
	}
	_, w.err = w.dst.Write(w.out)
	if w.err == nil && len(p) > 0 {
		_, w.err = w.dst.Write(p)
	}
	w.out, w.head = w.out[:0], 0
}

// flush writes what the buffer holds.
func (w *heldWriter) flush() {
	if len(w.out) > 0 {
		w.send(nil)
	}
}

// contentTypeLine is the Content-Type net/http's server sniffs for a body
// that starts with b, as a header line.
func contentTypeLine(b []byte) []byte {
	return []byte("Content-Type: " + http.DetectContentType(b) + "\r\n")
}
