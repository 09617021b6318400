package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/remora-mesh/remora/discovery/kubernetes"
	"github.com/remora-mesh/remora/discovery/kubernetes/kubetest"
	"github.com/remora-mesh/remora/pkg/admin"
)

// kubeBackends starts n backends named prefix1..prefixN on 127.0.0.1,
// 127.0.0.2, ... and one common port, as the pods behind one Service
// port are, so that one EndpointSlice lists them all.
func kubeBackends(t *testing.T, prefix string, n int) ([]*demoBackend, int) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		var lns []net.Listener
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		lns = append(lns, ln)
		for i := 2; i <= n && err == nil; i++ {
			if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i, port)); err == nil {
				lns = append(lns, ln)
			}
		}
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			continue // the port is taken on another address: another one
		}
		bs := make([]*demoBackend, n)
		for i, l := range lns {
			b := &demoBackend{name: prefix + strconv.Itoa(i+1)}
			b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b.hits.Add(1)
				w.Header().Set("X-Backend", b.name)
				if d := r.URL.Query().Get("sleep"); d != "" {
					dur, _ := time.ParseDuration(d)
					time.Sleep(dur)
				}
				fmt.Fprint(w, b.name)
			}))
			b.srv.Listener.Close()
			b.srv.Listener = l
			b.srv.Start()
			t.Cleanup(b.srv.Close)
			bs[i] = b
		}
		return bs, port
	}
	t.Fatal("no port free on 127.0.0.1..n")
	return nil, 0
}

func (b *demoBackend) ip() string { return b.srv.Listener.Addr().(*net.TCPAddr).IP.String() }

// kubeEnv is a namespace of a test's own API server with a service account
// that may read endpointslices and pods there (deploy/'s Role), and a
// kubeconfig with its token, for Remora running outside the cluster.
type kubeEnv struct {
	srv        *kubetest.Server
	ns         string
	kubeconfig string
}

func startKube(t *testing.T, name string) *kubeEnv {
	t.Helper()
	srv := kubetest.Start(t, kubetest.Config{Name: name})
	ns := srv.Namespace(t, "shop")
	srv.Grant(t, ns, "remora", "remora-discovery",
		rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}})
	kc, err := srv.Kubeconfig(t.TempDir(), srv.ServiceAccountToken(t, ns, "remora"), ns)
	if err != nil {
		t.Fatal(err)
	}
	return &kubeEnv{srv: srv, ns: ns, kubeconfig: kc}
}

// config is Remora's configuration for upstream user-service, the Service
// user-service's port http; extra is appended to the upstream.
func (k *kubeEnv) config(pods bool, extra string) string {
	return fmt.Sprintf(`
admin: {address: "127.0.0.1:0"}
listeners: [{name: outbound, address: "127.0.0.1:0"}]
registries:
  - name: k8s
    type: kubernetes
    kubernetes: {kubeconfig: %q, pods: %v}
upstreams:
  - name: user-service
    service: %s/user-service:http
%s`, k.kubeconfig, pods, k.ns, extra)
}

// slice writes the EndpointSlice name of svc with the backends as endpoints
// (target pods named after them), each with its conditions from conds
// (ready when absent).
func (k *kubeEnv) slice(t *testing.T, svc, name string, port int, bs []*demoBackend, conds map[string]discoveryv1.EndpointConditions) {
	t.Helper()
	eps := make([]discoveryv1.Endpoint, len(bs))
	for i, b := range bs {
		eps[i] = kubetest.Endpoint(b.name, b.ip())
		if c, ok := conds[b.name]; ok {
			eps[i].Conditions = c
		}
	}
	k.srv.ApplySlice(t, kubetest.Slice(k.ns, svc, name, "http", int32(port), eps...))
}

func conditions(ready, serving, terminating bool) discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
}

// untilHit sends requests until one reaches b, within bound, and returns
// how long that took.
func untilHit(t *testing.T, a *app, b *demoBackend, bound time.Duration) time.Duration {
	t.Helper()
	before := b.hits.Load()
	return eventually(t, bound, b.name+" gets traffic", func() bool {
		send(t, a, 3)
		return b.hits.Load() > before
	})
}

// Remora outside the cluster (a kubeconfig) routes to the endpoints of an
// EndpointSlice the test writes; scaling it and endpoint conditions reach
// traffic within a second.
func TestKubernetesEndToEnd(t *testing.T) {
	k := startKube(t, "e2e")
	bs, port := kubeBackends(t, "b", 3)
	k.slice(t, "user-service", "user-service-abc", port, bs[:2], nil)
	a := startRemora(t, k.config(false, ""))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })
	if counts := send(t, a, 20); counts["b1"] != 10 || counts["b2"] != 10 {
		t.Fatalf("spread %v; want 10 each", counts)
	}

	t.Run("scaling 2 to 3 reaches traffic within 1s", func(t *testing.T) {
		k.slice(t, "user-service", "user-service-abc", port, bs, nil)
		took := untilHit(t, a, bs[2], time.Second)
		t.Logf("the third endpoint got traffic %v after the slice was written", took)
	})

	t.Run("not ready stops traffic within 1s", func(t *testing.T) {
		k.slice(t, "user-service", "user-service-abc", port, bs, map[string]discoveryv1.EndpointConditions{"b3": conditions(false, false, false)})
		took := eventually(t, time.Second, "b3 not available", func() bool { return available(a) == 2 })
		t.Logf("not-ready reached the proxy in %v", took)
		hits := bs[2].hits.Load()
		if counts := send(t, a, 20); counts["b3"] != 0 || bs[2].hits.Load() != hits {
			t.Fatalf("b3 got traffic while not ready: %v", counts)
		}
	})

	t.Run("terminating but serving drains: in-flight requests finish, no new ones", func(t *testing.T) {
		k.slice(t, "user-service", "user-service-abc", port, bs[:2], nil)
		eventually(t, time.Second, "b1 and b2", func() bool { return available(a) == 2 })
		// A slow request in flight on each of b1 and b2.
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/?sleep=700ms", nil)
				req.Host = "user-service"
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}()
		}
		eventually(t, 2*time.Second, "both in flight", func() bool { return bs[0].hits.Load()+bs[1].hits.Load() >= 2 })
		k.slice(t, "user-service", "user-service-abc", port, bs[:2], map[string]discoveryv1.EndpointConditions{"b2": conditions(false, true, true)})
		eventually(t, time.Second, "b2 draining", func() bool { return available(a) == 1 })
		hits := bs[1].hits.Load()
		if counts := send(t, a, 10); counts["b1"] != 10 || bs[1].hits.Load() != hits {
			t.Fatalf("a draining endpoint got new requests: %v", counts)
		}
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("%d in-flight requests failed while their endpoint drained", failed.Load())
		}
		var st admin.UpstreamStatus
		getJSON(t, "http://"+a.addr("admin")+"/upstreams/user-service", &st)
		if len(st.Nodes) != 2 || st.Nodes[1].ID != "b2" || st.Nodes[1].State != "draining" || st.Nodes[1].Metadata[kubernetes.MetaState] != kubernetes.StateDraining {
			t.Fatalf("admin status of the draining node: %+v", st.Nodes)
		}
	})
}

// The API server stopped for 20 s under load: not one request fails, and
// a change after it is back reaches traffic.
func TestKubernetesAPIServerOutageUnderLoad(t *testing.T) {
	k := startKube(t, "outage")
	bs, port := kubeBackends(t, "b", 3)
	k.slice(t, "user-service", "user-service-abc", port, bs[:2], nil)
	a := startRemora(t, k.config(false, ""))
	eventually(t, 10*time.Second, "two nodes", func() bool { return available(a) == 2 })

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr("outbound")+"/", nil)
				req.Host = "user-service"
				resp, err := client.Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
				time.Sleep(5 * time.Millisecond) // bounded load: some hundreds of requests a second
			}
		}()
	}
	k.srv.Stop()
	eventually(t, 20*time.Second, "the upstream stale", func() bool {
		return a.Table().Lookup("user-service").Snapshot().Stale()
	})
	time.Sleep(20 * time.Second)
	if n := available(a); n != 2 {
		t.Fatalf("%d nodes available after 20 s without the API server; want 2", n)
	}
	k.srv.Up(t)
	close(stop)
	wg.Wait()
	t.Logf("%d requests during the outage, %d failed", sent.Load(), failed.Load())
	if sent.Load() < 100 || failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed while the API server was down", failed.Load(), sent.Load())
	}
	k.slice(t, "user-service", "user-service-abc", port, bs, nil)
	// Reconnecting backs off to at most 4 s (with jitter) while the API
	// server refuses connections.
	took := untilHit(t, a, bs[2], 10*time.Second)
	t.Logf("a change after the outage reached traffic in %v", took)
}

// A canary that is a Service of its own (canary: {service: ...}) gets the
// configured share, and none once it has no endpoints.
func TestKubernetesCanaryAsSeparateService(t *testing.T) {
	k := startKube(t, "canary-svc")
	stable, sport := kubeBackends(t, "stable", 1)
	canary, cport := kubeBackends(t, "canary", 1)
	k.slice(t, "user-service", "user-service-abc", sport, stable, nil)
	k.slice(t, "user-service-canary", "user-service-canary-abc", cport, canary, nil)
	a := startRemora(t, k.config(false, fmt.Sprintf("    canary: {service: %s/user-service-canary:http, weight: 25}\n", k.ns)))
	eventually(t, 10*time.Second, "both services", func() bool { return available(a) == 2 })
	// 25% of 400 is 100, with a standard deviation of 8.7: 60..140 is
	// beyond four and a half of them.
	if counts := send(t, a, 400); counts["canary1"] < 60 || counts["canary1"] > 140 || counts["stable1"]+counts["canary1"] != 400 {
		t.Fatalf("weight 25 to the canary Service: %v", counts)
	}
	// The canary Service scaled to zero: everything to stable.
	k.slice(t, "user-service-canary", "user-service-canary-abc", cport, nil, nil)
	eventually(t, time.Second, "canary gone", func() bool { return available(a) == 1 })
	if counts := send(t, a, 20); counts["stable1"] != 20 {
		t.Fatalf("without canary endpoints: %v", counts)
	}
}

// With pods: true, the canary is the pods labelled canary=true, and their
// canary-weight label ramps it live (the default canary rule).
func TestKubernetesCanaryByPodLabels(t *testing.T) {
	k := startKube(t, "canary-pods")
	bs, port := kubeBackends(t, "p", 2)
	stable, canary := bs[0], bs[1]
	stable.name, canary.name = "stable", "canary" // X-Backend, as rampCanary counts
	k.srv.ApplyPod(t, k.ns, "stable", map[string]string{"app": "user-service"}, nil)
	canaryLabels := func(weight string) map[string]string {
		return map[string]string{"app": "user-service", "canary": "true", "canary-weight": weight}
	}
	k.srv.ApplyPod(t, k.ns, "canary", canaryLabels("0"), nil)
	k.slice(t, "user-service", "user-service-abc", port, bs, nil)
	a := startRemora(t, k.config(true, ""))
	eventually(t, 10*time.Second, "two nodes", func() bool { return len(a.Table().Lookup("user-service").Snapshot().Nodes) == 2 })
	rampCanary(t, a, time.Second, func(weight string) {
		k.srv.ApplyPod(t, k.ns, "canary", canaryLabels(weight), nil)
	})
}
