package kubetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	rbacv1client "k8s.io/client-go/kubernetes/typed/rbac/v1"
)

// ServiceNameLabel is the label that ties an EndpointSlice to its Service.
const ServiceNameLabel = discoveryv1.LabelServiceName

// Core returns an admin client of the core/v1 API, failing t on error.
func (s *Server) Core(t testing.TB) corev1client.CoreV1Interface {
	t.Helper()
	c, err := corev1client.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatalf("kubetest: core/v1 client: %v", err)
	}
	return c
}

// Discovery returns an admin client of the discovery.k8s.io/v1 API,
// failing t on error.
func (s *Server) Discovery(t testing.TB) discoveryv1client.DiscoveryV1Interface {
	t.Helper()
	c, err := discoveryv1client.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatalf("kubetest: discovery/v1 client: %v", err)
	}
	return c
}

var nsSeq atomic.Int64

// Namespace creates a namespace named prefix-N (N unique in the process)
// with its "default" service account (which the service-account
// controller would create) and returns its name. Namespaces are not
// deleted: nothing finalizes them without a controller manager, and the
// server's data goes when it closes.
func (s *Server) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1))
	c, cancel := ctx()
	defer cancel()
	core := s.Core(t)
	if _, err := core.Namespaces().Create(c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: creating namespace %s: %v", name, err)
	}
	s.ServiceAccount(t, name, "default")
	return name
}

// ServiceAccount creates service account name in namespace ns unless it
// exists.
func (s *Server) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	_, err := s.Core(t).ServiceAccounts(ns).Create(c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kubetest: creating service account %s/%s: %v", ns, name, err)
	}
}

// ServiceAccountToken mints a bearer token for service account ns/name
// through the TokenRequest API (valid for an hour), as the kubelet does
// for a pod's projected token.
func (s *Server) ServiceAccountToken(t testing.TB, ns, name string) string {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	secs := int64(3600)
	tr, err := s.Core(t).ServiceAccounts(ns).CreateToken(c, name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for service account %s/%s: %v", ns, name, err)
	}
	return tr.Status.Token
}

// Slice returns an EndpointSlice of service svc in namespace ns, as the
// endpoint-slice controller writes one: labelled with the service's name,
// address type IPv4, one port (name may be "") and the given endpoints.
func Slice(ns, svc, name, portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	proto := corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns,
			Labels: map[string]string{ServiceNameLabel: svc, discoveryv1.LabelManagedBy: "kubetest"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		Endpoints:   eps,
	}
}

// Endpoint returns a ready endpoint at ip whose target is pod (no target
// when pod is "").
func Endpoint(pod, ip string) discoveryv1.Endpoint {
	yes, no := true, false
	ep := discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no},
	}
	if pod != "" {
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: pod}
	}
	return ep
}

// ApplySlice creates slice, or replaces the one with its name, failing t on
// error.
//
// The API refuses EndpointSlices with loopback addresses (validation:
// "may not be in the loopback range"), and tests may reach only loopback
// backends. A slice with a loopback address is therefore written into the
// API server's storage (its etcd, as JSON: the server runs with
// --storage-media-type=application/json) instead of through the API; the
// API server serves it, lists it and sends its watch events as it would any
// other. Every other slice goes through the API, validated.
func (s *Server) ApplySlice(t testing.TB, slice *discoveryv1.EndpointSlice) {
	t.Helper()
	if loopback(slice) {
		s.storeSlice(t, slice)
		return
	}
	c, cancel := ctx()
	defer cancel()
	api := s.Discovery(t).EndpointSlices(slice.Namespace)
	_, err := api.Create(c, slice, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *discoveryv1.EndpointSlice
		if cur, err = api.Get(c, slice.Name, metav1.GetOptions{}); err == nil {
			next := slice.DeepCopy()
			next.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(c, next, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("kubetest: writing EndpointSlice %s/%s: %v", slice.Namespace, slice.Name, err)
	}
}

func loopback(slice *discoveryv1.EndpointSlice) bool {
	for _, ep := range slice.Endpoints {
		for _, a := range ep.Addresses {
			if ip := net.ParseIP(a); ip != nil && ip.IsLoopback() {
				return true
			}
		}
	}
	return false
}

// storeSlice writes slice into the API server's etcd under the key the API
// server keeps it at, keeping the uid and creation time of the one there.
func (s *Server) storeSlice(t testing.TB, slice *discoveryv1.EndpointSlice) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	cli := s.etcdClient(t)
	key := "/registry/endpointslices/" + slice.Namespace + "/" + slice.Name
	obj := slice.DeepCopy()
	obj.TypeMeta = metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}
	obj.ResourceVersion = ""
	obj.UID = types.UID(uuid())
	obj.CreationTimestamp = metav1.Now()
	resp, err := cli.Get(c, key)
	if err == nil && len(resp.Kvs) == 1 {
		var cur discoveryv1.EndpointSlice
		if json.Unmarshal(resp.Kvs[0].Value, &cur) == nil {
			obj.UID, obj.CreationTimestamp, obj.Generation = cur.UID, cur.CreationTimestamp, cur.Generation+1
		}
	}
	b, err := json.Marshal(obj)
	if err == nil {
		_, err = cli.Put(c, key, string(b))
	}
	if err != nil {
		t.Fatalf("kubetest: storing EndpointSlice %s/%s in etcd: %v", slice.Namespace, slice.Name, err)
	}
}

// etcdClient returns a client of the server's etcd, closed when t ends.
func (s *Server) etcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.EtcdEndpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("kubetest: etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// uuid returns a random version-4 UUID, the form of an object's uid.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// DeleteSlice deletes EndpointSlice ns/name, failing t on error.
func (s *Server) DeleteSlice(t testing.TB, ns, name string) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	if err := s.Discovery(t).EndpointSlices(ns).Delete(c, name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("kubetest: deleting EndpointSlice %s/%s: %v", ns, name, err)
	}
}

// ApplyPod creates a pod ns/name with the given labels and annotations (one
// container, never scheduled: no kubelet runs here), or replaces the labels
// and annotations of the existing one, failing t on error.
func (s *Server) ApplyPod(t testing.TB, ns, name string, labels, annotations map[string]string) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	api := s.Core(t).Pods(ns)
	cur, err := api.Get(c, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:test"}}},
		}
		_, err = api.Create(c, pod, metav1.CreateOptions{})
	case err == nil:
		cur.Labels, cur.Annotations = labels, annotations
		_, err = api.Update(c, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("kubetest: writing pod %s/%s: %v", ns, name, err)
	}
}

// DeletePod deletes pod ns/name at once (no kubelet would confirm a
// graceful deletion), failing t on error.
func (s *Server) DeletePod(t testing.TB, ns, name string) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	zero := int64(0)
	if err := s.Core(t).Pods(ns).Delete(c, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("kubetest: deleting pod %s/%s: %v", ns, name, err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Grant creates a Role named name in namespace ns with rules and binds it
// to service account ns/sa (creating the account if needed), failing t on
// error.
func (s *Server) Grant(t testing.TB, ns, sa, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	s.ServiceAccount(t, ns, sa)
	c, cancel := ctx()
	defer cancel()
	rc, err := rbacv1client.NewForConfig(s.RESTConfig())
	if err != nil {
		t.Fatalf("kubetest: rbac/v1 client: %v", err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules}
	if _, err := rc.Roles(ns).Create(c, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: creating role %s/%s: %v", ns, name, err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}
	if _, err := rc.RoleBindings(ns).Create(c, rb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kubetest: creating role binding %s/%s: %v", ns, name, err)
	}
}

// Compact compacts the server's etcd up to its current revision, as the
// API server does every five minutes: a watch from an older
// resourceVersion then fails with 410 Gone (where the watch cache is off).
func (s *Server) Compact(t testing.TB) {
	t.Helper()
	c, cancel := ctx()
	defer cancel()
	cli := s.etcdClient(t)
	resp, err := cli.Get(c, "compact-probe")
	if err == nil {
		_, err = cli.Compact(c, resp.Header.Revision, clientv3.WithCompactPhysical())
	}
	if err != nil {
		t.Fatalf("kubetest: compacting etcd: %v", err)
	}
}
