package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/h1diff"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
	"github.com/remora-mesh/remora/proxy/client"
	"github.com/remora-mesh/remora/proxy/server"
)

// diffLimits are the limits both proxies get in the differential cases:
// small enough that the cases that pass them stay quick.
var diffLimits = h1diff.Limits{
	ReadHeaderTimeout:      400 * time.Millisecond,
	IdleTimeout:            2 * time.Second,
	MaxHeaderBytes:         8 << 10,
	MaxResponseHeaderBytes: 16 << 10,
}

// remoraProxy is Remora as `remora run` serves a listener: package
// server's direct path, net/http (with h2c) for the rest, one upstream
// holding the node, no retries (the reference has none).
func remoraProxy(lim h1diff.Limits) h1diff.Proxy {
	return func(nodeAddr string) (string, func(), error) {
		host, port, _ := net.SplitHostPort(nodeAddr)
		var p int
		fmt.Sscan(port, &p)
		reg := discoverytest.NewRegistry()
		reg.Set("svc", discovery.Instance{ID: "n1", Address: host, Port: p, Weight: 1, Healthy: true})
		pol := &upstream.Policy{Retry: upstream.Retry{MaxAttempts: 1}}
		if err := pol.Validate(); err != nil {
			return "", nil, err
		}
		u := upstream.New(upstream.Config{Name: "svc", Policy: pol})
		ctx, cancel := context.WithCancel(context.Background())
		w, _ := reg.Watch(ctx, "svc")
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			u.Run(ctx, w)
		}()
		for u.Snapshot().Available == 0 {
			time.Sleep(time.Millisecond)
		}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		px := proxy.New(proxy.Options{Log: logrus.NewEntry(logger)})
		px.SetRoutes(proxy.Route{Upstream: u, Client: client.Options{MaxResponseHeaderBytes: lim.MaxResponseHeaderBytes}})
		srv := server.New(server.Options{
			ReadHeaderTimeout: lim.ReadHeaderTimeout, IdleTimeout: lim.IdleTimeout,
			MaxHeaderBytes: lim.MaxHeaderBytes, ErrorLog: log.New(io.Discard, "", 0),
		}, px.ForUpstream("svc"))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cancel()
			return "", nil, err
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = srv.Serve(ln)
		}()
		return ln.Addr().String(), func() {
			srv.Close()
			<-served
			px.Close()
			cancel()
			<-ran
		}, nil
	}
}

// TestConnectionStateMatchesNetHTTP runs every case of h1diff.Cases
// through Remora's proxy.Server and proxy.Proxy and through the reference
// (net/http's server and ReverseProxy) and requires Remora to be no more
// lenient: each client gets exactly its own answers, the node gets
// exactly the reference node's requests, and connections close no later.
// cmd/remora runs the same cases through `remora run`'s wiring.
func TestConnectionStateMatchesNetHTTP(t *testing.T) {
	t.Parallel()
	for _, c := range h1diff.Cases(diffLimits) {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			h1diff.Check(t, c, diffLimits, remoraProxy(diffLimits))
		})
	}
}

// FuzzConnectionState is h1diff.Fuzz through proxy.Server and proxy.Proxy.
func FuzzConnectionState(f *testing.F) {
	h1diff.Seed(f, diffLimits)
	f.Fuzz(func(t *testing.T, data []byte, split uint16, mode uint8) {
		h1diff.Fuzz(t, diffLimits, remoraProxy(diffLimits), data, split, mode)
	})
}

// A node's answer of unknown length (chunked, or until the node closes)
// reaches the client with its head flushed first, as net/http's server
// and ReverseProxy send it when ReverseProxy's immediate flush wins (as it
// nearly always does on net/http's Transport): chunked, even when empty.
// Remora's node connection gives an empty body's end at once; without
// the head's flush, its server would frame the answer Content-Length: 0
// in most runs. The differential cases accept either framing (the
// reference gives both); this test requires the deterministic one.
func TestUnknownLengthAnswerGoesOutChunked(t *testing.T) {
	t.Parallel()
	byName := map[string]h1diff.Case{}
	for _, c := range h1diff.Cases(diffLimits) {
		byName[c.Name] = c
	}
	for _, name := range []string{"node/empty chunked answer", "node/empty chunked 205", "node/empty answer until close"} {
		runThrice(t, byName, name, func(raw []byte) {
			first, _, _ := strings.Cut(string(raw), "\r\n\r\n")
			if !strings.Contains(first, "Transfer-Encoding: chunked") || strings.Contains(first, "Content-Length") {
				t.Fatalf("%s: the answer's head %q; want it chunked, without Content-Length", name, first)
			}
		})
	}
	// One whose body fails at once sends nothing, as net/http's nearly
	// always does (ReverseProxy's flush timer loses to the failure): the
	// client may retry. Remora's timer won on a loaded machine.
	for _, name := range []string{"node/chunked answer failing at once", "node/chunked answer with a bad first size"} {
		runThrice(t, byName, name, func(raw []byte) {
			if len(raw) > 0 {
				t.Fatalf("%s: the client read %q; want nothing", name, raw)
			}
		})
	}
}

// runThrice runs the case named name of cases through Remora three times
// (a race lost once in a while is the point), passing what the client
// read each time to check.
func runThrice(t *testing.T, cases map[string]h1diff.Case, name string, check func(raw []byte)) {
	t.Helper()
	c, ok := cases[name]
	if !ok {
		t.Fatalf("no case %q", name)
	}
	for range 3 {
		got, err := h1diff.Run(c, remoraProxy(diffLimits))
		if err != nil {
			t.Fatal(err)
		}
		check(got.Clients[0].Raw)
	}
}

// A client that half-closes while its request waits for a node is gone,
// for Remora as for net/http: the request is abandoned (logged 499, not
// charged to the node). What the half-closed client still reads is
// ReverseProxy's 502 with no body; Remora sent "499 status code 499", a
// status no client knows, and did not see a client with a request body
// go.
func TestClientGoneGets502OnTheWire(t *testing.T) {
	t.Parallel()
	slow := strings.Repeat(h1diff.Pause, 20) // a second
	for _, req := range []string{
		"GET /1 HTTP/1.1\r\nHost: svc\r\n\r\n",
		// A request with a body is watched once its body is read
		// whole: it was not watched at all, and waited for the node.
		"POST /1 HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello",
		// So is one whose body streams to the node (chunked, through
		// ReverseProxy), as net/http watches once a body hits its end.
		"POST /1 HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /1 HTTP/1.1\r\nHost: svc\r\nContent-Length: 70000\r\n\r\n" + strings.Repeat("x", 70000),
	} {
		c := h1diff.Case{Name: "half-close while the node is slow",
			Conns:  [][]h1diff.Step{{{Send: req, CloseWrite: true}}},
			Answer: func(r *h1diff.Request) string { return slow + h1diff.OK(r) }}
		got, err := h1diff.Run(c, remoraProxy(diffLimits))
		if err != nil {
			t.Fatal(err)
		}
		o := got.Clients[0]
		if len(o.Responses) != 1 || o.Responses[0].Status != http.StatusBadGateway || o.Responses[0].Body != "" {
			t.Fatalf("%q: the half-closed client read %q; want one 502 with no body", req, o.Raw)
		}
	}
}
