package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// Every answer gets one access log line, Remora's own included, with its
// reason; Remora's own answers write nothing to the process log.
func TestAccessLogForEveryAnswer(t *testing.T) {
	procLog, proc := logtest.NewNullLogger()
	procLog.SetLevel(logrus.InfoLevel)
	accessLog, access := logtest.NewNullLogger()
	reg := discoverytest.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var ups []*upstream.Upstream
	for _, name := range []string{"users", "empty"} {
		u := upstream.New(upstream.Config{Name: name})
		w, _ := reg.Watch(ctx, name)
		go u.Run(ctx, w)
		ups = append(ups, u)
	}
	p := proxy.New(proxy.Options{Log: logrus.NewEntry(procLog), AccessLog: logrus.NewEntry(accessLog)})
	p.SetTable(upstream.NewTable(ups...))
	t.Cleanup(p.Close)
	b := newBackend(t, "b", nil)
	reg.Set("users", b.instance())
	reg.Set("empty", discovery.Instance{ID: "drained", Address: "127.0.0.1", Port: 1, Weight: 0, Healthy: true})
	front := serveFront(t, p.Listener("out", proxy.ListenerOptions{RequestID: true, Routes: []proxy.Rule{
		{Name: "limited", PathPrefix: "/limited", Upstream: "users", RateLimit: &upstream.RateLimit{RequestsPerSecond: 1, Burst: 1}},
	}}))
	for _, u := range ups {
		for len(u.Snapshot().Nodes) == 0 { // its node, not an empty first set
			time.Sleep(time.Millisecond)
		}
	}
	proc.Reset()
	for _, tc := range []struct {
		host, path   string
		status       int
		reason, flag string
		route        string
	}{
		{"users", "/x", 200, "", "", ""},
		{"nobody", "/x", 404, "no_route", "NR", ""},
		{"empty", "/x", 503, "no_healthy_node", "UH", ""},
		{"users", "/limited", 200, "", "", "limited"},
		{"users", "/limited", 429, "rate_limited", "RL", "limited"}, // the route's limit
	} {
		access.Reset()
		req, _ := http.NewRequest(http.MethodGet, "http://"+front.Listener.Addr().String()+tc.path, nil)
		req.Host = tc.host
		req.Header.Set("X-Request-Id", "client-id-"+tc.path)
		resp, _ := do(t, req)
		if resp.StatusCode != tc.status {
			t.Fatalf("%s%s: %d; want %d", tc.host, tc.path, resp.StatusCode, tc.status)
		}
		entries := access.AllEntries()
		if len(entries) != 1 {
			t.Fatalf("%s%s: %d access log lines; want 1", tc.host, tc.path, len(entries))
		}
		f := entries[0].Data
		if f["status"] != tc.status || (tc.reason != "" && (f["reason"] != tc.reason || f["flag"] != tc.flag)) || tc.reason == "" && f["reason"] != nil ||
			f["client"] == nil || f["path"] != tc.path || tc.route != "" && f["route"] != tc.route {
			t.Fatalf("%s%s: access log fields %v", tc.host, tc.path, f)
		}
		if f["request_id"] != "client-id-"+tc.path {
			t.Fatalf("%s%s: request_id %v; want the client's on every line, Remora's own answers' too", tc.host, tc.path, f["request_id"])
		}
		if tc.status == 200 && (f["request_id"] == nil || f["upstream_addr"] == nil || f["bytes_out"] == nil || f["upstream_ms"] == nil) {
			t.Fatalf("%s%s: access log fields %v", tc.host, tc.path, f)
		}
		if tc.host != "nobody" && f["upstream"] != tc.host {
			t.Fatalf("%s%s: access log fields %v; want upstream %s", tc.host, tc.path, f, tc.host)
		}
	}

	// A CONNECT tunnel's line counts the bytes relayed each way.
	access.Reset()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	inner := "GET /tunnelled HTTP/1.1\r\nHost: users\r\nConnection: close\r\n\r\n"
	fmt.Fprintf(conn, "CONNECT users:80 HTTP/1.1\r\nHost: users:80\r\n\r\n%s", inner)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, _ := io.ReadAll(conn)
	conn.Close()
	const established = "HTTP/1.1 200 Connection Established\r\n\r\n"
	if !strings.HasPrefix(string(reply), established) {
		t.Fatalf("CONNECT: %q", reply)
	}
	var f logrus.Fields
	for deadline := time.Now().Add(5 * time.Second); f == nil && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if e := access.LastEntry(); e != nil {
			f = e.Data
		}
	}
	if f["method"] != "CONNECT" || f["status"] != 200 || f["upstream"] != "users" ||
		f["bytes_in"] != int64(len(inner)) || f["bytes_out"] != int64(len(reply)-len(established)) {
		t.Fatalf("CONNECT: access log fields %v; want bytes_in %d, bytes_out %d", f, len(inner), len(reply)-len(established))
	}
	if n := len(proc.AllEntries()); n != 0 {
		t.Fatalf("%d process log lines for three requests: %v", n, proc.AllEntries()[0].Message)
	}
}

// accessFixture is one upstream "users" whose node serves h, behind an
// outbound listener with an access log.
func accessFixture(t *testing.T, h http.HandlerFunc) (front string, u *upstream.Upstream, access *logtest.Hook) {
	t.Helper()
	return accessFixtureWith(t, h, proxy.ListenerOptions{})
}

// accessFixtureWith is accessFixture with a listener of opts.
func accessFixtureWith(t *testing.T, h http.HandlerFunc, opts proxy.ListenerOptions) (front string, u *upstream.Upstream, access *logtest.Hook) {
	t.Helper()
	accessLog, access := logtest.NewNullLogger()
	reg := discoverytest.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u = upstream.New(upstream.Config{Name: "users"})
	w, _ := reg.Watch(ctx, "users")
	go u.Run(ctx, w)
	p := proxy.New(proxy.Options{AccessLog: logrus.NewEntry(accessLog)})
	p.SetTable(upstream.NewTable(u))
	t.Cleanup(p.Close)
	reg.Set("users", newBackend(t, "u1", h).instance())
	// Its node, not just a first set: the watch may answer the empty
	// registry before the Set.
	for u.Snapshot().Available == 0 {
		time.Sleep(time.Millisecond)
	}
	return serveFront(t, p.Listener("out", opts)).URL, u, access
}

// A CONNECT tunnel's line has a request ID when its listener gives
// requests one (request_id: true), as every other line of it has: the
// client's, or else one of Remora's.
func TestAccessLogOfATunnelHasARequestID(t *testing.T) {
	for _, tc := range []struct{ name, header, want string }{
		{"the client's", "X-Request-Id: client-id\r\n", "client-id"},
		{"Remora's", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front, _, access := accessFixtureWith(t, nil, proxy.ListenerOptions{RequestID: true})
			c, err := net.Dial("tcp", strings.TrimPrefix(front, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "CONNECT users:80 HTTP/1.1\r\nHost: users:80\r\n"+tc.header+"\r\nGET / HTTP/1.1\r\nHost: users\r\nConnection: close\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if reply, _ := io.ReadAll(c); !strings.HasPrefix(string(reply), "HTTP/1.1 200 Connection Established") {
				t.Fatalf("%q; want a tunnel", reply)
			}
			c.Close()
			f := lastAccess(t, access)
			id, _ := f["request_id"].(string)
			if f["method"] != "CONNECT" || tc.want != "" && id != tc.want || tc.want == "" && len(id) != 36 {
				t.Fatalf("the tunnel's line: method %v, request_id %q; want CONNECT and %q (or a UUID)", f["method"], id, tc.want)
			}
		})
	}
}

// lastAccess waits for an access log line and returns its fields.
func lastAccess(t *testing.T, access *logtest.Hook) logrus.Fields {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if e := access.LastEntry(); e != nil {
			return e.Data
		}
	}
	t.Fatal("no access log line")
	return nil
}

// An upgraded connection's line is a 101 with the bytes relayed each way,
// as a CONNECT tunnel's is a 200 with its bytes, however the client sent
// its first bytes (with its request, read ahead by the server, or after
// the 101) and ended the connection (closed, or half-closed first).
func TestAccessLogOfAnUpgrade(t *testing.T) {
	for _, tc := range []struct{ early, halfClose bool }{{false, false}, {false, true}, {true, false}, {true, true}} {
		name := fmt.Sprintf("early=%v,halfClose=%v", tc.early, tc.halfClose)
		ended := make(chan error, 1)
		front, u, access := accessFixture(t, upgradeNode("echo", ended))
		c, err := net.Dial("tcp", strings.TrimPrefix(front, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		head := "GET /ws HTTP/1.1\r\nHost: users\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
		const payload = "0123456789"
		if tc.early {
			io.WriteString(c, head+payload)
		} else {
			io.WriteString(c, head)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		buf := make([]byte, 512)
		read := func(want string) {
			for !strings.Contains(string(got), want) {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("%s: %q: %v", name, got, err)
				}
			}
		}
		read("node-first")
		if !tc.early {
			io.WriteString(c, payload)
		}
		read("[" + payload + "]")
		if tc.halfClose {
			c.(*net.TCPConn).CloseWrite()
			io.ReadAll(c)
		}
		c.Close()
		<-ended
		f := lastAccess(t, access)
		const relayedOut = len("node-first[" + payload + "]")
		if f["status"] != http.StatusSwitchingProtocols || f["reason"] != nil || u.Metrics().ClientClosed.Load() != 0 {
			t.Errorf("%s: status %v, reason %v, client_closed %d; want 101 and no reason", name, f["status"], f["reason"], u.Metrics().ClientClosed.Load())
		}
		if f["bytes_in"] != int64(len(payload)) || f["bytes_out"] != int64(relayedOut) {
			t.Errorf("%s: bytes_in %v, bytes_out %v; want the bytes relayed, %d and %d", name, f["bytes_in"], f["bytes_out"], len(payload), relayedOut)
		}
	}
}

// bytes_in is the request body's size also when its length was not
// announced (chunked; over HTTP/2, any body without content-length, such
// as a gRPC call's).
func TestAccessLogCountsABodyOfUnknownLength(t *testing.T) {
	front, _, access := accessFixture(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	const payload = "0123456789"
	for _, chunked := range []bool{false, true} {
		access.Reset()
		var body io.Reader = strings.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // no length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, front+"/", body)
		req.Host = "users"
		if resp, _ := do(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("chunked=%v: %d", chunked, resp.StatusCode)
		}
		if f := lastAccess(t, access); f["bytes_in"] != int64(len(payload)) {
			t.Errorf("chunked=%v: bytes_in %v; want %d", chunked, f["bytes_in"], len(payload))
		}
	}
}
