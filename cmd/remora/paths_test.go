package main

// Settings on every protocol path: each test shows a setting honoured, or
// refused, on a path where it used to be ignored or applied differently.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/remora-mesh/remora/pkg/upstream"
)

// svcConfig is a Remora on ephemeral ports with one static service "svc"
// whose instances are given as YAML flow mappings, and the upstream block
// extra.
func svcConfig(instances []string, upstream string) string {
	var b strings.Builder
	b.WriteString("admin: {address: \"127.0.0.1:0\"}\nlisteners: [{name: outbound, address: \"127.0.0.1:0\"}]\n")
	b.WriteString("registries:\n  - name: s\n    type: static\n    static:\n      services:\n        svc:\n")
	for _, in := range instances {
		fmt.Fprintf(&b, "          - %s\n", in)
	}
	b.WriteString("upstreams:\n  - name: svc\n" + upstream)
	return b.String()
}

// rate_limit × mirrored copies: a copy (here to the upstream's own canary
// pool) takes no token of the rate limit live requests share; a live
// request is never refused because of its copies.
func TestMirrorCopiesSpendNoLiveRateLimit(t *testing.T) {
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	a := startRemora(t, svcConfig([]string{
		fmt.Sprintf("{id: s1, address: %q}", stable.srv.Listener.Addr().String()),
		fmt.Sprintf("{id: c1, address: %q, metadata: {canary: \"true\"}}", canary.srv.Listener.Addr().String()),
	}, `    rate_limit: {requests_per_second: 0.001, burst: 2}
    mirror: {canary: true, percent: 100}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
		req.Host = "svc"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	eventually(t, 2*time.Second, "the copy reached the canary", func() bool { return canary.hits.Load() == 1 })
	if code := get(); code != 200 {
		t.Fatalf("second live request within burst 2: %d; its first request's mirrored copy spent the live rate limit", code)
	}
}

// circuit_breaker.max_requests × mirrored copies: a copy takes no place
// under the breaker, so it is neither refused by it nor counted as an
// overflow or a 5xx that no client got.
func TestMirrorCopiesTakeNoLiveCircuitBreakerPlace(t *testing.T) {
	stable := startBackend(t, "stable")
	canary := startBackend(t, "canary")
	a := startRemora(t, svcConfig([]string{
		fmt.Sprintf("{id: s1, address: %q}", stable.srv.Listener.Addr().String()),
		fmt.Sprintf("{id: c1, address: %q, metadata: {canary: \"true\"}}", canary.srv.Listener.Addr().String()),
	}, `    circuit_breaker: {max_requests: 1}
    mirror: {canary: true, percent: 100}
`))
	u := a.Table().Lookup("svc")
	eventually(t, 5*time.Second, "ready", func() bool { return u.Snapshot().Available == 2 })
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/?sleep=200ms", nil)
	req.Host = "svc"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	time.Sleep(300 * time.Millisecond)
	m := u.Metrics()
	if resp.StatusCode != 200 || m.Local[upstream.ReasonOverflow].Load() != 0 || m.Requests[0][5].Load() != 0 {
		t.Fatalf("one live request (%d), one copy (canary got %d): the upstream counts %d overflow answers and %d 5xx; "+
			"a copy must not be admitted, refused or counted as live traffic", resp.StatusCode, canary.hits.Load(),
			m.Local[upstream.ReasonOverflow].Load(), m.Requests[0][5].Load())
	}
}

// protocol: tcp × the HTTP listener: a tcp upstream relays raw
// connections on its own port. An HTTP request whose Host names it gets a
// 404 that says so, and nothing is dialed (validate refuses routes and
// mirrors to it).
func TestTCPUpstreamTakesNoHTTPRequest(t *testing.T) {
	var accepted atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "raw:%s", line)
			}()
		}
	}()
	a := startRemora(t, staticConfig([]string{ln.Addr().String()}, "    protocol: tcp\n    listen: \""+freeAddr(t)+"\"\n"))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
	req.Host = "svc"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := accepted.Load(); n != 0 || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("an HTTP request with Host: svc (a tcp upstream) on the outbound listener: %d, %d connections to its node; want 404 and none",
			resp.StatusCode, n)
	}
}

// protocol: h2c × WebSocket (Upgrade): HTTP/2 has no Upgrade, so the
// request is answered 501 by Remora, and neither node is charged for it
// (the h2c transport's refusal used to count as a gateway failure on each
// node tried: one client could eject a whole upstream).
func TestUpgradeToAnH2CUpstreamIsRefusedLocally(t *testing.T) {
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		up := websocket.Upgrader{}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, err := up.Upgrade(w, r, nil); err == nil {
				c.Close()
				return
			}
			fmt.Fprint(w, "ok")
		}), Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		addrs = append(addrs, ln.Addr().String())
	}
	a := startRemora(t, staticConfig(addrs, `    protocol: h2c
    health: {passive: {consecutive_gateway_failure: 1, base_ejection_time: 1h, max_ejection_percent: 100}}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", a.addr("outbound"))
	}}
	_, resp, err := d.Dial("ws://svc/ws", nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	time.Sleep(100 * time.Millisecond)
	var failed []string
	for _, n := range a.Table().Lookup("svc").Snapshot().Nodes {
		if f := n.Stats.Failures.Load(); f > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d failures", n.ID, f))
		}
	}
	if status != http.StatusNotImplemented {
		t.Errorf("a WebSocket request to an h2c upstream: %d %v; want 501", status, err)
	}
	if avail := a.Table().Lookup("svc").Snapshot().Available; avail != 2 || len(failed) > 0 {
		t.Fatalf("a WebSocket request to an h2c upstream (answer %d, %v) left %d of 2 nodes available, charged %v; "+
			"the client's request must not count against healthy nodes", status, err, avail, failed)
	}
}

// request_headers, response_headers, rewrite, tls and mirror × CONNECT: a tunnel
// relays bytes as they are, so a CONNECT to an upstream (or through a
// route) with such settings is refused with 403 naming them, rather than
// let what goes through the tunnel skip them. Without them the tunnel
// opens.
func TestConnectRefusedWhereHeaderRulesApply(t *testing.T) {
	plain, ruled := startBackend(t, "plain"), startBackend(t, "ruled")
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners:
  - name: outbound
    address: "127.0.0.1:0"
    routes: [{name: via-route, match: {host: routed}, upstream: plain, rewrite: {path: /x}}]
registries: [{name: s, type: static, static: {services: {plain: [{address: %q}], ruled: [{address: %q}], secure: [{address: %q}], copied: [{address: %[1]q}]}}}]
upstreams:
  - {name: plain}
  - {name: ruled, request_headers: {set: {x-caller: app}, remove: [x-secret]}}
  - {name: secure, tls: {}}
  - {name: copied, mirror: {upstream: plain, percent: 100}}
`, plain.srv.Listener.Addr().String(), ruled.srv.Listener.Addr().String(), ruled.srv.Listener.Addr().String()))
	connect := func(target string) string {
		t.Helper()
		c, err := net.Dial("tcp", a.addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			return "200" // the tunnel is open: nothing to read
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Sprintf("%d %s", resp.StatusCode, body)
	}
	if got := connect("plain:80"); !strings.HasPrefix(got, "200") {
		t.Errorf("CONNECT to an upstream without rules: %s", got)
	}
	for target, names := range map[string]string{
		"ruled:80": "the upstream's request_headers", "routed:80": "route via-route's rewrite", "secure:443": "the upstream's tls",
		"copied:80": "the upstream's mirror",
	} {
		if got := connect(target); !strings.HasPrefix(got, "403") || !strings.Contains(got, names) {
			t.Errorf("CONNECT %s: %s; want 403 naming %s", target, got, names)
		}
	}
}

// A relay's latency is the time until it is established, not its life:
// a CONNECT tunnel's (the node accepted it) and a WebSocket's (the node
// answered 101). Held open for 300 ms each, neither shows as a slow
// request in the latency histogram, the node's latency estimate (what
// ewma balances on) or the canary's judge (latency_p99_margin).
func TestRelayLatencyIsUntilEstablished(t *testing.T) {
	up := websocket.Upgrader{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, _, _ = c.ReadMessage() // until the client closes
	}))
	defer backend.Close()
	a := startRemora(t, svcConfig([]string{fmt.Sprintf("{id: n1, address: %q}", backend.Listener.Addr().String())}, ""))
	u := a.Table().Lookup("svc")
	eventually(t, 5*time.Second, "ready", func() bool { return u.Snapshot().Available == 1 })
	slow := func() uint64 { // observations above 100 ms
		var n uint64
		h := &u.Metrics().Durations[0]
		for i := range h.Counts {
			if i >= len(upstream.DurationBuckets) || upstream.DurationBuckets[i] > 0.1 {
				n += h.Counts[i].Load()
			}
		}
		return n
	}
	total := func() (n uint64) {
		h := &u.Metrics().Durations[0]
		for i := range h.Counts {
			n += h.Counts[i].Load()
		}
		return n
	}

	c, err := net.Dial("tcp", a.addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "CONNECT svc:80 HTTP/1.1\r\nHost: svc\r\n\r\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("CONNECT: %q %v", line, err)
	}
	time.Sleep(300 * time.Millisecond)
	c.Close()

	d := websocket.Dialer{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", a.addr("outbound"))
	}}
	ws, _, err := d.Dial("ws://svc/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	ws.Close()

	eventually(t, 5*time.Second, "both relays counted", func() bool { return total() == 2 })
	if n := slow(); n != 0 {
		t.Errorf("%d of 2 relays held 300 ms were recorded above 100 ms: their life was taken for their latency", n)
	}
	if est := u.Snapshot().Nodes[0].Stats.Latency(time.Now()); est > 100*time.Millisecond {
		t.Errorf("the node's latency estimate is %v after two relays held 300 ms", est)
	}
}
