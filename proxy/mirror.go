package proxy

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"

	"github.com/remora-mesh/remora/internal/panics"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/h1"
)

// mirror is a route's mirror: its configuration and the copies in flight.
// The request path reads it without locking (atomics only).
type mirror struct {
	cfg       upstream.Mirror
	threshold uint64        // Percent as a share of 2^32
	inFlight  *atomic.Int64 // shared with the mirror it replaced on a reload
	panics    panics.Log    // the copies' (see copyPanicked)
}

// newMirror returns the mirror m configures, or nil. It counts the copies
// in flight with was's counter (the same upstream's mirror before a
// reload; may be nil), so that max_in_flight bounds the copies of both.
func newMirror(m *upstream.Mirror, was *mirror) *mirror {
	if m == nil {
		return nil
	}
	mr := &mirror{cfg: *m, threshold: uint64(m.Percent / 100 * (1 << 32)), inFlight: new(atomic.Int64)}
	if was != nil {
		mr.inFlight = was.inFlight
	}
	return mr
}

// MirrorHeader marks a mirrored request, naming the upstream it was copied
// from, so its target can tell it from live traffic.
const MirrorHeader = "X-Remora-Mirror"

// sampled decides whether a request is copied (Percent of them).
func (m *mirror) sampled() bool { return rand.Uint64()>>32 < m.threshold }

// startMirror copies r, a request to route's upstream that sampled chose,
// and starts the copy on its own goroutine: it never waits for it. header
// is r's header as the listener made it, before the upstream's own rules:
// the copy takes its target's (sendMirror). A body is copied only when its
// length is known and within max_body_bytes: it is read ahead and r.Body
// replaced by the same bytes. Over max_in_flight the copy is dropped and
// counted.
func (p *Proxy) startMirror(r *http.Request, header http.Header, route *route, st *exchange) {
	m := route.mirror
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 || r.ContentLength > m.cfg.MaxBodyBytes {
			return
		}
		data, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		if err != nil || int64(len(data)) != r.ContentLength {
			// Short: the primary request gets what was read, then the
			// rest (and its error), as if nothing had been read ahead.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(data), r.Body))
			return
		}
		body = data
		r.Body = io.NopCloser(bytes.NewReader(data))
	}
	metrics := route.up.Metrics()
	if m.inFlight.Add(1) > int64(m.cfg.MaxInFlight) {
		m.inFlight.Add(-1)
		metrics.MirrorDropped.Add(1)
		return
	}
	metrics.Mirrored.Add(1)
	out := r.Clone(context.Background())
	out.Body, out.GetBody = http.NoBody, nil
	out.RequestURI = ""
	out.Header = header
	copyHeaders(out, r, st)
	out.Header.Set(MirrorHeader, route.up.Name())
	go func() {
		defer m.inFlight.Add(-1)
		defer p.copyPanicked(route)
		p.sendMirror(out, body, route)
	}()
}

// copyPanicked, deferred on a copy's goroutine, contains a panic of the
// copy (the target's transport, its balancer, its header rules), which
// would end the process: the copy is dropped and counted so, and the
// panic is logged with its stack, once a minute at most (it may come with
// every copy).
func (p *Proxy) copyPanicked(from *route) {
	v := recover()
	if v == nil {
		return
	}
	from.up.Metrics().MirrorDropped.Add(1)
	from.mirror.panics.Log(p.log.WithField("upstream", from.up.Name()), panics.New(v),
		"mirror: sending a copy panicked; it is dropped")
}

// copyHeaders makes out's header what the primary request's is on its way
// to a node, but for the upstream's rules: without hop-by-hop headers
// (RFC 9110's and those Connection names), with the forwarding headers as
// the listener says (st.forwarded), and with the request ID the listener
// gave r, if any.
func copyHeaders(out, r *http.Request, st *exchange) {
	h := out.Header
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers") // kept, as ReverseProxy keeps it (gRPC)
	for _, v := range h["Connection"] {
		for _, k := range strings.Split(v, ",") {
			if k = textproto.TrimString(k); k != "" {
				h.Del(k)
			}
		}
	}
	for _, k := range h1.HopHeaders {
		delete(h, k)
	}
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	switch st.forwarded {
	case ForwardedDrop:
		for _, k := range forwardingHeaders {
			delete(h, k)
		}
	case ForwardedAppend: // as rewrite does for the primary request
		delete(h, "X-Forwarded-Host")
		delete(h, "X-Forwarded-Proto")
		(&httputil.ProxyRequest{In: r, Out: out}).SetXForwarded()
	}
	st.reapplyForwarding(h, true)
	if st.newID {
		h["X-Request-Id"] = []string{string(st.reqID[:])}
	}
}

// sendMirror sends a copy to the mirror's target, with the target's
// request header rules, through the target's attempt path (one attempt: a
// copy is not retried; BeginCopy: no token of its rate limit, no place
// under its circuit breaker), and drops the answer. A copy that reaches no
// node is counted as dropped.
func (p *Proxy) sendMirror(out *http.Request, body []byte, from *route) {
	m := from.mirror
	target := from
	if m.cfg.Upstream != "" {
		if target = p.routes.Load().lookup(m.cfg.Upstream); target == nil || target.tcp {
			return
		}
	}
	target.reqRules.apply(out.Header)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	out = out.WithContext(ctx)
	var call upstream.Call
	defer call.End(false)
	dropped := &from.up.Metrics().MirrorDropped
	if call.BeginCopy(ctx, target.up, balancer.Info{Request: out}, m.cfg.Canary) != nil {
		dropped.Add(1)
		return
	}
	err := call.Attempts(ctx, false, func(n *node.Node, _ int) upstream.Attempt {
		out.URL.Scheme, out.URL.Host = target.tr.Scheme(), n.HostPort
		if body != nil {
			out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		resp, err := target.tr.RoundTrip(out)
		if err != nil {
			return upstream.Attempt{Err: err}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		resp.Body.Close()
		return upstream.Attempt{Status: resp.StatusCode}
	}, func() {})
	if err != nil {
		dropped.Add(1)
	}
}
