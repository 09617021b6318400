package proxy_test

import (
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testnet"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

func validMirror(t testing.TB, m upstream.Mirror) *upstream.Mirror {
	t.Helper()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return &m
}

// Mirroring 10% to a second upstream: about 100 of 1,000 requests are
// copied, with their body and the mirror header, and every primary
// request is answered.
func TestMirror(t *testing.T) {
	f := newFixture(t, "users", "shadow")
	var mu sync.Mutex
	var copies []string
	f.set(t, "users", newBackend(t, "users", nil).instance())
	f.set(t, "shadow", newBackend(t, "shadow", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		copies = append(copies, r.Header.Get(proxy.MirrorHeader)+" "+r.Method+" "+string(body))
		mu.Unlock()
	}).instance())
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 10})},
		proxy.Route{Upstream: f.ups["shadow"]})
	for i := range 1000 {
		req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/", strings.NewReader("payload"))
		req.Host = "users"
		if resp, body := do(t, req); resp.StatusCode != 200 || !strings.Contains(body, "body=payload") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	m := f.ups["users"].Metrics()
	waitUntil(t, 5*time.Second, "copies answered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return uint64(len(copies)) == m.Mirrored.Load()
	})
	n := int(m.Mirrored.Load())
	if math.Abs(float64(n-100)) > 30 || m.MirrorDropped.Load() != 0 {
		t.Fatalf("%d mirrored, %d dropped; want 100 ± 30 and none dropped", n, m.MirrorDropped.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if i := slices.IndexFunc(copies, func(c string) bool { return c != "users POST payload" }); i >= 0 {
		t.Fatalf("copy %q", copies[i])
	}
}

// A mirror target that never answers: the primary requests are answered
// as ever, the copies in flight stay within max_in_flight, and the rest
// are dropped and counted.
func TestMirrorTargetThatNeverAnswers(t *testing.T) {
	f := newFixture(t, "users", "shadow")
	f.set(t, "users", newBackend(t, "users", nil).instance())
	f.set(t, "shadow", blackhole(t))
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 100, MaxInFlight: 5, Timeout: time.Minute})},
		proxy.Route{Upstream: f.ups["shadow"]})
	for i := range 50 {
		if resp, _ := f.get(t, "users", "/"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	m := f.ups["users"].Metrics()
	if m.Mirrored.Load() != 5 || m.MirrorDropped.Load() != 45 {
		t.Fatalf("%d mirrored, %d dropped; want 5 and 45", m.Mirrored.Load(), m.MirrorDropped.Load())
	}
}

// A reload (SetRoutes again, the same mirror) counts the copies still in
// flight: max_in_flight bounds the copies of both.
func TestMirrorInFlightSurvivesAReload(t *testing.T) {
	f := newFixture(t, "users", "shadow")
	f.set(t, "users", newBackend(t, "users", nil).instance())
	f.set(t, "shadow", blackhole(t))
	routes := func() {
		f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 100, MaxInFlight: 5, Timeout: time.Minute})},
			proxy.Route{Upstream: f.ups["shadow"]})
	}
	routes()
	for i := range 20 {
		if i == 10 {
			routes()
		}
		if resp, _ := f.get(t, "users", "/"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	m := f.ups["users"].Metrics()
	if m.Mirrored.Load() != 5 || m.MirrorDropped.Load() != 15 {
		t.Fatalf("%d mirrored, %d dropped across a reload; want 5 and 15", m.Mirrored.Load(), m.MirrorDropped.Load())
	}
}

// blackhole is a node that accepts and reads, and never answers.
func blackhole(t testing.TB) discovery.Instance {
	ln := testnet.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	return discovery.Instance{ID: "hole", Address: host, Port: p, Weight: 1, Healthy: true}
}

// BenchmarkMirrorNeverAnswers measures the primary request's latency with
// every request mirrored to a target that never answers (copies bounded by
// max_in_flight, the rest dropped), to compare with BenchmarkNoMirror: the
// mirror must add nothing to the primary request.
func BenchmarkMirrorNeverAnswers(b *testing.B) { benchMirror(b, true) }

// BenchmarkNoMirror is BenchmarkMirrorNeverAnswers without the mirror.
func BenchmarkNoMirror(b *testing.B) { benchMirror(b, false) }

func benchMirror(b *testing.B, on bool) {
	f := newFixture(b, "users", "shadow")
	f.set(b, "users", newBackend(b, "users", nil).instance())
	f.set(b, "shadow", blackhole(b))
	route := proxy.Route{Upstream: f.ups["users"]}
	if on {
		route.Mirror = validMirror(b, upstream.Mirror{Upstream: "shadow", Percent: 100, MaxInFlight: 16, Timeout: time.Minute})
	}
	f.proxy.SetRoutes(route, proxy.Route{Upstream: f.ups["shadow"]})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
		req.Host = "users"
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// A copy carries what the primary request carries, as its own upstream's
// rules make it: the listener's handling of forwarding headers, the
// request ID the listener gave, the target upstream's header rules (not
// the source's), and no hop-by-hop headers.
func TestMirrorCopyHeaders(t *testing.T) {
	for _, method := range []string{"GET", "OPTIONS"} { // the direct exchange, and ReverseProxy
		t.Run(method, func(t *testing.T) {
			f := newFixture(t, "users", "shadow")
			primary, copies := make(chan http.Header, 1), make(chan http.Header, 1)
			f.set(t, "users", newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) { primary <- r.Header.Clone() }).instance())
			f.set(t, "shadow", newBackend(t, "shadow", func(w http.ResponseWriter, r *http.Request) { copies <- r.Header.Clone() }).instance())
			f.proxy.SetRoutes(
				proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 100}),
					RequestHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Users-Rule": "1"}}},
				proxy.Route{Upstream: f.ups["shadow"], RequestHeaders: &proxy.HeaderRules{Set: map[string]string{"X-Shadow-Rule": "1"}}})
			url := serveFront(t, f.proxy.Listener("out", proxy.ListenerOptions{Forwarded: proxy.ForwardedDrop, RequestID: true})).URL
			req, _ := http.NewRequest(method, url+"/", nil)
			req.Host = "users"
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "1")
			if resp, _ := do(t, req); resp.StatusCode != 200 {
				t.Fatalf("%d", resp.StatusCode)
			}
			var p, c http.Header
			for _, ch := range []struct {
				h  *http.Header
				ch chan http.Header
			}{{&p, primary}, {&c, copies}} {
				select {
				case *ch.h = <-ch.ch:
				case <-time.After(5 * time.Second):
					t.Fatal("no request")
				}
			}
			if p.Get("X-Forwarded-For") != "" || p.Get("X-Hop") != "" || p.Get("X-Users-Rule") != "1" || len(p["X-Request-Id"]) != 1 {
				t.Fatalf("the primary request: %v", p)
			}
			want := map[string]string{
				"X-Forwarded-For": "", "X-Hop": "", "Connection": "", "X-Users-Rule": "", "X-Shadow-Rule": "1",
				"X-Request-Id": p.Get("X-Request-Id"), proxy.MirrorHeader: "users",
			}
			for k, v := range want {
				if got := strings.Join(c[k], ","); got != v {
					t.Errorf("the copy's %s: %q, want %q (copy %v)", k, got, v, c)
				}
			}
		})
	}
}
