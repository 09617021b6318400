package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/kubernetes/kubetest"
)

// TestMain runs the tests against a shared API server and fails them when
// they leave goroutines running.
func TestMain(m *testing.M) {
	code := kubetest.Run(m)
	if code == 0 {
		// The test's own admin clients keep idle connections.
		if err := goleak.Find(goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*http2ClientConn).readLoop")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// readerRules are what the adapter needs: the Role that deploy/ ships.
var readerRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
}

// env is a namespace of the shared server with a service account "remora"
// that may read endpointslices and pods there, as deploy/ grants it.
type env struct {
	srv   *kubetest.Server
	ns    string
	token string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := kubetest.Shared(t, kubetest.Config{})
	ns := srv.Namespace(t, "remora")
	srv.Grant(t, ns, "remora", "remora-discovery", readerRules...)
	return &env{srv: srv, ns: ns, token: srv.ServiceAccountToken(t, ns, "remora")}
}

// open opens a registry the way Remora does (the factory, a kubeconfig with
// the service account's token), with the options block extra.
func (e *env) open(t *testing.T, extra string) *Registry {
	t.Helper()
	dir := t.TempDir()
	kc, err := e.srv.Kubeconfig(dir, e.token, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := discoverytest.Parse(t, Type, "kubeconfig: "+kc+"\n"+extra)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{Name: "k8s", BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return reg.(*Registry)
}

func watchSvc(t *testing.T, reg discovery.Registry, svc string) discovery.Watcher {
	t.Helper()
	w, err := reg.Watch(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

// podName is the pod behind the conformance suite's instance id of svc.
func podName(svc, id string) string { return svc + "-" + id }

// TestConformance runs the suite every adapter passes, on the real API
// server: each instance is a pod (labels = its metadata, the weight
// annotation = its weight) and an EndpointSlice of its own with one port
// named http, as the endpoint-slice controller writes them for pods whose
// named container port differs.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry { return e.open(t, "pods: true") },
		Register: func(t *testing.T, svc string, in discovery.Instance) {
			pod := podName(svc, in.ID)
			e.srv.ApplyPod(t, e.ns, pod, in.Metadata, map[string]string{WeightAnnotation: strconv.Itoa(int(in.Weight))})
			e.srv.ApplySlice(t, kubetest.Slice(e.ns, svc, pod, "http", int32(in.Port), kubetest.Endpoint(pod, in.Address)))
		},
		Deregister: func(t *testing.T, svc, id string) {
			e.srv.DeleteSlice(t, e.ns, podName(svc, id))
			e.srv.DeletePod(t, e.ns, podName(svc, id))
		},
		Restart: func(t *testing.T) { e.srv.Restart(t) },
		// A restart takes seconds, and client-go's reflector retries with
		// a backoff that doubles from 0.8 s: the suite waits 3×Timeout
		// after it.
		Timeout: 10 * time.Second,
	})
}

// The endpoint conditions and ports, on the real API server, without pods.
func TestEndpointStates(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "")
	defer reg.Close()
	const svc = "states"
	w := watchSvc(t, reg, svc+":http")
	wait := func(what string, cond func([]discovery.Instance) bool) []discovery.Instance {
		t.Helper()
		return discoverytest.WaitFor(t, w, 10*time.Second, what, cond)
	}
	one := func(set []discovery.Instance, port int, healthy bool, weight uint32, state string) bool {
		return len(set) == 1 && set[0].ID == "pod-a" && set[0].Port == port && set[0].Healthy == healthy &&
			set[0].Weight == weight && set[0].Metadata[MetaState] == state
	}
	wait("the empty set", func(s []discovery.Instance) bool { return s != nil && len(s) == 0 })

	cond := func(ready, serving, terminating bool) discoveryv1.EndpointConditions {
		return discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
	ep := kubetest.Endpoint("pod-a", "127.0.0.1")
	zone := "zone-1"
	ep.Zone = &zone
	steps := []struct {
		name    string
		port    int32
		cond    discoveryv1.EndpointConditions
		healthy bool
		weight  uint32
		state   string
	}{
		{"ready", 8080, cond(true, true, false), true, 1, StateReady},
		{"port change keeps the id", 8081, cond(true, true, false), true, 1, StateReady},
		{"not ready is kept, unhealthy", 8081, cond(false, false, false), false, 1, StateNotReady},
		{"ready again", 8081, cond(true, true, false), true, 1, StateReady},
		{"terminating and serving, and no endpoint ready: it still serves", 8081, cond(false, true, true), true, 1, StateDraining},
		{"terminating, not serving", 8081, cond(false, false, true), false, 0, StateTerminating},
	}
	for _, st := range steps {
		ep.Conditions = st.cond
		e.srv.ApplySlice(t, kubetest.Slice(e.ns, svc, svc+"-1", "http", st.port, ep))
		set := wait(st.name, func(s []discovery.Instance) bool { return one(s, int(st.port), st.healthy, st.weight, st.state) })
		if set[0].Metadata[MetaZone] != zone {
			t.Fatalf("%s: zone metadata %v", st.name, set[0].Metadata)
		}
	}

	t.Run("port by number and a second port", func(t *testing.T) {
		const svc2 = "two-ports"
		s := kubetest.Slice(e.ns, svc2, svc2+"-1", "http", 8080, kubetest.Endpoint("pod-b", "127.0.0.1"))
		name, num := "metrics", int32(9090)
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &name, Port: &num})
		e.srv.ApplySlice(t, s)
		byNum := watchSvc(t, reg, svc2+":9090")
		discoverytest.WaitFor(t, byNum, 10*time.Second, "port 9090", func(s []discovery.Instance) bool {
			return len(s) == 1 && s[0].Port == 9090
		})
		// Several ports and none named: an error naming them, no set.
		w := watchSvc(t, NewRegistry(reg.client, Config{Namespace: e.ns}, discovery.Env{}), svc2)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := w.Next(ctx)
		if err == nil || !strings.Contains(err.Error(), "several ports (http=8080, metrics=9090)") {
			t.Fatalf("Next on a service with two ports, none named: %v", err)
		}
	})
}

// A terminating endpoint that still serves drains while another is ready,
// and serves while none is (kube-proxy's fallback: a single replica's
// rollout, a Recreate one, a drained node), on the conditions as the API
// server stores them.
func TestServingTerminatingFallback(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "")
	defer reg.Close()
	const svc = "rollout"
	w := watchSvc(t, reg, svc+":http")
	cond := func(ready, serving, terminating bool) discoveryv1.EndpointConditions {
		return discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
	oldPod, newPod := kubetest.Endpoint("web-old", "10.1.0.1"), kubetest.Endpoint("web-new", "10.1.0.2")
	oldPod.Conditions = cond(false, true, true)
	weights := func(s []discovery.Instance) string {
		var ws []string
		for _, in := range s {
			ws = append(ws, fmt.Sprintf("%s=%d/%s", in.ID, in.Weight, in.Metadata[MetaState]))
		}
		return strings.Join(ws, " ")
	}
	steps := []struct {
		name   string
		newPod discoveryv1.EndpointConditions // web-new's; web-old terminates, serving
		want   string
	}{
		{"the new pod starting: the old one serves", cond(false, false, false), "web-new=1/not-ready web-old=1/draining"},
		{"the new pod ready: the old one drains", cond(true, true, false), "web-new=1/ready web-old=0/draining"},
		{"the new pod not ready again: the old one serves again", cond(false, false, false), "web-new=1/not-ready web-old=1/draining"},
		{"both terminating and serving: both serve", cond(false, true, true), "web-new=1/draining web-old=1/draining"},
	}
	for _, st := range steps {
		newPod.Conditions = st.newPod
		e.srv.ApplySlice(t, kubetest.Slice(e.ns, svc, svc+"-1", "http", 8080, oldPod, newPod))
		discoverytest.WaitFor(t, w, 10*time.Second, st.name+": "+st.want, func(s []discovery.Instance) bool {
			discovery.SortByID(s)
			return weights(s) == st.want
		})
	}
}

// Endpoints that cannot be followed are an error that says why, on slices
// as the API server stores them: a Service without ports (followed on a
// number only), FQDN endpoints, an address type the registry leaves out.
func TestEndpointsNotFollowed(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "")
	defer reg.Close()
	wantErr := func(reg discovery.Registry, svc, want string) {
		t.Helper()
		if err := discoverytest.WatchError(t, reg, svc, 10*time.Second); !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v; want an error containing %q", svc, err, want)
		}
	}

	headless := kubetest.Slice(e.ns, "headless", "headless-1", "", 0, kubetest.Endpoint("pod-a", "10.1.0.1"), kubetest.Endpoint("pod-b", "10.1.0.2"))
	headless.Ports = []discoveryv1.EndpointPort{}
	e.srv.ApplySlice(t, headless)
	wantErr(reg, "headless", "the service's endpoints have no ports (a Service without ports, as a headless one may be); name the number they listen on")
	w := watchSvc(t, reg, "headless:8080")
	discoverytest.WaitFor(t, w, 10*time.Second, "both endpoints on 8080", func(s []discovery.Instance) bool {
		return len(s) == 2 && s[0].Port == 8080 && s[1].Port == 8080
	})

	fqdn := kubetest.Slice(e.ns, "external", "external-1", "http", 8080, kubetest.Endpoint("", "backend.example.com"))
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	e.srv.ApplySlice(t, fqdn)
	wantErr(reg, "external:http", "the service's endpoints are all FQDN names")

	e.srv.ApplySlice(t, kubetest.Slice(e.ns, "v4", "v4-1", "http", 8080, kubetest.Endpoint("pod-a", "10.1.0.1")))
	v6 := e.open(t, "address_type: IPv6")
	defer v6.Close()
	wantErr(v6, "v4:http", "the service's endpoints are all IPv4 addresses (address_type: IPv6 leaves them out")
}

// Without a port named, a Service's only TCP port is followed, whatever
// UDP ports it has beside it (as kube-dns has); a port without a number
// (the API's "all ports") is named in words in an error.
func TestPortChoice(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "")
	defer reg.Close()
	dns := kubetest.Slice(e.ns, "dns", "dns-1", "dns-tcp", 53, kubetest.Endpoint("pod-a", "10.1.0.1"))
	udp, name, num := corev1.ProtocolUDP, "dns", int32(53)
	dns.Ports = append(dns.Ports, discoveryv1.EndpointPort{Name: &name, Port: &num, Protocol: &udp})
	e.srv.ApplySlice(t, dns)
	w := watchSvc(t, reg, "dns")
	discoverytest.WaitFor(t, w, 10*time.Second, "pod-a on 53", func(s []discovery.Instance) bool {
		return len(s) == 1 && s[0].ID == "pod-a" && s[0].Port == 53
	})

	all := kubetest.Slice(e.ns, "all", "all-1", "", 0, kubetest.Endpoint("pod-a", "10.1.0.1"))
	tcp, none := corev1.ProtocolTCP, ""
	all.Ports = []discoveryv1.EndpointPort{{Name: &none, Protocol: &tcp}}
	e.srv.ApplySlice(t, all)
	const want = "the service's endpoints have no TCP port 8080; they have a port with no number"
	if err := discoverytest.WatchError(t, reg, "all:8080", 10*time.Second); !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("all:8080: %v; want an error ending in %q", err, want)
	}
}

// With pods: true, the pod's labels reach the instance, and an endpoint
// whose pod is not there yet joins only once it is.
func TestPodLabels(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "pods: true\nport: http")
	defer reg.Close()
	const svc = "labelled"
	w := watchSvc(t, reg, svc)
	e.srv.ApplyPod(t, e.ns, "web-1", map[string]string{"version": "v1"}, nil)
	e.srv.ApplySlice(t, kubetest.Slice(e.ns, svc, svc+"-1", "http", 8080,
		kubetest.Endpoint("web-1", "127.0.0.1"), kubetest.Endpoint("web-2", "127.0.0.2")))
	discoverytest.WaitFor(t, w, 10*time.Second, "web-1 alone (web-2's pod is not there)", func(s []discovery.Instance) bool {
		return len(s) == 1 && s[0].ID == "web-1" && s[0].Metadata["version"] == "v1"
	})
	e.srv.ApplyPod(t, e.ns, "web-2", map[string]string{"version": "v2", "canary": "true"}, map[string]string{WeightAnnotation: "3"})
	discoverytest.WaitFor(t, w, 10*time.Second, "web-2 with its labels", func(s []discovery.Instance) bool {
		return len(s) == 2 && s[1].ID == "web-2" && s[1].Metadata["canary"] == "true" && s[1].Weight == 3
	})
	e.srv.ApplyPod(t, e.ns, "web-2", map[string]string{"version": "v2"}, nil)
	discoverytest.WaitFor(t, w, 10*time.Second, "web-2 relabelled", func(s []discovery.Instance) bool {
		return len(s) == 2 && s[1].Metadata["canary"] == "" && s[1].Weight == 1
	})
}

// Without the pods permission, a watcher with pods: true says why and
// delivers nothing (rather than a set without the canary labels).
func TestPodsForbidden(t *testing.T) {
	srv := kubetest.Shared(t, kubetest.Config{})
	ns := srv.Namespace(t, "nopods")
	srv.Grant(t, ns, "remora", "slices-only", readerRules[0])
	e := &env{srv: srv, ns: ns, token: srv.ServiceAccountToken(t, ns, "remora")}
	reg := e.open(t, "pods: true")
	defer reg.Close()
	w := watchSvc(t, reg, "svc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := w.Next(ctx)
	if err == nil || !strings.Contains(err.Error(), "pods") || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("Next without the pods permission: %v; want a forbidden error on pods", err)
	}
}

// noError fails t if Next returns an error within d, and returns the sets
// it returned meanwhile.
func noError(t *testing.T, w discovery.Watcher, d time.Duration) [][]discovery.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var sets [][]discovery.Instance
	for {
		set, err := w.Next(ctx)
		if ctx.Err() != nil {
			return sets
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		sets = append(sets, set)
	}
}

// The API server stopped: Next reports stale and never an empty set; once
// it is back, Next returns the set (unchanged) and follows changes again.
func TestAPIServerOutage(t *testing.T) {
	srv := kubetest.Start(t, kubetest.Config{Name: "outage"})
	ns := srv.Namespace(t, "outage")
	srv.Grant(t, ns, "remora", "remora-discovery", readerRules...)
	e := &env{srv: srv, ns: ns, token: srv.ServiceAccountToken(t, ns, "remora")}
	reg := e.open(t, "")
	defer reg.Close()
	const svc = "web"
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("a", "127.0.0.1")))
	w := watchSvc(t, reg, svc)
	discoverytest.WaitFor(t, w, 10*time.Second, "a", func(s []discovery.Instance) bool { return len(s) == 1 })

	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatal("no stale error within 15s of the API server stopping")
			}
			t.Logf("stale as expected: %v", err)
			break
		}
		t.Fatalf("a set while the API server is down: %s", discoverytest.Describe(set))
	}
	srv.Up(t)
	start := time.Now()
	set := discoverytest.WaitFor(t, w, 60*time.Second, "the set again", func(s []discovery.Instance) bool { return len(s) == 1 })
	t.Logf("fresh again %v after the restart: %s", time.Since(start), discoverytest.Describe(set))
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("a", "127.0.0.1"), kubetest.Endpoint("b", "127.0.0.2")))
	discoverytest.WaitFor(t, w, 10*time.Second, "b after the outage", func(s []discovery.Instance) bool { return len(s) == 2 })
}

// Watches that the server ends (its timeout) are renewed from the last
// resourceVersion: every change arrives, and expiry is no outage.
func TestWatchExpiry(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "")
	defer reg.Close()
	reg.WatchTimeout = time.Second
	watches := &watchCounter{Client: reg.client}
	reg.client = watches
	const svc = "expiring"
	w := watchSvc(t, reg, svc)
	discoverytest.WaitFor(t, w, 10*time.Second, "the empty set", func(s []discovery.Instance) bool { return s != nil && len(s) == 0 })
	var eps []discoveryv1.Endpoint
	for i := 1; i <= 4; i++ {
		eps = append(eps, kubetest.Endpoint(fmt.Sprintf("p%d", i), fmt.Sprintf("127.0.0.%d", i)))
		e.srv.ApplySlice(t, kubetest.Slice(e.ns, svc, svc+"-1", "http", 8080, eps...))
		discoverytest.WaitFor(t, w, 5*time.Second, fmt.Sprintf("%d endpoints", i), func(s []discovery.Instance) bool { return len(s) == i })
		// Outlive a watch or two; Next must not report an error.
		if sets := noError(t, w, 1500*time.Millisecond); len(sets) > 0 {
			t.Fatalf("sets without a change: %v", sets)
		}
	}
	if n := watches.n.Load(); n < 4 {
		t.Fatalf("%d watches in 6 s with a 1 s timeout: the server did not end them", n)
	}
}

// watchCounter is a Client that counts the EndpointSlice watches started.
type watchCounter struct {
	Client
	n atomic.Int64
}

func (c *watchCounter) WatchEndpointSlices(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
	c.n.Add(1)
	return c.Client.WatchEndpointSlices(ctx, ns, o)
}

// partition is a Client that can be cut off the API server (every call
// fails as if the server refused the connection) and counts the answers
// (to a list, a watch or within a watch) saying that a resourceVersion is
// too old (410 Gone). It says it cannot stream lists (WatchList), so the
// reflector lists and then watches from the list's resourceVersion, the
// way that meets 410; a streamed list starts from the current state and
// never does.
type partition struct {
	Client
	cut     atomic.Bool
	expired atomic.Int64
}

func (c *partition) IsWatchListSemanticsUnSupported() bool { return true }

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (c *partition) ListEndpointSlices(ctx context.Context, ns string, o metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	if c.cut.Load() {
		return nil, errRefused
	}
	l, err := c.Client.ListEndpointSlices(ctx, ns, o)
	if expired(err) {
		c.expired.Add(1)
	}
	return l, err
}

func (c *partition) WatchEndpointSlices(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
	if c.cut.Load() {
		return nil, errRefused
	}
	wi, err := c.Client.WatchEndpointSlices(ctx, ns, o)
	if err != nil {
		if expired(err) {
			c.expired.Add(1)
		}
		return nil, err
	}
	return newTapWatch(wi, func(ev watch.Event) {
		if ev.Type == watch.Error && expired(apierrors.FromObject(ev.Object)) {
			c.expired.Add(1)
		}
	}), nil
}

// tapWatch passes a watch's events on, showing each to tap first. Unlike
// watch.Filter's, its goroutine ends when Stop is called while an event
// waits to be read.
type tapWatch struct {
	in   watch.Interface
	out  chan watch.Event
	stop chan struct{}
	once sync.Once
}

func newTapWatch(in watch.Interface, tap func(watch.Event)) *tapWatch {
	w := &tapWatch{in: in, out: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		defer close(w.out)
		for {
			select {
			case ev, ok := <-in.ResultChan():
				if !ok {
					return
				}
				tap(ev)
				select {
				case w.out <- ev:
				case <-w.stop:
					return
				}
			case <-w.stop:
				return
			}
		}
	}()
	return w
}

func (w *tapWatch) ResultChan() <-chan watch.Event { return w.out }

func (w *tapWatch) Stop() {
	w.once.Do(func() {
		close(w.stop)
		w.in.Stop()
	})
}

// A client cut off while its resourceVersion is compacted away is
// answered 410 Gone when it watches again, lists again, and so sees what
// changed meanwhile. The cut is at the Client (calls fail with "connection
// refused" while the server runs), so that the watch that was open ends
// cleanly first, as at its timeout, and the reflector retries that watch
// from its resourceVersion instead of listing.
func TestResourceVersionTooOld(t *testing.T) {
	// Without the watch cache, watches are served from etcd, whose
	// compaction makes an old resourceVersion fail at once.
	srv := kubetest.Start(t, kubetest.Config{Name: "nocache", Args: []string{"--watch-cache=false"}})
	ns := srv.Namespace(t, "gone")
	rc := restClientOf(t, srv)
	client := &partition{Client: rc}
	reg := NewRegistry(client, Config{Namespace: ns}, discovery.Env{Name: "k8s"})
	defer reg.Close()
	reg.WatchTimeout = time.Second
	const svc = "web"
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("a", "127.0.0.1")))
	w := watchSvc(t, reg, svc)
	discoverytest.WaitFor(t, w, 10*time.Second, "a", func(s []discovery.Instance) bool { return len(s) == 1 })

	client.cut.Store(true)
	time.Sleep(2 * time.Second) // the open watch times out; watching again is refused
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("a", "127.0.0.1"), kubetest.Endpoint("b", "127.0.0.2")))
	srv.ApplySlice(t, kubetest.Slice(ns, "other", "other-1", "http", 8080, kubetest.Endpoint("x", "127.0.0.9")))
	srv.Compact(t)
	client.cut.Store(false)
	set := discoverytest.WaitFor(t, w, 60*time.Second, "a and b after the compaction", func(s []discovery.Instance) bool { return len(s) == 2 })
	if client.expired.Load() == 0 {
		t.Fatalf("no answer was 410 Gone: the test did not exercise what it is for (set %s)", discoverytest.Describe(set))
	}
	t.Logf("410 Gone answers: %d", client.expired.Load())
}

// Close stops the watchers: Next returns ErrStopped.
func TestCloseStopsWatchers(t *testing.T) {
	e := newEnv(t)
	reg := e.open(t, "pods: true")
	w := watchSvc(t, reg, "closing")
	discoverytest.WaitFor(t, w, 10*time.Second, "the empty set", func(s []discovery.Instance) bool { return s != nil })
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, discovery.ErrStopped) {
		t.Fatalf("Next after Close: %v", err)
	}
	if _, err := reg.Watch(context.Background(), "other"); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
}

// restClientOf is a Client of srv's API server as its admin, its idle
// connections closed when t ends.
func restClientOf(t *testing.T, srv *kubetest.Server) Client {
	t.Helper()
	cfg := srv.RESTConfig()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hc.CloseIdleConnections)
	rc, err := newRESTClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// podsPartition refuses the pods calls while cut, and passes the rest.
type podsPartition struct {
	Client
	cut atomic.Bool
}

func (c *podsPartition) IsWatchListSemanticsUnSupported() bool { return true }

func (c *podsPartition) ListPods(ctx context.Context, ns string, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	if c.cut.Load() {
		return nil, errRefused
	}
	return c.Client.ListPods(ctx, ns, o)
}

func (c *podsPartition) WatchPods(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
	if c.cut.Load() {
		return nil, errRefused
	}
	return c.Client.WatchPods(ctx, ns, o)
}

// With pods: true, while the pods cannot be read, a slice change whose
// pods are not known is no set to publish: the last set stays, stale;
// once the pods can be read, the new set comes, labels and all.
func TestPodsOutageKeepsTheLastSet(t *testing.T) {
	srv := kubetest.Shared(t, kubetest.Config{})
	ns := srv.Namespace(t, "podsout")
	rc := restClientOf(t, srv)
	client := &podsPartition{Client: rc}
	reg := NewRegistry(client, Config{Namespace: ns, Pods: true}, discovery.Env{Name: "k8s"})
	defer reg.Close()
	reg.WatchTimeout = time.Second
	const svc = "web"
	srv.ApplyPod(t, ns, "a", map[string]string{"version": "v1"}, nil)
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("a", "127.0.0.1")))
	w := watchSvc(t, reg, svc)
	discoverytest.WaitFor(t, w, 10*time.Second, "a", func(s []discovery.Instance) bool { return len(s) == 1 && s[0].ID == "a" })

	client.cut.Store(true)
	time.Sleep(2 * time.Second) // the open pods watch times out; watching again is refused
	srv.ApplyPod(t, ns, "b", map[string]string{"version": "v2"}, nil)
	srv.ApplySlice(t, kubetest.Slice(ns, svc, "web-1", "http", 8080, kubetest.Endpoint("b", "127.0.0.2")))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	stale := false
	for {
		set, err := w.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			stale = true
			continue
		}
		if len(set) != 1 || set[0].ID != "a" {
			cancel()
			t.Fatalf("while the pods cannot be read: %s; want a alone, kept", discoverytest.Describe(set))
		}
	}
	cancel()
	if !stale {
		t.Error("while the pods cannot be read: no error; want the watcher stale")
	}

	client.cut.Store(false)
	discoverytest.WaitFor(t, w, 15*time.Second, "b with its labels", func(s []discovery.Instance) bool {
		return len(s) == 1 && s[0].ID == "b" && s[0].Metadata["version"] == "v2"
	})
}
