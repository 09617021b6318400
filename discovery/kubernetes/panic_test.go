package kubernetes

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// panickingList is a fakeClient whose first list of EndpointSlices
// panics.
type panickingList struct {
	*fakeClient
	lists atomic.Int32
}

func (c *panickingList) ListEndpointSlices(ctx context.Context, ns string, o metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	if c.lists.Add(1) == 1 {
		panic("injected: the list panicked")
	}
	return c.fakeClient.ListEndpointSlices(ctx, ns, o)
}

// openPanicking watches ns/svc on c with a registry logging to the hook
// it returns.
func openPanicking(t *testing.T, c Client) (discovery.Watcher, *logtest.Hook) {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	reg := NewRegistry(c, Config{Namespace: "ns"}, discovery.Env{Name: "fake", Log: logrus.NewEntry(logger)})
	t.Cleanup(func() { reg.Close() })
	w, err := reg.Watch(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Stop() })
	return w, hook
}

// nextWithin is w.Next, failing t if it takes more than d.
func nextWithin(t *testing.T, w discovery.Watcher, d time.Duration) ([]discovery.Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	set, err := w.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next did not return within %v", d)
	}
	return set, err
}

// checkPanicLogged fails t unless hook holds one error line, with value
// and a stack through this file.
func checkPanicLogged(t *testing.T, hook *logtest.Hook, value string) {
	t.Helper()
	var logged []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") || logged[0].Data["panic"] != value {
		t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
	}
}

// A list call that panics, on the reflector's goroutine, ended the
// process (client-go's own recovery panics again). It fails as a call
// that returned an error: the watcher is stale, the reflector lists again
// after its backoff, and the set comes.
func TestListPanicIsAFailedCall(t *testing.T) {
	w, hook := openPanicking(t, &panickingList{fakeClient: newFakeClient(fakeSlice("s1", "1", ep{pod: "a", addr: "10.0.0.1"}))})
	set, err := nextWithin(t, w, 10*time.Second)
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil {
		t.Fatalf("first Next = %v, %v; want a *panics.Error, no set", set, err)
	}
	if set, err := nextWithin(t, w, 10*time.Second); err != nil || len(set) != 1 {
		t.Fatalf("after the retry: Next = %v, %v; want the instance", set, err)
	}
	checkPanicLogged(t, hook, "injected: the list panicked")
}

// A panic in building the set, called by the informer's event handler on
// client-go's goroutine, ended the process. Next returns it as an error,
// the set kept, and the set is built again after a pause.
func TestRecomputePanicIsAnErrorAndItIsTriedAgain(t *testing.T) {
	var panicking atomic.Bool
	toInstances = func(ss []*discoveryv1.EndpointSlice, sel portSelector, addressType string, pods podLookup) ([]discovery.Instance, error) {
		if panicking.Load() {
			panic("injected: the mapping panicked")
		}
		return instances(ss, sel, addressType, pods)
	}
	t.Cleanup(func() { toInstances = instances }) // runs after the registry's Close, registered later
	c := newFakeClient(fakeSlice("s1", "1", ep{pod: "a", addr: "10.0.0.1"}))
	w, hook := openPanicking(t, c)
	if set, err := nextWithin(t, w, 10*time.Second); err != nil || len(set) != 1 {
		t.Fatalf("first Next = %v, %v; want the instance", set, err)
	}
	panicking.Store(true)
	s := fakeSlice("s1", "2", ep{pod: "a", addr: "10.0.0.1"}, ep{pod: "b", addr: "10.0.0.2"})
	c.nextWatch(t).Modify(&s)
	set, err := nextWithin(t, w, 10*time.Second)
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), "ns/svc") {
		t.Fatalf("Next after the panic = %v, %v; want a *panics.Error naming the service, no set", set, err)
	}
	panicking.Store(false)
	if set, err := nextWithin(t, w, 10*time.Second); err != nil || len(set) != 2 {
		t.Fatalf("after the pause: Next = %v, %v; want both instances", set, err)
	}
	checkPanicLogged(t, hook, "injected: the mapping panicked")
}
