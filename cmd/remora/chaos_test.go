package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/internal/testnet"
)

// loadGen sends GET / from workers, on keep-alive connections, until
// finish, and counts the answers that are not 200; it keeps the first
// failure and when it came.
type loadGen struct {
	ok, failed atomic.Int64
	first      atomic.Value
	stop       chan struct{}
	start      time.Time
	wg         sync.WaitGroup
	client     *http.Client
}

// startLoad sends requests for user-service to a's outbound listener.
func startLoad(t *testing.T, a *app, workers int) *loadGen {
	return startLoadTo(a.addr("outbound"), "user-service", workers, 5*time.Millisecond)
}

// startLoadTo sends requests with Host host to out, each worker pausing
// between its requests (a bounded rate).
func startLoadTo(out, host string, workers int, pause time.Duration) *loadGen {
	g := &loadGen{stop: make(chan struct{}), start: time.Now(), client: &http.Client{Timeout: 5 * time.Second}}
	for range workers {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			for {
				select {
				case <-g.stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+out+"/", nil)
				req.Host = host
				resp, err := g.client.Do(req)
				if err == nil {
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %q", resp.StatusCode, body)
					}
				}
				if err != nil {
					err = fmt.Errorf("%s after the load started: %w", time.Since(g.start).Round(time.Millisecond), err)
					g.failed.Add(1)
					g.first.CompareAndSwap(nil, err)
				} else {
					g.ok.Add(1)
				}
				time.Sleep(pause)
			}
		}()
	}
	return g
}

// finish stops the load, closes its idle connections and fails t if a
// request failed or none succeeded.
func (g *loadGen) finish(t *testing.T) {
	t.Helper()
	close(g.stop)
	g.wg.Wait()
	g.client.CloseIdleConnections()
	if g.failed.Load() != 0 || g.ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded (first error: %v)", g.failed.Load(), g.ok.Load(), g.first.Load())
	}
	t.Logf("%d requests, 0 failed", g.ok.Load())
}

// etcd stopped for 30 s (REMORA_CHAOS_OUTAGE overrides) under load: no
// request fails, the upstream shows as stale, and a change made after etcd
// returns reaches traffic within a second.
func TestChaosRegistryOutage(t *testing.T) {
	outage := 30 * time.Second
	if v := os.Getenv("REMORA_CHAOS_OUTAGE"); v != "" {
		outage, _ = time.ParseDuration(v)
	}
	srv := etcdtest.Start(t)
	b1, b2, b3 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")
	srv.Put("/services/user-service/b1", b1.value(""))
	srv.Put("/services/user-service/b2", b2.value(""))
	a := startRemora(t, etcdConfig(srv.Endpoint()))
	eventually(t, 5*time.Second, "two nodes", func() bool { return available(a) == 2 })
	load := startLoad(t, a, 8)

	srv.Stop()
	eventually(t, 5*time.Second, "the upstream marked stale", func() bool { return upstreamStatusOf(t, a).Stale })
	time.Sleep(outage)
	if st := upstreamStatusOf(t, a); !st.Stale || st.Available != 2 || st.Error == "" {
		t.Fatalf("during the outage: stale=%v available=%d error=%q", st.Stale, st.Available, st.Error)
	}
	srv.Restart()
	eventually(t, 5*time.Second, "staleness cleared", func() bool { return !upstreamStatusOf(t, a).Stale })
	srv.Put("/services/user-service/b3", b3.value(""))
	took := eventually(t, time.Second, "a change after the outage", func() bool { return available(a) == 3 })
	t.Logf("a change after the registry returned reached traffic in %v", took)
	load.finish(t)
}

func upstreamStatusOf(t *testing.T, a *app) (st struct {
	Stale     bool   `json:"stale"`
	Available int    `json:"available"`
	Error     string `json:"error"`
}) {
	getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
	return st
}

// A backend that accepts connections and never answers: per_try timeouts
// move requests to a healthy node, no request fails or hangs.
func TestChaosBackendThatNeverAnswers(t *testing.T) {
	// Reads nothing, answers nothing; the connections close when the test
	// ends.
	mute := testnet.Serve(t, func(net.Conn) {})
	good := startBackend(t, "good")
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {user-service: [{id: mute, address: %q}, {id: good, address: %q}]}}}]
upstreams:
  - name: user-service
    timeouts: {per_try: 500ms}
`, mute.Addr(), good.srv.Listener.Addr()))
	eventually(t, 5*time.Second, "ready", func() bool { return available(a) == 2 })
	start := time.Now()
	load := startLoad(t, a, 4)
	time.Sleep(2 * time.Second)
	load.finish(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	if counts := send(t, a, 4); counts["good"] != 4 {
		t.Fatalf("after the mute node's ejection: %v", counts)
	}
}

// A backend that resets the connection in the middle of its body: the
// client's request ends at once with an error (the headers had gone out, so
// no retry was possible) instead of hanging or passing as complete.
func TestChaosBackendResetsMidBody(t *testing.T) {
	for name, head := range map[string]string{
		"content-length": "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial",
		"chunked":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n",
	} {
		t.Run(name, func(t *testing.T) { testResetMidBody(t, head) })
	}
}

// testResetMidBody: a backend sends head (the start of an answer) and
// resets; the client must see an error, never a complete answer.
func testResetMidBody(t *testing.T, head string) {
	ln := testnet.Serve(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		c.Read(buf)
		io.WriteString(c, head)
		time.Sleep(10 * time.Millisecond) // the proxy has begun the answer
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST
	})
	a := startRemora(t, staticConfig([]string{ln.Addr().String()}, ""))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 1 })
	start := time.Now()
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
	req.Host = "svc"
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a truncated body was delivered as complete")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the broken exchange hung for %v", d)
	}
}

// Cold start with the registry down: with a snapshot in data_dir requests
// succeed (marked stale); without one /readyz stays false and requests get
// a clear 503.
func TestColdStartWithRegistryDown(t *testing.T) {
	b := startBackend(t, "b1")
	dataDir := t.TempDir()
	srv := etcdtest.Start(t)
	srv.Put("/services/user-service/b1", b.value(""))
	withDir := func(endpoint string) string {
		return strings.Replace(etcdConfig(endpoint), "upstreams:\n  - name: user-service\n",
			fmt.Sprintf("data_dir: %q\nupstreams:\n  - {name: user-service, initial_sync_timeout: 300ms}\n", dataDir), 1)
	}
	// A first run with etcd up leaves the snapshot behind.
	first := startRemora(t, withDir(srv.Endpoint()))
	eventually(t, 5*time.Second, "first run synced", func() bool { return available(first) == 1 })
	eventually(t, 5*time.Second, "snapshot written", func() bool {
		_, err := os.Stat(filepath.Join(dataDir, "snapshots", "user-service.json"))
		return err == nil
	})
	first.close()
	srv.Stop()

	second := startRemora(t, withDir(srv.Endpoint()))
	eventually(t, 5*time.Second, "serving from the snapshot", func() bool { return available(second) == 1 })
	if counts := send(t, second, 5); counts["b1"] != 5 {
		t.Fatalf("from the snapshot: %v", counts)
	}
	if code, body := readyz(t, second); code != 200 {
		t.Fatalf("readyz with a snapshot: %d %s", code, body)
	}
	if st := upstreamStatusOf(t, second); !st.Stale || !strings.Contains(st.Error, "on-disk snapshot") {
		t.Fatalf("not marked stale: %+v", st)
	}

	empty := startRemora(t, strings.Replace(withDir(srv.Endpoint()), dataDir, t.TempDir(), 1))
	time.Sleep(500 * time.Millisecond) // past initial_sync_timeout
	if code, _ := readyz(t, empty); code != 503 {
		t.Fatalf("readyz without a snapshot: %d; want 503", code)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+empty.addr("outbound")+"/", nil)
	req.Host = "user-service"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "not received its nodes from the registry") {
		t.Fatalf("request without a snapshot: %d %q", resp.StatusCode, body)
	}
}
