package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
	"github.com/remora-mesh/remora/proxy/client"
)

// newFixtureClient is newFixture with the upstreams' client options
// (protocol: h2c, say).
func newFixtureClient(t testing.TB, opts client.Options, names ...string) *fixture {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	f := &fixture{reg: discoverytest.NewRegistry(), ups: map[string]*upstream.Upstream{}, log: hook}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var routes []proxy.Route
	for _, name := range names {
		u := upstream.New(upstream.Config{Name: name})
		w, _ := f.reg.Watch(ctx, name)
		go u.Run(ctx, w)
		f.ups[name] = u
		routes = append(routes, proxy.Route{Upstream: u, Client: opts})
	}
	f.proxy = proxy.New(proxy.Options{Log: logrus.NewEntry(logger)})
	f.proxy.SetRoutes(routes...)
	f.front = serveFront(t, f.proxy)
	t.Cleanup(f.proxy.Close)
	return f
}

// newH2CBackend is newBackend serving HTTP/1.1 and h2c (prior knowledge).
func newH2CBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	}))
	b.srv.Config.Protocols = new(http.Protocols)
	b.srv.Config.Protocols.SetHTTP1(true)
	b.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	return b
}

// exchangeRaw writes msg on a new connection to addr and returns all it
// reads until the connection ends or wait passes.
func exchangeRaw(t *testing.T, addr, msg string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	b, _ := io.ReadAll(c)
	return string(b)
}

// What follows a CONNECT's head is the client's tunnel. A CONNECT that is
// refused must end the connection: the bytes the client sent for the
// tunnel (pipelined, or announced as a body) must never be read as
// requests and sent on to an upstream.
func TestRefusedCONNECTEndsTheConnection(t *testing.T) {
	f := newFixture(t, "users")
	b := newBackend(t, "u1", nil)
	f.set(t, "users", b.instance())
	lf, lurl := listenerFixture(t, proxy.ListenerOptions{})
	lf.set(t, "users", b.instance()) // a second node of the listener's users
	const tunnelled = "GET /smuggled HTTP/1.1\r\nHost: users\r\n\r\n"
	for _, tc := range []struct{ name, addr, head string }{
		{"unknown host", f.front.URL, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\n\r\n"},
		{"unknown host, with a body", f.front.URL, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\nContent-Length: 5\r\n\r\nhello"},
		{"unknown host through a listener", lurl, "CONNECT nowhere:80 HTTP/1.1\r\nHost: nowhere:80\r\n\r\n"},
		{"dedicated port", serveFront(t, f.proxy.ForUpstream("nowhere")).URL, "CONNECT users:80 HTTP/1.1\r\nHost: users:80\r\n\r\n"},
	} {
		before := b.hits.Load()
		out := exchangeRaw(t, strings.TrimPrefix(tc.addr, "http://"), tc.head+tunnelled, 2*time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 404 ") {
			t.Errorf("%s: %q; want 404", tc.name, out)
		}
		if strings.Count(out, "HTTP/1.1 ") != 1 || b.hits.Load() != before {
			t.Errorf("%s: the tunnel's bytes were read as a request: %q", tc.name, out)
		}
	}
}

// An Upgrade header that the Connection header does not list asks for
// nothing (RFC 9110 section 7.8; ReverseProxy drops it as hop-by-hop):
// the request goes to an h2c upstream as any other, not answered 501.
func TestStrayUpgradeHeaderToH2CUpstreamIsForwarded(t *testing.T) {
	f := newFixtureClient(t, client.Options{H2C: true}, "users")
	f.set(t, "users", newH2CBackend(t, "u1", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" upgrade="+r.Header.Get("Upgrade"))
	}).instance())
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	req.Header.Set("Upgrade", "websocket")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK || body != "HTTP/2.0 upgrade=" {
		t.Fatalf("%d %q; want the node's answer over HTTP/2, without Upgrade", resp.StatusCode, body)
	}
	req.Header.Set("Connection", "Upgrade") // a real one: HTTP/2 cannot carry it
	if resp, body := do(t, req); resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("a real Upgrade: %d %q; want 501", resp.StatusCode, body)
	}
}
