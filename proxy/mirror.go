package proxy

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// mirror is a route's mirror: its configuration and the copies in flight.
// The request path reads it without locking (atomics only).
type mirror struct {
	cfg       upstream.Mirror
	threshold uint64 // Percent as a share of 2^32
	inFlight  atomic.Int64
}

func newMirror(m *upstream.Mirror) *mirror {
	if m == nil {
		return nil
	}
	return &mirror{cfg: *m, threshold: uint64(m.Percent / 100 * (1 << 32))}
}

// MirrorHeader marks a mirrored request, naming the upstream it was copied
// from, so its target can tell it from live traffic.
const MirrorHeader = "X-Remora-Mirror"

// maybeMirror decides whether r, a request to route's upstream, is copied,
// and if so starts the copy on its own goroutine: it never waits for it.
// A body is copied only when its length is known and within
// max_body_bytes: it is read ahead and r.Body replaced by the same bytes.
// Over max_in_flight the copy is dropped and counted.
func (p *Proxy) maybeMirror(r *http.Request, route *route) {
	m := route.mirror
	if rand.Uint64()>>32 >= m.threshold {
		return
	}
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
	out.Header.Set(MirrorHeader, route.up.Name())
	go func() {
		defer m.inFlight.Add(-1)
		p.sendMirror(out, body, route)
	}()
}

// sendMirror sends a copy to the mirror's target, through the target's
// attempt path (one attempt: a copy is not retried), and drops the answer.
func (p *Proxy) sendMirror(out *http.Request, body []byte, from *route) {
	m := from.mirror
	target := from
	if m.cfg.Upstream != "" {
		if target = p.routes.Load().lookup(m.cfg.Upstream); target == nil {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	out = out.WithContext(ctx)
	var call upstream.Call
	defer call.End(false)
	if call.Begin(ctx, target.up, balancer.Info{Request: out}) != nil {
		return
	}
	if m.cfg.Canary && !call.UseCanary() {
		return
	}
	_ = call.Attempts(ctx, false, func(n *node.Node, _ int) upstream.Attempt {
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
}
