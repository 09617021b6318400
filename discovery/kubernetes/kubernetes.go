// Package kubernetes is the registry adapter for Kubernetes: it follows a
// Service's EndpointSlices (discovery.k8s.io/v1) through client-go
// informers and reports their endpoints as instances.
//
// An upstream's `service:` is [NAMESPACE/]NAME[:PORT] (ParseService). Each
// watcher runs one EndpointSlice informer, filtered by the label
// kubernetes.io/service-name=NAME in the namespace, so a sidecar lists and
// watches only the Services it calls; a Role with get, list and watch on
// endpointslices in those namespaces is all it needs.
//
// # Instances
//
// Every endpoint with an address on the selected port is an instance:
//
//   - ID: the name of its target pod (targetRef), so a node keeps its
//     statistics while its pod lives, whatever its port; KIND/NAME for
//     another kind of target; address:port without a target. A pod that
//     appears in two slices (dual stack, or moved between slices) is one
//     instance: the ready one, else the IPv4 one.
//   - Address: the endpoint's first address (the API calls them fungible);
//     Port: the slice's port of that name or number.
//   - Weight 1 (EndpointSlices have no weights), or the pod's
//     remora.io/weight annotation with pods: true.
//   - Healthy and Weight from the conditions: ready is healthy; terminating
//     but serving is healthy with weight 0, so it drains (kept, its
//     requests in flight finish, it gets no new ones); not ready is kept,
//     not healthy; terminating and not serving is kept with weight 0, not
//     healthy. MetaState names the state.
//   - Metadata: MetaZone and MetaZoneShort ("zone", which locality: reads
//     by default), MetaNode, MetaPod, MetaState, the topology hints
//     (MetaHintZones, MetaHintNodes) and, with pods: true, the target pod's
//     labels (canary, version, ...).
//
// # Pods
//
// With pods: true, the registry runs one metadata-only pods informer per
// namespace (PartialObjectMetadata: labels and annotations, never specs),
// shared by the watchers of that namespace; it needs get, list and watch on
// pods. An endpoint whose pod the informer has not seen yet is left out
// until it has, so that a canary pod never joins without its canary label.
// A watcher delivers its first set once both informers have synced.
//
// # Outages
//
// The informers keep their caches through any error, so an API server that
// cannot be reached never empties a set: each failed list or watch call
// makes Next return an error ("stale", the last set stays), and the first
// call that succeeds again makes Next return the current set, even if
// unchanged. A call refused at connect (the server is down or
// restarting) is retried after 200 ms doubling to 4 s, with jitter, so a
// server that is back is seen within seconds; other errors are retried by
// client-go's reflector with its backoff (0.8 s doubling to 30 s, with
// jitter). The reflector resumes a watch from the last resourceVersion it
// saw, starts a new one when the server ends a watch
// (its timeout, 5 to 10 minutes), and lists again when the server answers
// that the resourceVersion is too old (410 Gone, after etcd compacted it);
// a list replaces the cache, so what changed meanwhile is delivered then.
// A silent network partition is noticed by client-go's HTTP/2 health
// check (a ping after 30 s without a frame, 15 s to answer).
//
// client-go's goroutines end the process on a panic. So a list or watch
// call that panics fails with the panic as its error (and is retried as
// such), and a panic in building a watcher's set from the caches is
// returned by Next as an error, the set being built again a second later
// (or at the next event); both are logged with their stacks.
//
// # Connecting
//
// In-cluster configuration by default (the pod's service account), or a
// kubeconfig file. Opening the registry reads those files but never waits
// for the API server: watchers report it when it cannot be reached. A
// kubeconfig is checked with the config (Options.Check); in-cluster
// configuration that is missing (not running in a pod) does not stop
// Remora: the registry's watchers report it.
//
// The configuration is described on Options.
package kubernetes

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/regularfile"
	"github.com/remora-mesh/remora/internal/tlsfiles"
)

// Type is the adapter's type name in config.
const Type = "kubernetes"

func init() { discovery.Register(factory{}) }

var (
	_ discovery.Factory  = factory{}
	_ discovery.Options  = (*Options)(nil)
	_ discovery.Registry = (*Registry)(nil)
	_ discovery.Watcher  = (*watcher)(nil)
)

type factory struct{}

func (factory) Type() string { return Type }

func (factory) Parse(decode func(any) error) (discovery.Options, error) {
	var o Options
	if err := decode(&o); err != nil {
		return nil, err
	}
	if err := o.normalize(); err != nil {
		return nil, err
	}
	return &o, nil
}

// serviceAccountNamespace is where the kubelet mounts the pod's namespace.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Check implements discovery.Checker: the kubeconfig file, relative to
// baseDir, is loaded as Open loads it: its context, cluster and user, and
// the certificate authority, client certificate and key it names or holds
// are read and parsed. In-cluster configuration is the environment's, not
// the config file's: it is not checked.
func (o *Options) Check(baseDir string) error {
	if o.Kubeconfig == "" {
		return nil
	}
	cfg, _, err := o.restConfig(baseDir)
	if err != nil {
		return err
	}
	path, _ := o.kubeconfigPath(baseDir)
	// Not rest.HTTPClientFor: a transport with certificate files starts a
	// goroutine that client-go never stops. TLSConfigFor reads the files
	// and parses the CA; a client certificate and key given as files it
	// only reads (client-go loads them on use, and merely logs a bad
	// pair), so they are parsed here.
	if _, err := rest.TLSConfigFor(cfg); err != nil {
		return fmt.Errorf("kubeconfig: %s: %w", path, err)
	}
	if cfg.CertFile != "" && cfg.KeyFile != "" && len(cfg.CertData) == 0 && len(cfg.KeyData) == 0 {
		if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
			return fmt.Errorf("kubeconfig: %s: client-certificate %s, client-key %s: %w", path, cfg.CertFile, cfg.KeyFile, err)
		}
	}
	return nil
}

// Open implements discovery.Options. It reads the kubeconfig file, or the
// in-cluster service account files, and returns at once: nothing is asked
// of the API server until a watcher starts. A kubeconfig that Check
// accepted and that cannot be read any more is an error. In-cluster
// configuration that is missing (Remora is not running in a pod) or
// unreadable is not: it is logged, and every watcher of the registry
// reports it (Next returns it, retried with client-go's backoff).
func (o *Options) Open(env discovery.Env) (discovery.Registry, error) {
	log := env.Logger()
	cfg, ns, err := o.restConfig(env.BaseDir)
	var hc *http.Client
	if err == nil {
		cfg = rest.CopyConfig(cfg)
		cfg.UserAgent = "remora"
		cfg.WarningHandler = warningLogger{log}
		hc, err = httpClient(cfg)
		if err != nil {
			err = fmt.Errorf("kubernetes client: %w", err)
		}
	}
	var client Client
	if err == nil {
		client, err = newRESTClient(cfg, hc)
	}
	if err != nil && o.Kubeconfig != "" {
		return nil, err
	}
	if o.Namespace != "" {
		ns = o.Namespace
	}
	if err != nil {
		log.WithField("registry", env.Name).WithError(err).Error("kubernetes: no API server to ask; every watch fails")
		return NewRegistry(failingClient{err}, Config{Namespace: ns, Port: o.Port, Pods: o.Pods, AddressType: o.AddressType}, env), nil
	}
	r := NewRegistry(client, Config{Namespace: ns, Port: o.Port, Pods: o.Pods, AddressType: o.AddressType}, env)
	r.closeIdle = func() { utilnet.CloseIdleConnectionsFor(hc.Transport) }
	return r, nil
}

// httpClient builds cfg's HTTP client (it loads the TLS files that cfg
// names) without sending anything. It sets cfg.Proxy.
func httpClient(cfg *rest.Config) (*http.Client, error) {
	// A Proxy function makes client-go build a transport of this registry's
	// own instead of sharing a cached one, so Close can close its
	// connections. ProxyFromEnvironment is client-go's default anyway.
	cfg.Proxy = http.ProxyFromEnvironment
	return rest.HTTPClientFor(cfg)
}

// restConfig loads the client configuration and the default namespace
// that comes with it (the pod's, or the kubeconfig context's). Errors
// about the kubeconfig name the field at fault (kubeconfig:, context:).
func (o *Options) restConfig(baseDir string) (*rest.Config, string, error) {
	if o.Kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, "", errors.New("kubernetes: not running in a pod ($KUBERNETES_SERVICE_HOST and _PORT are not set): " +
				"set kubeconfig: to run outside a cluster")
		}
		if err != nil {
			return nil, "", fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
		}
		ns := "default"
		if b, err := os.ReadFile(serviceAccountNamespace); err == nil && strings.TrimSpace(string(b)) != "" {
			ns = strings.TrimSpace(string(b))
		}
		return cfg, ns, nil
	}
	path, err := o.kubeconfigPath(baseDir)
	if err != nil {
		return nil, "", err
	}
	// client-go reads the file with os.ReadFile: a named pipe in its place
	// would block it (and validate, or start-up) for good, a device or a
	// huge file exhaust memory. Only a small regular file is handed over.
	if err := regularfile.Check(path, regularfile.MaxSize); err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path},
		&clientcmd.ConfigOverrides{CurrentContext: o.Context})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %s: %w", path, err)
	}
	switch {
	case o.Context != "" && raw.Contexts[o.Context] == nil:
		return nil, "", fmt.Errorf("context: %q is not a context of %s; it has %s", o.Context, path, contextNames(raw.Contexts))
	case o.Context == "" && raw.CurrentContext == "":
		return nil, "", fmt.Errorf("kubeconfig: %s has no current-context; set context: to one of its contexts (%s)", path, contextNames(raw.Contexts))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %s: %w", path, err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return cfg, ns, nil
}

// kubeconfigPath is the kubeconfig's file name: a leading ~/ resolved
// against $HOME, a relative name against baseDir.
func (o *Options) kubeconfigPath(baseDir string) (string, error) {
	path := o.Kubeconfig
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("kubeconfig: %q: %w", path, err)
		}
		path = filepath.Join(home, rest)
	}
	return tlsfiles.Resolve(baseDir, path), nil
}

// contextNames lists the names of a kubeconfig's contexts, sorted, for an
// error message.
func contextNames[V any](contexts map[string]V) string {
	if len(contexts) == 0 {
		return "none"
	}
	names := slices.Sorted(maps.Keys(contexts))
	for i, n := range names {
		names[i] = strconv.Quote(n)
	}
	return strings.Join(names, ", ")
}

// failingClient is the Client of a registry without an API server to ask:
// every call returns err, which the watchers report.
type failingClient struct{ err error }

func (f failingClient) ListEndpointSlices(context.Context, string, metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	return nil, f.err
}

func (f failingClient) WatchEndpointSlices(context.Context, string, metav1.ListOptions) (watch.Interface, error) {
	return nil, f.err
}

func (f failingClient) ListPods(context.Context, string, metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	return nil, f.err
}

func (f failingClient) WatchPods(context.Context, string, metav1.ListOptions) (watch.Interface, error) {
	return nil, f.err
}

// Config are a Registry's settings, as NewRegistry takes them.
type Config struct {
	// Namespace is the namespace of services named without one; empty
	// means "default".
	Namespace string
	// Port is the port (name or number) of services named without one.
	Port string
	// Pods turns on the pods informers (see the package doc).
	Pods bool
	// AddressType is AddressTypeIPv4, AddressTypeIPv6 or "" (both).
	AddressType string
}

// Registry follows Services of one API server.
//
// Its fields are set before the first Watch and read-only after. mu guards
// closed, watchers and pods; each pods informer is shared by the watchers
// of its namespace and stops with the last of them.
type Registry struct {
	// WatchTimeout, when set, asks the API server to end every watch after
	// this long (whole seconds), as it does after its own timeout; client-go
	// then watches again from the last resourceVersion. 0 leaves it to
	// client-go (5 to 10 minutes). Tests set it to prove that expiry loses
	// nothing.
	WatchTimeout time.Duration
	// ReconnectMax caps the backoff between connections refused by an
	// API server that is down; 0 means DefaultReconnectMax.
	ReconnectMax time.Duration

	client    Client
	cfg       Config
	env       discovery.Env
	log       *logrus.Entry
	closeIdle func() // closes the client's idle connections; may be nil
	wg        sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	watchers map[*watcher]struct{}
	pods     map[string]*podCache // by namespace
}

// NewRegistry returns a registry over client (Open uses the client of the
// configured API server; tests may pass a fake).
func NewRegistry(client Client, cfg Config, env discovery.Env) *Registry {
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	bridgeKlog(env.Logger())
	return &Registry{
		client: client, cfg: cfg, env: env,
		log:      env.Logger().WithField("registry", env.Name),
		watchers: map[*watcher]struct{}{},
		pods:     map[string]*podCache{},
	}
}

// Watch starts following service, [NAMESPACE/]NAME[:PORT]. It does not wait
// for the first set.
func (r *Registry) Watch(_ context.Context, service string) (discovery.Watcher, error) {
	svc, err := ParseService(service)
	if err != nil {
		return nil, err
	}
	if svc.Namespace == "" {
		svc.Namespace = r.cfg.Namespace
	}
	port := svc.Port
	if port == "" {
		port = r.cfg.Port
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("kubernetes: registry closed")
	}
	var pc *podCache
	if r.cfg.Pods {
		pc = r.podsLocked(svc.Namespace)
	}
	w := newWatcher(r, svc, selectPort(port), pc)
	r.watchers[w] = struct{}{}
	w.start()
	return w, nil
}

// podsLocked returns the namespace's pods informer, starting it on first
// use, with one more reference. r.mu is held.
func (r *Registry) podsLocked(ns string) *podCache {
	pc := r.pods[ns]
	if pc == nil {
		pc = newPodCache(r, ns)
		r.pods[ns] = pc
		pc.start()
	}
	pc.refs++
	return pc
}

// forget removes a stopped watcher and drops its pods informer reference,
// stopping the informer with its last watcher.
func (r *Registry) forget(w *watcher) {
	r.mu.Lock()
	delete(r.watchers, w)
	var stop *podCache
	if pc := w.pods; pc != nil {
		pc.unsubscribe(w)
		if pc.refs--; pc.refs == 0 {
			delete(r.pods, pc.ns)
			stop = pc
		}
	}
	r.mu.Unlock()
	if stop != nil {
		stop.stop()
	}
}

// Close stops every watcher and informer, waits for their goroutines and
// closes the client's idle connections.
func (r *Registry) Close() error {
	r.mu.Lock()
	r.closed = true
	ws := make([]*watcher, 0, len(r.watchers))
	for w := range r.watchers {
		ws = append(ws, w)
	}
	r.mu.Unlock()
	for _, w := range ws {
		_ = w.Stop()
	}
	r.wg.Wait()
	if r.closeIdle != nil {
		r.closeIdle()
	}
	return nil
}

func (r *Registry) reconnectMax() time.Duration {
	if r.ReconnectMax > 0 {
		return r.ReconnectMax
	}
	return DefaultReconnectMax
}

// goFunc runs f on a goroutine that Close waits for.
func (r *Registry) goFunc(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// warningLogger logs the API server's warnings (deprecations, ...).
type warningLogger struct{ log *logrus.Entry }

func (w warningLogger) HandleWarningHeader(code int, agent, text string) {
	if code == 299 && text != "" {
		w.log.WithField("warning", text).Warn("kubernetes API server warning")
	}
}
