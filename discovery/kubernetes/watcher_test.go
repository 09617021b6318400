package kubernetes

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

// fakeClient is an in-memory Client: EndpointSlices only, one list result
// and the watches the informer opens, into which a test sends events. While
// down, every call fails. Its methods are safe for concurrent use.
type fakeClient struct {
	mu      sync.Mutex
	slices  []discoveryv1.EndpointSlice
	rv      int
	down    error
	watches chan *watch.RaceFreeFakeWatcher
}

func newFakeClient(slices ...discoveryv1.EndpointSlice) *fakeClient {
	return &fakeClient{slices: slices, rv: 1, watches: make(chan *watch.RaceFreeFakeWatcher, 16)}
}

func (c *fakeClient) IsWatchListSemanticsUnSupported() bool { return true }

func (c *fakeClient) setDown(err error) {
	c.mu.Lock()
	c.down = err
	c.mu.Unlock()
}

func (c *fakeClient) ListEndpointSlices(context.Context, string, metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down != nil {
		return nil, c.down
	}
	l := &discoveryv1.EndpointSliceList{Items: append([]discoveryv1.EndpointSlice(nil), c.slices...)}
	l.ResourceVersion = "1"
	return l, nil
}

func (c *fakeClient) WatchEndpointSlices(context.Context, string, metav1.ListOptions) (watch.Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down != nil {
		return nil, c.down
	}
	w := watch.NewRaceFreeFake()
	c.watches <- w
	return w, nil
}

func (c *fakeClient) ListPods(context.Context, string, metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
	return nil, errors.New("fakeClient: no pods")
}

func (c *fakeClient) WatchPods(context.Context, string, metav1.ListOptions) (watch.Interface, error) {
	return nil, errors.New("fakeClient: no pods")
}

// nextWatch returns the watch the informer opened last.
func (c *fakeClient) nextWatch(t *testing.T) *watch.RaceFreeFakeWatcher {
	t.Helper()
	select {
	case w := <-c.watches:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("the informer opened no watch within 10s")
		return nil
	}
}

func fakeSlice(name, rv string, eps ...ep) discoveryv1.EndpointSlice {
	s := slice(name, v4, httpPort, eps...)
	s.ResourceVersion = rv
	return *s
}

// The fake's watcher: the first set comes after the list, a watch event
// changes it, an outage makes Next stale without ever emptying the set,
// and the first call that succeeds again returns the (unchanged) set.
func TestWatcherOverFakeClient(t *testing.T) {
	c := newFakeClient(fakeSlice("s1", "1", ep{pod: "a", addr: "10.0.0.1"}))
	reg := NewRegistry(c, Config{Namespace: "ns"}, discovery.Env{Name: "fake"})
	defer reg.Close()
	w, err := reg.Watch(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	has := func(n int) func([]discovery.Instance) bool {
		return func(s []discovery.Instance) bool { return len(s) == n }
	}
	discoverytest.WaitFor(t, w, 10*time.Second, "a", has(1))

	fw := c.nextWatch(t)
	s := fakeSlice("s1", "2", ep{pod: "a", addr: "10.0.0.1"}, ep{pod: "b", addr: "10.0.0.2"})
	fw.Modify(&s)
	discoverytest.WaitFor(t, w, 10*time.Second, "a and b", has(2))

	// The API server goes away: the watch breaks, calls fail.
	c.setDown(errRefused)
	fw.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	set, err := w.Next(ctx)
	if err == nil {
		t.Fatalf("Next during the outage returned a set: %s", discoverytest.Describe(set))
	}
	if ctx.Err() != nil {
		t.Fatal("no stale error within 10s")
	}
	c.setDown(nil)
	discoverytest.WaitFor(t, w, 30*time.Second, "a and b again", has(2))
}

// Stop unblocks Next, and Close waits for the informer's goroutines (the
// package's TestMain checks that none is left).
func TestWatcherStopAndClose(t *testing.T) {
	c := newFakeClient()
	reg := NewRegistry(c, Config{}, discovery.Env{})
	w, err := reg.Watch(context.Background(), "other-ns/svc:http")
	if err != nil {
		t.Fatal(err)
	}
	discoverytest.WaitFor(t, w, 10*time.Second, "the empty set", func(s []discovery.Instance) bool { return s != nil && len(s) == 0 })
	errc := make(chan error, 1)
	go func() { _, err := w.Next(context.Background()); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	w.Stop()
	select {
	case err := <-errc:
		if !errors.Is(err, discovery.ErrStopped) {
			t.Fatalf("Next after Stop: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Stop did not unblock Next")
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Watch(context.Background(), "bad name"); err == nil {
		t.Fatal("Watch of an invalid service name succeeded")
	}
}
