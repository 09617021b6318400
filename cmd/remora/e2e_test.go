package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/config"
)

// demoBackend is a loopback HTTP server that counts its requests.
type demoBackend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func startBackend(t *testing.T, name string) *demoBackend {
	t.Helper()
	b := &demoBackend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("X-Backend", name)
		if d := r.URL.Query().Get("sleep"); d != "" {
			dur, _ := time.ParseDuration(d)
			time.Sleep(dur)
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *demoBackend) value(meta string) string {
	host, port, _ := net.SplitHostPort(b.srv.Listener.Addr().String())
	if meta == "" {
		meta = "{}"
	}
	return fmt.Sprintf(`{"address":%q,"port":%s,"metadata":%s}`, host, port, meta)
}

func startRemora(t *testing.T, yml string) *app {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := startApp(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.close() })
	return a
}

// testLogger logs to standard error with -v, else nowhere.
func testLogger() *logrus.Logger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	if testing.Verbose() {
		log.SetOutput(os.Stderr)
	}
	return log
}

func etcdConfig(endpoint string) string {
	return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - name: main
    type: etcd
    etcd: {endpoints: [%q], prefix: /services}
upstreams:
  - name: user-service
`, endpoint)
}

// send makes n requests for user-service and counts answers by backend.
func send(t *testing.T, a *app, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
		req.Host = "user-service"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			counts[fmt.Sprint(resp.StatusCode)]++
			continue
		}
		counts[resp.Header.Get("X-Backend")]++
	}
	return counts
}

// eventually retries cond every 10ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func available(a *app) int { return a.Table().Lookup("user-service").Snapshot().Available }

func TestEtcdEndToEnd(t *testing.T) {
	srv := etcdtest.Start(t)
	b1, b2, b3, b4 := startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3"), startBackend(t, "b4")
	srv.Put("/services/user-service/b1", b1.value(`{"version":"v1"}`))
	srv.Put("/services/user-service/b2", b2.value(""))
	srv.Put("/services/user-service/b3", b3.value(`{"canary":"true"}`))
	// b3's canary tag is only a label here: with the canary rule on (the
	// default), a canary without a weight would get no traffic.
	a := startRemora(t, etcdConfig(srv.Endpoint())+"    canary: {disabled: true}\n")
	eventually(t, 5*time.Second, "three nodes", func() bool { return available(a) == 3 })

	t.Run("requests spread over all three", func(t *testing.T) {
		counts := send(t, a, 30)
		for _, b := range []string{"b1", "b2", "b3"} {
			if counts[b] != 10 {
				t.Fatalf("spread %v; want 10 each", counts)
			}
		}
	})

	t.Run("admin shows nodes with labels", func(t *testing.T) {
		var st admin.UpstreamStatus
		getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
		if len(st.Nodes) != 3 || st.Nodes[2].ID != "b3" || st.Nodes[2].Metadata["canary"] != "true" || st.Nodes[2].State != "available" || st.Nodes[2].Requests != 10 {
			t.Fatalf("status %+v", st)
		}
		resp, err := http.Get("http://" + a.addr("admin") + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("readyz: %v %v", resp, err)
		}
		resp.Body.Close()
	})

	t.Run("per-node state survives an unrelated update", func(t *testing.T) {
		before := a.Table().Lookup("user-service").Snapshot()
		srv.Put("/services/user-service/b2", b2.value(`{"version":"v2"}`)) // b1 is untouched
		eventually(t, time.Second, "the update", func() bool { return a.Table().Lookup("user-service").Snapshot().Version > before.Version })
		after := a.Table().Lookup("user-service").Snapshot()
		if after.Nodes[0].Stats != before.Nodes[0].Stats || after.Nodes[0].Stats.Requests.Load() != 10 {
			t.Fatalf("b1's request counter was reset: %d", after.Nodes[0].Stats.Requests.Load())
		}
	})

	t.Run("deleted key stops traffic within 1s", func(t *testing.T) {
		srv.Delete("/services/user-service/b3")
		took := eventually(t, time.Second, "b3 leaves", func() bool { return available(a) == 2 })
		t.Logf("removal reached the proxy in %v", took)
		hits := b3.hits.Load()
		if counts := send(t, a, 20); counts["b3"] != 0 || counts["b1"]+counts["b2"] != 20 {
			t.Fatalf("after delete: %v", counts)
		}
		if b3.hits.Load() != hits {
			t.Fatal("b3 received requests after its key was deleted")
		}
	})

	t.Run("lease expiry removes the node", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		lease, err := srv.Client().Grant(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		srv.Put("/services/user-service/b4", b4.value(""), clientv3.WithLease(lease.ID))
		eventually(t, time.Second, "b4 joins", func() bool { return available(a) == 3 })
		if counts := send(t, a, 30); counts["b4"] == 0 {
			t.Fatalf("b4 got no traffic: %v", counts)
		}
		eventually(t, 10*time.Second, "b4 leaves when its lease expires", func() bool { return available(a) == 2 })
		hits := b4.hits.Load()
		send(t, a, 10)
		if b4.hits.Load() != hits {
			t.Fatal("b4 received requests after its lease expired")
		}
	})

	t.Run("etcd restart: a later change reaches the proxy", func(t *testing.T) {
		srv.Restart() // a graceful stop waits ~7s for the open watch streams
		srv.Put("/services/user-service/b3", b3.value(""))
		took := eventually(t, 10*time.Second, "b3 back after the restart", func() bool { return available(a) == 3 })
		t.Logf("change after restart reached the proxy in %v", took)
		if counts := send(t, a, 30); counts["b3"] != 10 {
			t.Fatalf("after restart: %v", counts)
		}
	})
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestReadyzWaitsForFirstSet(t *testing.T) {
	// An etcd endpoint where nothing listens: the first set never comes.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	a := startRemora(t, strings.Replace(etcdConfig(dead), "  - name: user-service\n", "  - {name: user-service, initial_sync_timeout: 1h}\n", 1))
	resp, err := http.Get("http://" + a.addr("admin") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "user-service") {
		t.Fatalf("readyz before the first set: %d %s", resp.StatusCode, body)
	}
	if counts := send(t, a, 1); counts["503"] != 1 {
		t.Fatalf("request before the first set: %v; want a 503", counts)
	}
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	b := startBackend(t, "slow")
	a := startRemora(t, fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries: [{name: s, type: static, static: {services: {user-service: [{address: %q}]}}}]
upstreams: [{name: user-service}]
`, b.srv.Listener.Addr().String()))
	eventually(t, 5*time.Second, "ready", func() bool { return available(a) == 1 })
	outbound, adminAddr := a.addr("outbound"), a.addr("admin")
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+outbound+"/?sleep=300ms", nil)
		req.Host = "user-service"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	eventually(t, 2*time.Second, "request in flight", func() bool { return b.hits.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.status != 200 {
		t.Fatalf("in-flight request during shutdown: %+v", r)
	}
	if _, err := net.DialTimeout("tcp", outbound, time.Second); err == nil {
		t.Fatal("the outbound listener still accepts after shutdown")
	}
	_ = adminAddr
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("registries: [{name: s, type: static}]\nupstreams: [{name: a}]\n"), 0o644)
	os.WriteFile(bad, []byte("registries: [{name: s, type: static}]\nupstreams: [{name: a, balancer: rr}]\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "-c", good}, &out, &errOut); code != 0 {
		t.Fatalf("validate good: exit %d: %s", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"validate", "-c", bad}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), `upstreams[0].balancer: unknown policy "rr"`) || !strings.HasPrefix(errOut.String(), "bad.yaml: line ") {
		t.Fatalf("validate bad: exit %d: %s", code, errOut.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "remora ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	log := logrus.New()
	log.SetOutput(io.Discard)
	if err := runDemo(context.Background(), &out, log, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stable-1", "stable-2", "canary-1", "100 requests, 3 backends reached, 0 errors.", "x-canary: always the request went to canary-1"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// Every example config is valid with the adapters remora ships.
func TestExamplesValidate(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*/remora.yaml")
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	fakeKubeHome(t)
	for _, f := range files {
		var out, errOut bytes.Buffer
		if code := run([]string{"validate", "-c", f}, &out, &errOut); code != 0 {
			t.Errorf("%s: %s", f, errOut.String())
		}
	}
}

// Re-tagging the canary in etcd ramps the split live, without a restart.
func TestEtcdCanaryLiveRamp(t *testing.T) {
	srv := etcdtest.Start(t)
	stable, canary := startBackend(t, "stable"), startBackend(t, "canary")
	srv.Put("/services/user-service/s1", stable.value(""))
	srv.Put("/services/user-service/c1", canary.value(`{"canary":"true","canary-weight":"0"}`))
	a := startRemora(t, etcdConfig(srv.Endpoint())+"    canary: {weight: 50}\n")
	eventually(t, 5*time.Second, "two nodes", func() bool { return available(a) == 2 })
	rampCanary(t, a, time.Second, func(weight string) {
		srv.Put("/services/user-service/c1", canary.value(`{"canary":"true","canary-weight":"`+weight+`"}`))
	})
	var st admin.UpstreamStatus
	getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
	if st.Canary == nil || st.Canary.WeightFrom != "registry" || st.Canary.Weight != 0 || st.Nodes[0].Pool != "canary" {
		t.Fatalf("canary status %+v", st.Canary)
	}
}

// rampCanary checks a live ramp on a's user-service, whose canary starts at
// canary-weight 0: none of 20 requests goes to the canary; then, after
// setWeight("100"), all go there within bound, and after setWeight("0")
// none.
func rampCanary(t *testing.T, a *app, bound time.Duration, setWeight func(weight string)) {
	t.Helper()
	if counts := send(t, a, 20); counts["canary"] != 0 {
		t.Fatalf("canary-weight 0: %v", counts)
	}
	for _, step := range []struct {
		weight string
		want   func(map[string]int) bool
	}{
		{"100", func(c map[string]int) bool { return c["canary"] == 20 }},
		{"0", func(c map[string]int) bool { return c["stable"] == 20 }},
	} {
		setWeight(step.weight)
		took := eventually(t, bound, "split at canary-weight "+step.weight, func() bool { return step.want(send(t, a, 20)) })
		t.Logf("canary-weight %s took effect in %v", step.weight, took)
	}
}

// A canary that is its own registry service (canary: {service: ...}).
func TestEtcdCanaryAsSeparateService(t *testing.T) {
	srv := etcdtest.Start(t)
	stable, v2 := startBackend(t, "stable"), startBackend(t, "v2")
	srv.Put("/services/user-service/a", stable.value(""))
	srv.Put("/services/user-service-v2/a", v2.value("")) // same instance id in the other service
	a := startRemora(t, etcdConfig(srv.Endpoint())+"    canary: {service: user-service-v2, weight: 100}\n")
	eventually(t, 5*time.Second, "both services", func() bool { return available(a) == 2 })
	if counts := send(t, a, 10); counts["v2"] != 10 {
		t.Fatalf("weight 100 to the canary service: %v", counts)
	}
	srv.Delete("/services/user-service-v2/a")
	eventually(t, time.Second, "canary gone", func() bool { return available(a) == 1 })
	if counts := send(t, a, 10); counts["stable"] != 10 {
		t.Fatalf("after the canary service emptied: %v", counts)
	}
}
