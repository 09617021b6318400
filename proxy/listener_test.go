package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// echo is a backend handler that answers with what it received: the path
// and the headers, as JSON.
func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Node-Header", "1")
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"uri": r.URL.RequestURI(), "header": r.Header})
}

type echoed struct {
	URI    string      `json:"uri"`
	Header http.Header `json:"header"`
}

// listenerFixture is a proxy with upstreams "users", "api" and "v2" (echo
// backends named after them) behind a listener with opts.
func listenerFixture(t *testing.T, opts proxy.ListenerOptions) (*fixture, string) {
	t.Helper()
	f := newFixture(t, "users", "api", "v2")
	for _, name := range []string{"users", "api", "v2"} {
		f.set(t, name, newBackend(t, name, echo).instance())
	}
	return f, serveFront(t, f.proxy.Listener("out", opts)).URL
}

func call(t *testing.T, url, method, host, path string, header http.Header) (*http.Response, echoed) {
	t.Helper()
	req, _ := http.NewRequest(method, url+path, nil)
	req.Host = host
	for k, vv := range header {
		req.Header[k] = vv
	}
	resp, body := do(t, req)
	var e echoed
	if resp.StatusCode == 200 && method != http.MethodHead {
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("%s %s: %v in %q", method, path, err, body)
		}
	}
	return resp, e
}

func TestListenerRoutes(t *testing.T) {
	_, url := listenerFixture(t, proxy.ListenerOptions{Routes: []proxy.Rule{
		{Name: "v2", PathPrefix: "/api/v2/", Upstream: "v2", StripPrefix: true, PrefixRewrite: "/"},
		{Name: "api-get", PathPrefix: "/api/", Methods: []string{"GET"}, Upstream: "api"},
		{Name: "beta", Headers: []proxy.HeaderCond{{Name: "X-Beta", Value: "1"}}, Upstream: "v2", RewritePath: "/beta"},
		{Name: "ids", PathRegexp: regexp.MustCompile(`^(?:/id/[0-9]+)$`), Upstream: "api"},
		{Name: "other-host", Host: "other", Upstream: "api"},
	}})
	for _, tc := range []struct {
		name, method, host, path string
		header                   http.Header
		backend, uri             string
	}{
		{"prefix, stripped", "GET", "users", "/api/v2/items?x=1", nil, "v2", "/items?x=1"},
		{"prefix and method", "GET", "users", "/api/orders", nil, "api", "/api/orders"},
		{"method not matched: by Host", "POST", "users", "/api/orders", nil, "users", "/api/orders"},
		{"header, path rewritten", "GET", "users", "/anything", http.Header{"X-Beta": {"1"}}, "v2", "/beta"},
		{"header value not matched", "GET", "users", "/anything", http.Header{"X-Beta": {"2"}}, "users", "/anything"},
		{"regex", "GET", "users", "/id/42", nil, "api", "/id/42"},
		{"regex anchored", "GET", "users", "/id/42/x", nil, "users", "/id/42/x"},
		{"host", "GET", "other:8080", "/", nil, "api", "/"},
		{"no route: the Host's upstream", "GET", "users", "/", nil, "users", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, e := call(t, url, tc.method, tc.host, tc.path, tc.header)
			if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != tc.backend || e.URI != tc.uri {
				t.Fatalf("%d from %q with %q; want %q with %q", resp.StatusCode, resp.Header.Get("X-Backend"), e.URI, tc.backend, tc.uri)
			}
		})
	}
	resp, _ := call(t, url, "GET", "nobody", "/", nil)
	if resp.StatusCode != 404 {
		t.Fatalf("no route and an unknown Host: %d; want 404", resp.StatusCode)
	}
}

// A dedicated port's routes send some requests elsewhere; the rest go to
// its upstream, whatever their Host.
func TestListenerDedicatedPortRoutes(t *testing.T) {
	_, url := listenerFixture(t, proxy.ListenerOptions{Upstream: "users", Routes: []proxy.Rule{{PathPrefix: "/api/", Upstream: "api"}}})
	if resp, _ := call(t, url, "GET", "whatever", "/api/x", nil); resp.Header.Get("X-Backend") != "api" {
		t.Fatalf("routed to %q; want api", resp.Header.Get("X-Backend"))
	}
	if resp, _ := call(t, url, "GET", "whatever", "/x", nil); resp.Header.Get("X-Backend") != "users" {
		t.Fatalf("default to %q; want users", resp.Header.Get("X-Backend"))
	}
}

// Header rules of a route and of an upstream apply on the direct path and
// on ReverseProxy's alike.
func TestListenerHeaderRules(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "users", echo).instance())
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"],
		RequestHeaders:  &proxy.HeaderRules{Set: map[string]string{"X-Upstream": "users"}},
		ResponseHeaders: &proxy.HeaderRules{Remove: []string{"X-Node-Header"}, Add: map[string]string{"X-Up": "1"}},
	})
	url := serveFront(t, f.proxy.Listener("out", proxy.ListenerOptions{Routes: []proxy.Rule{{
		Upstream:        "users",
		RequestHeaders:  &proxy.HeaderRules{Add: map[string]string{"X-Added": "a"}, Set: map[string]string{"X-Set": "s"}, Remove: []string{"X-Secret"}},
		ResponseHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Route": "r"}},
	}}})).URL
	for _, method := range []string{"GET", "HEAD"} { // GET takes the direct exchange, HEAD ReverseProxy
		resp, e := call(t, url, method, "users", "/", http.Header{"X-Secret": {"x"}, "X-Set": {"old"}, "X-Added": {"mine"}})
		if method == "GET" {
			if e.Header.Get("X-Secret") != "" || e.Header.Get("X-Set") != "s" || strings.Join(e.Header["X-Added"], ",") != "mine,a" || e.Header.Get("X-Upstream") != "users" {
				t.Errorf("the node got %v", e.Header)
			}
		}
		if resp.Header.Get("X-Node-Header") != "" || resp.Header.Get("X-Up") != "1" || resp.Header.Get("X-Route") != "r" {
			t.Errorf("%s: the client got %v", method, resp.Header)
		}
	}
}

// Forwarding headers: kept by default, appended or dropped by the
// listener's mode; a request ID given when absent, kept when present.
func TestListenerForwardedAndRequestID(t *testing.T) {
	in := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "Forwarded": {"for=203.0.113.7"}}
	for _, tc := range []struct {
		mode            proxy.Forwarded
		xff, proto, fwd string
		method          string
	}{
		{proxy.ForwardedKeep, "203.0.113.7", "https", "for=203.0.113.7", "GET"},
		{proxy.ForwardedKeep, "203.0.113.7", "https", "for=203.0.113.7", "OPTIONS"},
		{proxy.ForwardedAppend, "203.0.113.7, 127.0.0.1", "http", "for=203.0.113.7", "GET"},
		{proxy.ForwardedDrop, "", "", "", "GET"},
		{proxy.ForwardedDrop, "", "", "", "OPTIONS"},
	} {
		_, url := listenerFixture(t, proxy.ListenerOptions{Forwarded: tc.mode, RequestID: true})
		_, e := call(t, url, tc.method, "users", "/", in)
		if e.Header.Get("X-Forwarded-For") != tc.xff || e.Header.Get("X-Forwarded-Proto") != tc.proto || e.Header.Get("Forwarded") != tc.fwd {
			t.Errorf("mode %d %s: the node got %v", tc.mode, tc.method, e.Header)
		}
		id := e.Header["X-Request-Id"]
		if len(id) != 1 || !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id[0]) {
			t.Errorf("mode %d %s: request ID %q", tc.mode, tc.method, id)
		}
		_, e2 := call(t, url, tc.method, "users", "/", http.Header{"X-Request-Id": {"mine"}})
		if strings.Join(e2.Header["X-Request-Id"], ",") != "mine" {
			t.Errorf("a request's own ID became %q", e2.Header["X-Request-Id"])
		}
	}
}

// A route's rate limit answers 429 with Retry-After, counted per route.
func TestListenerRouteRateLimit(t *testing.T) {
	f, url := listenerFixture(t, proxy.ListenerOptions{Routes: []proxy.Rule{
		{Name: "limited", PathPrefix: "/slow/", Upstream: "api", RateLimit: &upstream.RateLimit{RequestsPerSecond: 1, Burst: 2}},
	}})
	codes := map[int]int{}
	for range 5 {
		resp, _ := call(t, url, "GET", "users", "/slow/x", nil)
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	}
	if codes[200] != 2 || codes[429] != 3 {
		t.Fatalf("%v; want 2 passed and 3 limited", codes)
	}
	if resp, _ := call(t, url, "GET", "users", "/fast", nil); resp.StatusCode != 200 {
		t.Fatalf("another route: %d", resp.StatusCode)
	}
	stats := f.proxy.RouteStats()
	if len(stats) != 1 || stats[0].Name != "limited" || stats[0].Requests != 5 || stats[0].RateLimited != 3 {
		t.Fatalf("route stats %+v", stats)
	}
}

// A reload of the listener (Listener again) keeps a route's counters, and
// its bucket while its rate_limit is the same: no fresh burst, /routes
// not zeroed. A changed rate_limit starts a bucket of its own.
func TestListenerReloadKeepsRouteCountersAndBuckets(t *testing.T) {
	opts := func(rps float64) proxy.ListenerOptions {
		return proxy.ListenerOptions{Routes: []proxy.Rule{
			{Name: "other", PathPrefix: "/other/", Upstream: "users"},
			{Name: "limited", PathPrefix: "/slow/", Upstream: "api", RateLimit: &upstream.RateLimit{RequestsPerSecond: rps, Burst: 2}},
		}}
	}
	f, url := listenerFixture(t, opts(0.01))
	codes := func(n int) (got []int) {
		for range n {
			resp, _ := call(t, url, "GET", "users", "/slow/x", nil)
			got = append(got, resp.StatusCode)
		}
		return got
	}
	if got := fmt.Sprint(codes(2)); got != "[200 200]" {
		t.Fatalf("before the reload: %s", got)
	}
	reloaded := opts(0.01)
	reloaded.Routes = append([]proxy.Rule{{Name: "new", Path: "/new", Upstream: "v2"}}, reloaded.Routes...)
	f.proxy.Listener("out", reloaded)
	if got := fmt.Sprint(codes(2)); got != "[429 429]" {
		t.Errorf("after a reload that kept the rate limit: %s, want [429 429] (the burst was spent)", got)
	}
	stats := map[string]proxy.RouteStats{}
	for _, s := range f.proxy.RouteStats() {
		stats[s.Name] = s
	}
	if s := stats["limited"]; s.Requests != 4 || s.RateLimited != 2 {
		t.Errorf("route stats after the reload %+v; want 4 requests, 2 limited", s)
	}
	f.proxy.Listener("out", opts(0.02))
	if got := fmt.Sprint(codes(3)); got != "[200 200 429]" {
		t.Errorf("after a reload that changed the rate limit: %s, want a new burst of 2", got)
	}
}

// A CONNECT that a route matches is tunnelled to the route's upstream, as
// one without routes is to its Host's: never sent on as an HTTP request.
func TestListenerRouteTunnelsCONNECT(t *testing.T) {
	f, url := listenerFixture(t, proxy.ListenerOptions{Routes: []proxy.Rule{
		{Name: "by-host", Host: "users", Upstream: "users"},
		{Name: "paths", PathPrefix: "/", Upstream: "v2"}, // a CONNECT has no path: never matches
		{Name: "default", Upstream: "api"},
	}})
	for _, tc := range []struct{ target, wantNode string }{
		{"users:80", "/users-tunnelled"},
		{"elsewhere:443", "/api-tunnelled"},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		path := tc.wantNode
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nGET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", tc.target, tc.target, path)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		reply, _ := io.ReadAll(conn)
		conn.Close()
		head, rest, _ := strings.Cut(string(reply), "\r\n\r\n")
		if head != "HTTP/1.1 200 Connection Established" {
			t.Fatalf("CONNECT %s: %q; want a tunnel", tc.target, reply)
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(rest)), nil)
		if err != nil {
			t.Fatalf("CONNECT %s: the tunnelled answer: %v in %q", tc.target, err, rest)
		}
		body, _ := io.ReadAll(resp.Body)
		var e echoed
		if err := json.Unmarshal(body, &e); err != nil || e.URI != path {
			t.Fatalf("CONNECT %s: the node answered %q; want the echo of %s", tc.target, body, path)
		}
	}
	for _, s := range f.proxy.RouteStats() {
		if want := map[string]uint64{"by-host": 1, "paths": 0, "default": 1}[s.Name]; s.Requests != want {
			t.Errorf("route %s: %d requests, want %d", s.Name, s.Requests, want)
		}
	}
}

// A CONNECT whose target is a path, not host:port (which net/http's
// server parses as origin form), is refused with 400 and its connection
// closed: nothing is tunnelled, nothing reaches a node.
func TestCONNECTToAPathIsRefused(t *testing.T) {
	_, url := listenerFixture(t, proxy.ListenerOptions{})
	for _, target := range []string{"/1", "/users:80"} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: users\r\n\r\nGET /tunnelled HTTP/1.1\r\nHost: users\r\n\r\n", target)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		reply, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(reply), "HTTP/1.1 400 ") || strings.Count(string(reply), "HTTP/1.1 ") != 1 {
			t.Errorf("CONNECT %s: %q; want one 400 and the connection closed", target, reply)
		}
	}
}

// An upstream header rule that sets X-Request-Id gives the request its ID
// on every path: the listener then gives it none of its own.
func TestUpstreamRuleSetsRequestID(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "users", echo).instance())
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"],
		RequestHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Request-Id": "from-rule"}},
	})
	url := serveFront(t, f.proxy.Listener("out", proxy.ListenerOptions{RequestID: true})).URL
	for _, method := range []string{"GET", "OPTIONS"} { // the direct exchange, and ReverseProxy
		_, e := call(t, url, method, "users", "/", nil)
		if got := strings.Join(e.Header["X-Request-Id"], ","); got != "from-rule" {
			t.Errorf("%s: the node got X-Request-Id %q; want the rule's", method, got)
		}
	}
}

// Header rules have the last word on the forwarding headers, whatever the
// listener's forwarded mode (as Envoy's request_headers_to_add come after
// its X-Forwarded-For handling): an upstream's rule that sets
// X-Forwarded-Proto and a listener route's that sets X-Forwarded-Host
// reach the node, on the direct exchange (GET) and through ReverseProxy
// (OPTIONS), and the route's reaches a mirror's copy.
func TestHeaderRulesWinOverTheForwardedMode(t *testing.T) {
	modes := map[proxy.Forwarded]string{proxy.ForwardedKeep: "keep", proxy.ForwardedAppend: "append", proxy.ForwardedDrop: "drop"}
	for mode, name := range modes {
		for _, method := range []string{"GET", "OPTIONS"} {
			t.Run(name+"/"+method, func(t *testing.T) {
				f := newFixture(t, "users", "shadow")
				primary, copies := make(chan http.Header, 1), make(chan http.Header, 1)
				f.set(t, "users", newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) { primary <- r.Header.Clone() }).instance())
				f.set(t, "shadow", newBackend(t, "shadow", func(w http.ResponseWriter, r *http.Request) { copies <- r.Header.Clone() }).instance())
				f.proxy.SetRoutes(
					proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 100}),
						RequestHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Forwarded-Proto": "https"}}},
					proxy.Route{Upstream: f.ups["shadow"]})
				url := serveFront(t, f.proxy.Listener("out", proxy.ListenerOptions{Forwarded: mode, Routes: []proxy.Rule{
					{Name: "all", Upstream: "users", RequestHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Forwarded-Host": "api.example"}}},
				}})).URL
				req, _ := http.NewRequest(method, url+"/", nil)
				req.Host = "users"
				req.Header.Set("X-Forwarded-Proto", "http")
				if resp, _ := do(t, req); resp.StatusCode != 200 {
					t.Fatalf("%d", resp.StatusCode)
				}
				for _, got := range []struct {
					who  string
					ch   chan http.Header
					want map[string]string
				}{
					{"the node", primary, map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example"}},
					{"the copy's node", copies, map[string]string{"X-Forwarded-Host": "api.example"}},
				} {
					var h http.Header
					select {
					case h = <-got.ch:
					case <-time.After(5 * time.Second):
						t.Fatalf("%s got no request", got.who)
					}
					for k, v := range got.want {
						if strings.Join(h[k], ",") != v {
							t.Errorf("%s got %s %q; want %q", got.who, k, h[k], v)
						}
					}
				}
			})
		}
	}
}

// Response header rules apply to a node's 1xx answers (103 Early Hints, a
// 100 Continue passed on) as to its final one: a header an upstream's or
// a route's rules remove never reaches the client, and what they set or
// add is on every answer. The 1xx went out as the node sent it.
func TestListenerHeaderRulesOn1xx(t *testing.T) {
	f := newFixture(t, "users")
	f.set(t, "users", newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.Header().Set("X-Node-Secret", "s")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = io.WriteString(w, "ok")
	}).instance())
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"],
		ResponseHeaders: &proxy.HeaderRules{Remove: []string{"X-Node-Secret"}, Set: map[string]string{"X-Up": "1"}},
	})
	url := serveFront(t, f.proxy.Listener("out", proxy.ListenerOptions{Routes: []proxy.Rule{{
		Upstream:        "users",
		ResponseHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Route": "r"}},
	}}})).URL
	for _, method := range []string{"GET", "POST"} {
		var early []http.Header
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			early = append(early, http.Header(h).Clone())
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url+"/", strings.NewReader("hi"))
		req.Host = "users"
		resp, body := do(t, req)
		if body != "ok" || resp.Header.Get("X-Node-Secret") != "" || resp.Header.Get("X-Up") != "1" || resp.Header.Get("X-Route") != "r" {
			t.Errorf("%s: final answer %q %v", method, body, resp.Header)
		}
		if len(early) != 1 {
			t.Fatalf("%s: %d 1xx answers; want the 103", method, len(early))
		}
		if h := early[0]; h.Get("X-Node-Secret") != "" || h.Get("X-Up") != "1" || h.Get("X-Route") != "r" || h.Get("Link") == "" {
			t.Errorf("%s: the 103 came with %v; want the rules applied and its Link kept", method, h)
		}
	}
}
