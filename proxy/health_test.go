package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/health"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

func intp(v int) *int { return &v }

func validHealth(t testing.TB, c *health.Config) *health.Config {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func validPolicy(t testing.TB, p *upstream.Policy) *upstream.Policy {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// restartable is a backend whose listener can be killed and brought back on
// the same address.
type restartable struct {
	addr string
	mu   sync.Mutex
	srv  *http.Server
	hits atomic.Int64
	name string
}

func startRestartable(t *testing.T, name string) *restartable {
	r := &restartable{name: name}
	r.start(t, "127.0.0.1:0")
	t.Cleanup(r.kill)
	return r
}

func (r *restartable) start(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		w.Header().Set("X-Backend", r.name)
		fmt.Fprint(w, r.name)
	})}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(ln)
}

// kill closes the listener and every connection at once, like a crash.
func (r *restartable) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Close()
		r.srv = nil
	}
}

func (r *restartable) instance() discovery.Instance {
	host, port, _ := net.SplitHostPort(r.addr)
	var p int
	fmt.Sscan(port, &p)
	return discovery.Instance{ID: r.name, Address: host, Port: p, Weight: 1, Healthy: true}
}

// A node killed under load: no client sees an error, the node is ejected,
// and it comes back after its ejection time once restarted.
func TestKilledNodeUnderLoad(t *testing.T) {
	hc := &health.Config{}
	hc.Passive.BaseEjectionTime = time.Second
	zero := time.Duration(0)
	hc.Passive.EjectionJitter = &zero
	hc.Passive.ConsecutiveLocalOriginFailure = intp(3)
	f := newFixtureCfg(t, upstream.Config{Name: "users", Health: validHealth(t, hc)})
	b1, b2, b3 := startRestartable(t, "b1"), startRestartable(t, "b2"), startRestartable(t, "b3")
	f.set(t, "users", b1.instance(), b2.instance(), b3.instance())

	const total, workers = 3000, 16
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent.Add(1) <= total {
				req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
				req.Host = "users"
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for sent.Load() < total/3 {
		time.Sleep(time.Millisecond)
	}
	b3.kill()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		for _, e := range f.log.AllEntries() {
			t.Log(e.Message, e.Data) // the proxy's own account of each failure
		}
		t.Fatalf("%d of %d requests failed after a node was killed (first: %v)", n, total, firstErr.Load())
	}
	n3 := byID(f.ups["users"].Snapshot(), "b3")
	if r := n3.Stats.Health.EjectReason(); !n3.Stats.Health.Ejected() || r != node.ConsecutiveLocalOriginFailure && r != node.ConsecutiveGatewayFailure {
		t.Fatalf("b3 ejected=%v reason=%v", n3.Stats.Health.Ejected(), n3.Stats.Health.EjectReason())
	}
	// Restart it on its address: after the ejection time it gets traffic.
	b3.start(t, b3.addr)
	hits := b3.hits.Load()
	deadline := time.Now().Add(5 * time.Second)
	for b3.hits.Load() == hits {
		if time.Now().After(deadline) {
			t.Fatal("the restarted node never got traffic back")
		}
		f.get(t, "users", "/")
		time.Sleep(10 * time.Millisecond)
	}
	if n3.Stats.Health.Ejected() {
		t.Fatal("b3 served while still ejected")
	}
}

// A node whose /health answers 503 leaves after unhealthy_threshold probes
// and returns after healthy_threshold.
func TestActiveHealthCheckThroughProxy(t *testing.T) {
	var sick atomic.Bool
	hc := &health.Config{PanicThreshold: intp(0), Active: &health.Active{Interval: 50 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 2}}
	f := newFixtureCfg(t, upstream.Config{Name: "users", Health: validHealth(t, hc)})
	good := newBackend(t, "good", nil)
	flaky := newBackend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && sick.Load() {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "flaky")
	})
	f.set(t, "users", good.instance(), flaky.instance())
	sick.Store(true)
	start := time.Now()
	waitUntil(t, 5*time.Second, "flaky leaves", func() bool { return f.ups["users"].Snapshot().Available == 1 })
	// interval × unhealthy_threshold, plus the first probe's random offset
	// (< interval) and ±10% jitter.
	if took := time.Since(start); took > 3*50*time.Millisecond*11/10+100*time.Millisecond {
		t.Errorf("left after %v; want about interval × unhealthy_threshold", took)
	}
	hits := flaky.hits.Load()
	for i := 0; i < 10; i++ {
		if resp, body := f.get(t, "users", "/"); resp.StatusCode != 200 || body == "flaky" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	_ = hits
	sick.Store(false)
	waitUntil(t, 5*time.Second, "flaky returns", func() bool { return f.ups["users"].Snapshot().Available == 2 })
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRetryOnStatusGoesToAnotherNode(t *testing.T) {
	f := newFixtureCfg(t, upstream.Config{Name: "users", Health: validHealth(t, &health.Config{Passive: health.Passive{Disabled: true}})})
	bad := newBackend(t, "bad", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(503)
	})
	good := newBackend(t, "good", nil)
	f.set(t, "users", bad.instance(), good.instance())
	for i := 0; i < 10; i++ {
		resp, body := f.get(t, "users", "/")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// A small POST body is buffered and replayed.
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/", strings.NewReader("hello"))
		req.Host = "users"
		resp, body := do(t, req)
		if resp.StatusCode != 200 || !strings.HasSuffix(body, "body=hello") {
			t.Fatalf("POST %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing node was never tried; the test proves nothing")
	}
}

func TestLargeNonIdempotentBodyIsNotRetriedAfterSending(t *testing.T) {
	p := &upstream.Policy{}
	p.Retry.MaxBodyBytes = 16
	f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, p), Health: validHealth(t, &health.Config{Passive: health.Passive{Disabled: true}})})
	var got atomic.Int64
	bad := newBackend(t, "bad", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(503)
	})
	f.set(t, "users", bad.instance(), newBackend(t, "other", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(503)
	}).instance())
	req, _ := http.NewRequest(http.MethodPost, f.front.URL+"/", strings.NewReader(strings.Repeat("x", 100)))
	req.Host = "users"
	resp, _ := do(t, req)
	if resp.StatusCode != 503 || got.Load() != 1 {
		t.Fatalf("status %d after %d attempts; want the 503 of a single attempt", resp.StatusCode, got.Load())
	}
}

func TestCircuitBreaker(t *testing.T) {
	p := &upstream.Policy{}
	p.CircuitBreaker.MaxRequests = 1
	f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, p)})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	f.set(t, "users", newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}).instance())
	done := make(chan int)
	go func() {
		resp, _ := f.get(t, "users", "/")
		done <- resp.StatusCode
	}()
	<-entered
	resp, body := f.get(t, "users", "/")
	if resp.StatusCode != 503 || resp.Header.Get("X-Remora-Overloaded") != "upstream max_requests" || !strings.Contains(body, "circuit breaker") {
		t.Fatalf("over the limit: %d %q %q", resp.StatusCode, resp.Header.Get("X-Remora-Overloaded"), body)
	}
	close(release)
	if code := <-done; code != 200 {
		t.Fatalf("the request within the limit got %d", code)
	}
	if resp, _ := f.get(t, "users", "/"); resp.StatusCode != 200 {
		t.Fatalf("after the slot freed: %d", resp.StatusCode)
	}
}

func TestPerNodeLimit(t *testing.T) {
	p := &upstream.Policy{}
	p.CircuitBreaker.MaxRequestsPerNode = 1
	f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, p)})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	f.set(t, "users", newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}).instance())
	go f.get(t, "users", "/")
	<-entered
	resp, _ := f.get(t, "users", "/")
	close(release)
	if resp.StatusCode != 503 || resp.Header.Get("X-Remora-Overloaded") != "node max_requests_per_node" {
		t.Fatalf("over the per-node limit: %d %q", resp.StatusCode, resp.Header.Get("X-Remora-Overloaded"))
	}
}

func TestTimeouts(t *testing.T) {
	slowHandler := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}
	t.Run("per-try timeout retries on another node", func(t *testing.T) {
		p := &upstream.Policy{}
		p.Timeouts.PerTry = 100 * time.Millisecond
		pol := validPolicy(t, p)
		f := newFixtureCfg(t, upstream.Config{
			Name: "users", Policy: pol,
			Health: validHealth(t, &health.Config{Passive: health.Passive{Disabled: true}}),
		})
		f.set(t, "users", newBackend(t, "slow", slowHandler).instance(), newBackend(t, "fast", nil).instance())
		for i := 0; i < 6; i++ {
			start := time.Now()
			resp, body := f.get(t, "users", "/")
			if resp.StatusCode != 200 || !strings.HasPrefix(body, "fast") || time.Since(start) > time.Second {
				t.Fatalf("request %d: %d %q after %v", i, resp.StatusCode, body, time.Since(start))
			}
		}
	})
	t.Run("total timeout answers 504", func(t *testing.T) {
		p := &upstream.Policy{}
		p.Timeouts.Total = 100 * time.Millisecond
		f := newFixtureCfg(t, upstream.Config{Name: "users", Policy: validPolicy(t, p)})
		f.set(t, "users", newBackend(t, "slow", slowHandler).instance())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.front.URL+"/", nil)
		req.Host = "users"
		resp, _ := do(t, req)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("status %d; want 504", resp.StatusCode)
		}
	})
}

func byID(s *upstream.Snapshot, id string) *node.Node {
	for _, n := range s.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}
