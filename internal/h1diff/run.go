package h1diff

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Limits are what both proxies are configured with.
type Limits struct {
	ReadHeaderTimeout      time.Duration
	IdleTimeout            time.Duration
	MaxHeaderBytes         int
	MaxResponseHeaderBytes int64
}

// Proxy starts a proxy that forwards every request to the node at
// nodeAddr, and returns its address and how to stop it.
type Proxy func(nodeAddr string) (addr string, stop func(), err error)

// Reference is the reference proxy: net/http's server with lim, and
// httputil.ReverseProxy over an http.Transport, keeping the client's Host.
func Reference(lim Limits) Proxy {
	return func(nodeAddr string) (string, func(), error) {
		target := &url.URL{Scheme: "http", Host: nodeAddr}
		tr := &http.Transport{
			Proxy:                  nil,
			DisableCompression:     true,
			MaxResponseHeaderBytes: lim.MaxResponseHeaderBytes,
			MaxIdleConnsPerHost:    64,
		}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = pr.In.Host
			},
			Transport: tr,
			ErrorLog:  log.New(io.Discard, "", 0),
		}
		hs := &http.Server{
			Handler: rp, ReadHeaderTimeout: lim.ReadHeaderTimeout, IdleTimeout: lim.IdleTimeout,
			MaxHeaderBytes: lim.MaxHeaderBytes, ErrorLog: log.New(io.Discard, "", 0),
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = hs.Serve(ln)
		}()
		return ln.Addr().String(), func() {
			hs.Close()
			<-done
			tr.CloseIdleConnections()
		}, nil
	}
}

// Case is one scenario: client connections, made one after another, each
// a list of steps, against a node that answers with Answer.
type Case struct {
	Name          string
	Conns         [][]Step
	Answer        Answer
	IgnoreGETBody bool
	// Wait bounds each client's wait; DefaultWait when zero.
	Wait Wait
}

// DefaultWait is a client's wait unless a case says otherwise.
var DefaultWait = Wait{Quiet: 300 * time.Millisecond, Max: 3 * time.Second}

// Result is what a case came to through one proxy.
type Result struct {
	Clients   []Outcome
	Node      []Request
	NodeConns int
	NodeAddr  string // differs between runs: requests that name it are compared without it
}

// Run runs c through the proxy p starts.
func Run(c Case, p Proxy) (Result, error) {
	n := &Node{Answer: c.Answer, IgnoreGETBody: c.IgnoreGETBody}
	if err := n.Start(); err != nil {
		return Result{}, err
	}
	defer n.Stop()
	addr, stop, err := p(n.Addr())
	if err != nil {
		return Result{}, err
	}
	defer stop()
	w := c.Wait
	if w == (Wait{}) {
		w = DefaultWait
	}
	var res Result
	for _, steps := range c.Conns {
		o, err := Exchange(addr, steps, w)
		if err != nil {
			return Result{}, err
		}
		var sent strings.Builder
		for _, s := range steps {
			sent.WriteString(s.Send)
		}
		o.Parse(Methods(sent.String()))
		res.Clients = append(res.Clients, o)
	}
	time.Sleep(20 * time.Millisecond) // what the node is still reading
	res.Node, res.NodeConns, res.NodeAddr = n.Received(), n.Conns(), n.Addr()
	return res, nil
}

// CloseSlack is how much later than the reference a connection may close.
const CloseSlack = 300 * time.Millisecond

// ignoredHeaders differ between any two runs.
var ignoredHeaders = []string{"Date"}

// Rules say what Compare may let pass.
type Rules struct {
	// AllowStricter lets the proxy under test close sooner and answer
	// (and forward) fewer requests than the reference.
	AllowStricter bool
	// IgnoreAnswers compares which request each answer names, not its
	// header and body.
	IgnoreAnswers bool
}

// Compare reports where got is not the reference's outcome ref: an answer
// the reference did not give, or gave to another request; a request the
// reference's node did not receive; a connection left open (or closed
// later) where the reference closed it; bytes that are no answer. Being
// stricter — closing sooner, answering fewer — is reported too, as it
// loses the application's requests, unless the rules allow it.
func Compare(ref, got Result, rules Rules) []string {
	allowStricter := rules.AllowStricter
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for i := range min(len(ref.Clients), len(got.Clients)) {
		r, g := ref.Clients[i], got.Clients[i]
		for k := range min(len(r.Responses), len(g.Responses)) {
			rr, gr := r.Responses[k], g.Responses[k]
			if rr.Name() != gr.Name() {
				add("conn %d answer %d: got %s, the reference gave %s", i+1, k+1, gr.Name(), rr.Name())
				continue
			}
			if gr.Req == "" || rules.IgnoreAnswers {
				continue // the proxy's own: its text may differ
			}
			// A body both cut short: the proxy may have passed on more
			// of what the node sent before it stopped. net/http's server
			// keeps up to 2 KiB of it in its ResponseWriter's buffer, as
			// much as the node's bytes happened to arrive in pieces;
			// Remora passes on all it read before it would wait.
			cutLonger := gr.Cut && rr.Cut && strings.HasPrefix(gr.Body, rr.Body)
			if (gr.Body != rr.Body || gr.Cut != rr.Cut) && !cutLonger {
				add("conn %d answer %d (%s): body %q (cut %v), the reference's %q (cut %v)", i+1, k+1, gr.Name(), gr.Body, gr.Cut, rr.Body, rr.Cut)
			}
			ignore := ignoredHeaders
			if rr.Header.Get("Content-Length") == "" {
				// A streamed answer: net/http's server sniffs its type
				// only when the first body bytes win a race with
				// ReverseProxy's first flush.
				ignore = append(ignore[:len(ignore):len(ignore)], "Content-Type")
			}
			if emptyAnswer(rr) && emptyAnswer(gr) {
				// An empty answer of unknown length: net/http's server
				// frames it Content-Length: 0 or chunked, as
				// ReverseProxy's first flush loses or wins a race with
				// the body's end (more often lost on a loaded machine).
				ignore = append(ignore[:len(ignore):len(ignore)], "Content-Length")
			}
			if d := headerDiff(rr.Header, gr.Header, ignore); d != "" {
				add("conn %d answer %d (%s): header %s", i+1, k+1, gr.Name(), d)
			}
		}
		switch {
		case len(g.Responses) > len(r.Responses):
			for _, x := range g.Responses[len(r.Responses):] {
				add("conn %d: got %s, which the reference did not give", i+1, x.Name())
			}
		case len(g.Responses) < len(r.Responses) && !allowStricter:
			for _, x := range r.Responses[len(g.Responses):] {
				add("conn %d: the reference gave %s too", i+1, x.Name())
			}
		}
		if len(g.Rest) > 0 && len(r.Rest) == 0 {
			add("conn %d: %d bytes that are no answer: %q", i+1, len(g.Rest), clip(g.Rest))
		}
		switch {
		case r.Closed && !g.Closed:
			add("conn %d: left open; the reference closed it after %v", i+1, r.ClosedAfter.Round(time.Millisecond))
		case r.Closed && g.ClosedAfter > r.ClosedAfter+CloseSlack:
			add("conn %d: closed after %v; the reference after %v", i+1, g.ClosedAfter.Round(time.Millisecond), r.ClosedAfter.Round(time.Millisecond))
		case !r.Closed && g.Closed && !allowStricter:
			add("conn %d: closed after %v; the reference kept it open", i+1, g.ClosedAfter.Round(time.Millisecond))
		}
	}
	refReqs := requestKeys(ref.Node, ref.NodeAddr)
	for _, k := range requestKeys(got.Node, got.NodeAddr) {
		if i := slices.Index(refReqs, k); i >= 0 {
			refReqs = slices.Delete(refReqs, i, i+1)
			continue
		}
		add("the node received %s, which the reference's node did not", k)
	}
	if !allowStricter {
		for _, k := range refReqs {
			add("the node did not receive %s, which the reference's node did", k)
		}
	}
	return out
}

// emptyAnswer reports whether r has an empty body, whole, and no
// Content-Length but 0.
func emptyAnswer(r Response) bool {
	cl := r.Header.Values("Content-Length")
	return r.Body == "" && !r.Cut && (len(cl) == 0 || len(cl) == 1 && cl[0] == "0")
}

// requestKeys identifies requests by method, target, body and header
// lines (sorted: the order of a header map is random), without the
// X-Request-Id a proxy may give a request (Remora's listeners do, by
// default).
func requestKeys(reqs []Request, nodeAddr string) []string {
	keys := make([]string, len(reqs))
	for i, r := range reqs {
		r.Head = strings.ReplaceAll(r.Head, nodeAddr, "NODE")
		lines := strings.Split(strings.TrimRight(r.Head, "\r\n"), "\n")
		var hs []string
		for _, h := range lines[1:] {
			if h = strings.TrimRight(h, "\r"); !strings.HasPrefix(strings.ToLower(h), "x-request-id:") {
				hs = append(hs, h)
			}
		}
		slices.Sort(hs)
		keys[i] = fmt.Sprintf("%s [%s]", r.String(), strings.Join(hs, " | "))
	}
	return keys
}

func headerDiff(ref, got http.Header, ignoredHeaders []string) string {
	var d []string
	for k, v := range got {
		if slices.Contains(ignoredHeaders, k) {
			continue
		}
		if rv, ok := ref[k]; !ok {
			d = append(d, fmt.Sprintf("%s: %q not in the reference's", k, v))
		} else if !slices.Equal(rv, v) {
			d = append(d, fmt.Sprintf("%s: %q, the reference's %q", k, v, rv))
		}
	}
	for k, v := range ref {
		if _, ok := got[k]; !ok && !slices.Contains(ignoredHeaders, k) {
			d = append(d, fmt.Sprintf("%s: missing (the reference's %q)", k, v))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "; ")
}

func clip(b []byte) []byte {
	if len(b) > 120 {
		return b[:120]
	}
	return b
}
