package discoverytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testproc"
)

// Harness connects the conformance suite to one adapter and its real server.
// Every function is required.
type Harness struct {
	// Open returns a registry connected to the server. The suite closes it.
	Open func(t *testing.T) discovery.Registry
	// Register creates the instance in the server, or replaces the one with
	// the same ID. Metadata, Weight, Address and Port must reach the
	// adapter's Instance unchanged.
	Register func(t *testing.T, service string, inst discovery.Instance)
	// Deregister removes the instance with id.
	Deregister func(t *testing.T, service, id string)
	// Restart stops the server and starts it again on the same address,
	// keeping its data.
	Restart func(t *testing.T)
	// Timeout bounds the wait for each change; 0 means 5 s.
	Timeout time.Duration
}

var serviceSeq atomic.Int64

// Conformance runs the suite every registry adapter must pass. Each subtest
// uses its own service name, so the server may be shared.
func Conformance(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 5 * time.Second
	}
	c := &suite{h: h}
	t.Run("InitialSet", c.initialSet)
	t.Run("EmptyServiceDeliversEmptySet", c.emptyService)
	t.Run("Add", c.add)
	t.Run("Remove", c.remove)
	t.Run("MetadataChangeKeepsID", c.metadataChange)
	t.Run("WeightChange", c.weightChange)
	t.Run("RemoveAllDeliversEmptySet", c.removeAll)
	t.Run("StopUnblocksNext", c.stopUnblocksNext)
	// Last: it restarts the server.
	t.Run("ServerRestartResumesWatch", c.serverRestart)
}

type suite struct{ h Harness }

// Instance returns a test instance on 127.0.0.1 with the given last octet
// seed, so that instances are distinguishable by address:port.
func Instance(id string, port int, meta map[string]string) discovery.Instance {
	return discovery.Instance{ID: id, Address: "127.0.0.1", Port: port, Weight: 1, Healthy: true, Metadata: meta}
}

// UniqueService returns a service name made of the test's name and a
// number unique in the process, so that tests may share a server.
func UniqueService(t *testing.T) string {
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("%s-%d", name, serviceSeq.Add(1))
}

func (c *suite) watch(t *testing.T) (string, discovery.Registry, discovery.Watcher) {
	t.Helper()
	svc := UniqueService(t)
	reg := c.h.Open(t)
	t.Cleanup(func() { _ = reg.Close() })
	w, err := reg.Watch(context.Background(), svc)
	if err != nil {
		t.Fatalf("Watch(%q): %v", svc, err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return svc, reg, w
}

// WaitFor calls w.Next until cond holds for the returned set, failing the
// test after timeout. Errors from Next ("stale") are tolerated while waiting.
func WaitFor(t *testing.T, w discovery.Watcher, timeout time.Duration, what string, cond func([]discovery.Instance) bool) []discovery.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last []discovery.Instance
	var lastErr error
	for {
		set, err := w.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("waiting %v for %s: last set %s, last error %v", timeout, what, Describe(last), lastErr)
			}
			if errors.Is(err, discovery.ErrStopped) {
				t.Fatalf("waiting for %s: watcher stopped", what)
			}
			lastErr = err
			continue
		}
		last = set
		if cond(set) {
			return set
		}
	}
}

// Describe renders a set for failure messages.
func Describe(set []discovery.Instance) string {
	parts := make([]string, len(set))
	for i, in := range set {
		parts[i] = fmt.Sprintf("%s@%s w=%d healthy=%v meta=%v", in.ID, in.HostPort(), in.Weight, in.Healthy, in.Metadata)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Has reports whether set holds exactly the endpoints of want (compared by
// address:port), each with want's weight and at least want's metadata.
func Has(set []discovery.Instance, want ...discovery.Instance) bool {
	if len(set) != len(want) {
		return false
	}
	byAddr := map[string]discovery.Instance{}
	for _, in := range set {
		byAddr[in.HostPort()] = in
	}
	for _, w := range want {
		got, ok := byAddr[w.HostPort()]
		if !ok || got.Weight != w.Weight || got.Healthy != w.Healthy || got.ID == "" {
			return false
		}
		for k, v := range w.Metadata {
			if got.Metadata[k] != v {
				return false
			}
		}
	}
	return true
}

func (c *suite) initialSet(t *testing.T) {
	svc := UniqueService(t)
	a, b, d := Instance("a", 20001, map[string]string{"zone": "z1"}), Instance("b", 20002, nil), Instance("c", 20003, nil)
	for _, in := range []discovery.Instance{a, b, d} {
		c.h.Register(t, svc, in)
	}
	reg := c.h.Open(t)
	defer reg.Close()
	w, err := reg.Watch(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	set := WaitFor(t, w, c.h.Timeout, "the three instances", func(s []discovery.Instance) bool { return Has(s, a, b, d) })
	ids := map[string]bool{}
	for _, in := range set {
		if ids[in.ID] {
			t.Fatalf("duplicate id %q in %s", in.ID, Describe(set))
		}
		ids[in.ID] = true
	}
}

func (c *suite) emptyService(t *testing.T) {
	_, _, w := c.watch(t)
	ctx, cancel := context.WithTimeout(context.Background(), c.h.Timeout)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if err == nil {
			if len(set) != 0 {
				t.Fatalf("unknown service: got %s, want empty", Describe(set))
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("first Next on an unknown service did not return an empty set: %v", err)
		}
	}
}

func (c *suite) add(t *testing.T) {
	svc, _, w := c.watch(t)
	a, b := Instance("a", 20011, nil), Instance("b", 20012, nil)
	c.h.Register(t, svc, a)
	WaitFor(t, w, c.h.Timeout, "a", func(s []discovery.Instance) bool { return Has(s, a) })
	c.h.Register(t, svc, b)
	WaitFor(t, w, c.h.Timeout, "a and b", func(s []discovery.Instance) bool { return Has(s, a, b) })
}

func (c *suite) remove(t *testing.T) {
	svc, _, w := c.watch(t)
	a, b := Instance("a", 20021, nil), Instance("b", 20022, nil)
	c.h.Register(t, svc, a)
	c.h.Register(t, svc, b)
	WaitFor(t, w, c.h.Timeout, "a and b", func(s []discovery.Instance) bool { return Has(s, a, b) })
	c.h.Deregister(t, svc, "b")
	WaitFor(t, w, c.h.Timeout, "only a", func(s []discovery.Instance) bool { return Has(s, a) })
}

func (c *suite) metadataChange(t *testing.T) {
	svc, _, w := c.watch(t)
	a := Instance("a", 20031, map[string]string{"version": "v1"})
	c.h.Register(t, svc, a)
	before := WaitFor(t, w, c.h.Timeout, "a v1", func(s []discovery.Instance) bool { return Has(s, a) })
	a.Metadata = map[string]string{"version": "v2", "canary": "true"}
	c.h.Register(t, svc, a)
	after := WaitFor(t, w, c.h.Timeout, "a v2", func(s []discovery.Instance) bool { return Has(s, a) })
	if before[0].ID != after[0].ID {
		t.Fatalf("instance id changed with its metadata: %q -> %q", before[0].ID, after[0].ID)
	}
}

func (c *suite) weightChange(t *testing.T) {
	svc, _, w := c.watch(t)
	a := Instance("a", 20041, nil)
	a.Weight = 5
	c.h.Register(t, svc, a)
	WaitFor(t, w, c.h.Timeout, "a weight 5", func(s []discovery.Instance) bool { return Has(s, a) })
	a.Weight = 20
	c.h.Register(t, svc, a)
	WaitFor(t, w, c.h.Timeout, "a weight 20", func(s []discovery.Instance) bool { return Has(s, a) })
}

func (c *suite) removeAll(t *testing.T) {
	svc, _, w := c.watch(t)
	a, b := Instance("a", 20051, nil), Instance("b", 20052, nil)
	c.h.Register(t, svc, a)
	c.h.Register(t, svc, b)
	WaitFor(t, w, c.h.Timeout, "a and b", func(s []discovery.Instance) bool { return Has(s, a, b) })
	c.h.Deregister(t, svc, "a")
	c.h.Deregister(t, svc, "b")
	WaitFor(t, w, c.h.Timeout, "the empty set", func(s []discovery.Instance) bool { return s != nil && len(s) == 0 })
}

func (c *suite) stopUnblocksNext(t *testing.T) {
	svc, _, w := c.watch(t)
	a := Instance("a", 20061, nil)
	c.h.Register(t, svc, a)
	WaitFor(t, w, c.h.Timeout, "a", func(s []discovery.Instance) bool { return Has(s, a) })
	errc := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Next block
	if err := w.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Next after Stop returned no error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Stop did not unblock Next within 2s")
	}
}

func (c *suite) serverRestart(t *testing.T) {
	svc, _, w := c.watch(t)
	a, b := Instance("a", 20071, nil), Instance("b", 20072, nil)
	c.h.Register(t, svc, a)
	WaitFor(t, w, c.h.Timeout, "a", func(s []discovery.Instance) bool { return Has(s, a) })
	c.h.Restart(t)
	c.h.Register(t, svc, b)
	WaitFor(t, w, 3*c.h.Timeout, "a and b after the restart", func(s []discovery.Instance) bool { return Has(s, a, b) })
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Next is w.Next within 5 s: a Next that has not returned by then fails
// the test.
func Next(t testing.TB, w discovery.Watcher) ([]discovery.Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	set, err := w.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("Next did not return within 5s")
	}
	return set, err
}
