package kubetest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	discoveryv1client "k8s.io/client-go/kubernetes/typed/discovery/v1"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) { Main(m) }

// The server starts, stores objects, survives a restart with them, and
// admits a service account only as far as RBAC allows.
func TestServer(t *testing.T) {
	s := Shared(t, Config{})
	ns := s.Namespace(t, "kubetest")
	s.ApplySlice(t, Slice(ns, "web", "web-1", "http", 8080, Endpoint("web-a", "127.0.0.1")))

	list := func(t *testing.T, c discoveryv1client.DiscoveryV1Interface) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := c.EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: ServiceNameLabel + "=web"})
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	}
	if n, err := list(t, s.Discovery(t)); err != nil || n != 1 {
		t.Fatalf("list: %d slices, %v", n, err)
	}

	t.Run("kubeconfig", func(t *testing.T) {
		path, err := s.Kubeconfig(t.TempDir(), "", ns)
		if err != nil {
			t.Fatal(err)
		}
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, nil)
		cfg, err := cc.ClientConfig()
		if err != nil {
			t.Fatal(err)
		}
		if got, _, _ := cc.Namespace(); got != ns {
			t.Fatalf("namespace %q", got)
		}
		c, err := discoveryv1client.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := list(t, c); err != nil || n != 1 {
			t.Fatalf("list through the kubeconfig: %d slices, %v", n, err)
		}
	})

	t.Run("service account without a role is forbidden", func(t *testing.T) {
		s.ServiceAccount(t, ns, "nobody")
		cfg := s.RESTConfig()
		cfg.BearerToken = s.ServiceAccountToken(t, ns, "nobody")
		c, err := discoveryv1client.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := list(t, c); err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Fatalf("list as a service account without a role: %v; want forbidden", err)
		}
	})

	t.Run("restart keeps the objects", func(t *testing.T) {
		s.Restart(t)
		if n, err := list(t, s.Discovery(t)); err != nil || n != 1 {
			t.Fatalf("after restart: %d slices, %v", n, err)
		}
	})
}

// Close stops the process and removes its files.
func TestClose(t *testing.T) {
	s, err := New(Config{Name: "close"})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", dir, err)
	}
}
