package nacos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/retry"
)

const wait = 5 * time.Second

func watch(t *testing.T, r discovery.Registry, service string) discovery.Watcher {
	t.Helper()
	w, err := r.Watch(context.Background(), service)
	if err != nil {
		t.Fatalf("Watch(%q): %v", service, err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

// ports returns the ports of a set, sorted.
func ports(set []discovery.Instance) []int {
	out := make([]int, len(set))
	for i, in := range set {
		out[i] = in.Port
	}
	slices.Sort(out)
	return out
}

func waitPorts(t *testing.T, w discovery.Watcher, want ...int) []discovery.Instance {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	if want == nil {
		want = []int{}
	}
	return discoverytest.WaitFor(t, w, wait, fmt.Sprintf("ports %v", want), func(s []discovery.Instance) bool {
		return slices.Equal(ports(s), want)
	})
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The first Next returns the current set at once, mapped.
func TestWatchDeliversMappedSet(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "orders",
		host("10.0.0.1", 8080, "", 1, map[string]string{"version": "v1", "internal-nacos-cluster": "x"}),
		host("10.0.0.2", 8080, "hz", 2.5, nil))
	r := fakeRegistry(t, f)
	w := watch(t, r, "orders")
	set := waitPorts(t, w, 8080, 8080)
	want := []discovery.Instance{
		{ID: "DEFAULT/10.0.0.1:8080", Address: "10.0.0.1", Port: 8080, Weight: 1, Healthy: true, Metadata: map[string]string{"version": "v1"}},
		{ID: "hz/10.0.0.2:8080", Address: "10.0.0.2", Port: 8080, Weight: 3, Healthy: true},
	}
	if !discovery.EqualSets(set, want) {
		t.Fatalf("got %s\nwant %s", discoverytest.Describe(set), discoverytest.Describe(want))
	}
}

// nacos-sdk-go#803: watchers of one service with different clusters share
// one SDK subscription (so the SDK never sees the same service subscribed
// twice with different clusters), each gets its clusters' instances, and
// every one of them keeps receiving changes.
func TestPitfall803OneSubscriptionPerServiceWhateverTheClusters(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f, func(o *Options) { o.Clusters = []string{"a"} })
	f.push(DefaultGroup, "pay", host("10.0.0.1", 1, "a", 1, nil), host("10.0.0.2", 2, "b", 1, nil), host("10.0.0.3", 3, "", 1, nil))

	wa := watch(t, r, "pay")                           // the registry's clusters: a
	wb := watch(t, r, "DEFAULT_GROUP@@pay@@b")         // cluster b
	wall := watch(t, r, "DEFAULT_GROUP@@pay@@")        // every cluster
	wdef := watch(t, r, "DEFAULT_GROUP@@pay@@DEFAULT") // instances without a cluster
	waitPorts(t, wa, 1)
	waitPorts(t, wb, 2)
	waitPorts(t, wall, 1, 2, 3)
	waitPorts(t, wdef, 3)

	// A change in each cluster reaches its watchers: no callback was lost.
	f.push(DefaultGroup, "pay", host("10.0.0.1", 1, "a", 1, nil), host("10.0.0.4", 4, "a", 1, nil), host("10.0.0.2", 2, "b", 1, nil))
	waitPorts(t, wa, 1, 4)
	waitPorts(t, wall, 1, 4, 2)
	waitPorts(t, wdef)
	f.push(DefaultGroup, "pay", host("10.0.0.5", 5, "b", 1, nil))
	waitPorts(t, wb, 5)
	waitPorts(t, wa)

	var subs int
	for _, c := range f.callLog() {
		if strings.HasPrefix(c, "subscribe ") {
			subs++
		}
	}
	if subs != 1 || f.registered(DefaultGroup, "pay") != 1 {
		t.Fatalf("SDK calls %v, %d callbacks registered; want one Subscribe and one callback for four watchers", f.callLog(), f.registered(DefaultGroup, "pay"))
	}
}

// nacos-sdk-go#845: the SDK finds the callback to remove by the param's
// address, so Unsubscribe must get the param Subscribe got. It is called
// once, when the last watcher of the service stops, and then no callback
// is left registered.
func TestPitfall845UnsubscribeWithTheSameParam(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	f.push(DefaultGroup, "cart", host("10.0.0.1", 1, "", 1, nil))
	w1 := watch(t, r, "cart")
	w2 := watch(t, r, "cart")
	waitPorts(t, w1, 1)
	waitPorts(t, w2, 1)

	_ = w1.Stop()
	// The other watcher still follows changes.
	f.push(DefaultGroup, "cart", host("10.0.0.1", 1, "", 1, nil), host("10.0.0.2", 2, "", 1, nil))
	waitPorts(t, w2, 1, 2)
	if got := f.callLog(); len(got) != 1 {
		t.Fatalf("after one of two watchers stopped: SDK calls %v; want only the Subscribe", got)
	}

	_ = w2.Stop()
	waitCond(t, "the unsubscribe", func() bool { return len(f.callLog()) == 2 })
	want := []string{"subscribe DEFAULT_GROUP@@cart #1", "unsubscribe DEFAULT_GROUP@@cart #1"}
	if got := f.callLog(); !slices.Equal(got, want) {
		t.Fatalf("SDK calls %v, want %v (the same param both times)", got, want)
	}
	if n := f.registered(DefaultGroup, "cart"); n != 0 {
		t.Fatalf("%d callbacks still registered after the last watcher stopped", n)
	}
}

// A new watch of a service whose subscription is being torn down waits
// for that Unsubscribe, so it cannot undo the new Subscribe.
func TestResubscribeAfterUnsubscribe(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	for i := 0; i < 20; i++ {
		w, err := r.Watch(context.Background(), "s")
		if err != nil {
			t.Fatal(err)
		}
		waitPorts(t, w, 1)
		_ = w.Stop()
	}
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	calls := f.callLog()
	// Strictly alternating, each pair with its own param.
	for i, c := range calls {
		if (i%2 == 0) != strings.HasPrefix(c, "subscribe ") {
			t.Fatalf("call %d is %q; calls must alternate subscribe/unsubscribe: %v", i, c, calls)
		}
		if i%2 == 1 && strings.TrimPrefix(c, "unsubscribe ") != strings.TrimPrefix(calls[i-1], "subscribe ") {
			t.Fatalf("%q after %q: not the same param", c, calls[i-1])
		}
	}
	if f.registered(DefaultGroup, "s") != 1 {
		t.Fatalf("%d callbacks registered; want 1", f.registered(DefaultGroup, "s"))
	}
}

// The callback copies the list at once: the slice is the SDK's cached
// copy, which it sorts in place when the next push comes.
func TestCallbackCopiesTheList(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	w := watch(t, r, "s")
	waitPorts(t, w)
	hosts := []model.Instance{host("10.0.0.2", 2, "", 1, nil), host("10.0.0.1", 1, "", 1, nil)}
	f.push(DefaultGroup, "s", hosts...)
	hosts[0], hosts[1] = host("10.0.0.9", 9, "", 1, nil), host("10.0.0.9", 9, "", 1, nil) // the SDK reuses the array
	set := waitPorts(t, w, 1, 2)
	if set[0].Address != "10.0.0.1" || set[1].Address != "10.0.0.2" {
		t.Fatalf("published %s", discoverytest.Describe(set))
	}
}

// nacos-sdk-go#423 at the adapter's level: an empty list is delivered as
// the empty set, not ignored.
func TestEmptyListDelivered(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	f.push(DefaultGroup, "s")
	waitPorts(t, w)
}

// A Subscribe that fails on a connected client is reported, undone with
// the same param and retried until it succeeds; the SDK is left with one
// callback.
func TestSubscribeFailureRetried(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	refused := errors.New("request failed: no permission")
	f.failSubscribe(refused, refused)
	r := fakeRegistry(t, f)
	w := watch(t, r, "s")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := w.Next(ctx); err == nil || !strings.Contains(err.Error(), "no permission") || errors.Is(err, ErrUnreachable) {
		t.Fatalf("first Next: %v; want the subscribe error", err)
	}
	waitPorts(t, w, 1)
	want := []string{"subscribe DEFAULT_GROUP@@s #1", "unsubscribe DEFAULT_GROUP@@s #1", "subscribe DEFAULT_GROUP@@s #1",
		"unsubscribe DEFAULT_GROUP@@s #1", "subscribe DEFAULT_GROUP@@s #1"}
	if calls := f.callLog(); !slices.Equal(calls, want) {
		t.Fatalf("SDK calls %v, want %v", calls, want)
	}
	if n := f.registered(DefaultGroup, "s"); n != 1 {
		t.Fatalf("%d callbacks registered after the retries; want 1", n)
	}
}

// Cold start with the server unreachable: no client is created, each
// watch delivers the disk cache of the last run, then ErrUnreachable; when
// the server is reachable, the client is created and changes flow.
func TestColdStartServesDiskCache(t *testing.T) {
	f := newFake()
	f.setHealthy(false)
	r := newTestRegistry(t, f.reopen)
	r.probe = f.probe
	r.pollUp, r.backoffBase, r.backoffMax = 10*time.Millisecond, 5*time.Millisecond, 20*time.Millisecond
	r.diskCache = func(group, service string) ([]model.Instance, bool) {
		switch service {
		case "cached":
			return []model.Instance{host("10.0.0.1", 1, "", 1, nil)}, true
		case "empty":
			return []model.Instance{}, true
		}
		return nil, false
	}
	r.start()
	defer r.Close()
	w := watch(t, r, "cached")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	set, err := w.Next(ctx)
	if err != nil || !slices.Equal(ports(set), []int{1}) {
		t.Fatalf("first Next: %s, %v; want the cached instance", discoverytest.Describe(set), err)
	}
	if _, err = w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("second Next: %v; want ErrUnreachable", err)
	}
	other := watch(t, r, "uncached")
	if set, err := other.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a service without a cached copy: %s, %v; want only ErrUnreachable", discoverytest.Describe(set), err)
	}
	// An empty copy serves nothing: published, it would replace the nodes
	// the upstream serves from its own on-disk snapshot.
	empty := watch(t, r, "empty")
	if set, err := empty.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a service whose cached copy is empty: %s, %v; want only ErrUnreachable", discoverytest.Describe(set), err)
	}
	f.mu.Lock()
	dials := f.dials
	f.mu.Unlock()
	if dials != 0 {
		t.Fatalf("%d SDK clients created while the server was unreachable; want none", dials)
	}
	f.push(DefaultGroup, "cached", host("10.0.0.1", 1, "", 1, nil), host("10.0.0.2", 2, "", 1, nil))
	f.setHealthy(true)
	waitPorts(t, w, 1, 2)
}

// A new client that did not connect on start-up is closed at once and
// never used (the SDK's own reconnect path is racy).
func TestUnconnectedClientNotUsed(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	f.setHealthy(false)
	r := newTestRegistry(t, f.reopen)
	r.probe = func() error { return nil } // the port answers, the SDK does not connect
	r.pollUp, r.backoffBase, r.backoffMax = 10*time.Millisecond, 5*time.Millisecond, 20*time.Millisecond
	r.start()
	defer r.Close()
	w := watch(t, r, "s")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Next: %v; want ErrUnreachable", err)
	}
	for _, c := range f.callLog() {
		if c != "close" {
			t.Fatalf("SDK calls %v: an unconnected client was used", f.callLog())
		}
	}
	f.setHealthy(true)
	waitPorts(t, w, 1)
}

// Losing the connection marks every watch stale (Next returns an error
// wrapping ErrUnreachable) without emptying it; when it is back, changes
// flow again.
func TestConnectionLossReportedAndRecovered(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	f.setHealthy(false)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if set, err := w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Next after the connection dropped: %s, %v; want ErrUnreachable", discoverytest.Describe(set), err)
	}
	// A watcher added during the outage gets the last set and the error.
	w2 := watch(t, r, "s")
	if set, err := w2.Next(ctx); err != nil || len(set) != 1 {
		t.Fatalf("new watcher during the outage: %s, %v", discoverytest.Describe(set), err)
	}
	if _, err := w2.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("new watcher during the outage: %v; want ErrUnreachable", err)
	}
	f.setHealthy(true)
	f.push(DefaultGroup, "s", host("10.0.0.2", 2, "", 1, nil))
	waitPorts(t, w, 2)
	waitPorts(t, w2, 2)
	// The client whose connection was lost was closed (not left to the
	// SDK's racy reconnect) and the service subscribed on a new one.
	waitCond(t, "a second client with the service subscribed", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.dials == 2 && len(f.callbacks[fkey(DefaultGroup, "s")]) == 1 &&
			strings.HasPrefix(f.calls[len(f.calls)-1], "subscribe ")
	})
	calls := f.callLog()
	if calls[0] != "subscribe DEFAULT_GROUP@@s #1" || calls[1] != "close" {
		t.Fatalf("SDK calls %v; want a subscribe, then the client closed", calls)
	}
	for _, c := range calls {
		if c != "close" && !strings.HasSuffix(c, " #1") {
			t.Fatalf("SDK calls %v: every call must use the one param", calls)
		}
	}
	f.push(DefaultGroup, "s", host("10.0.0.3", 3, "", 1, nil))
	waitPorts(t, w, 3)
}

// The SDK client is created in the background: Watch works before it
// exists, and an error creating it reaches Next until a retry succeeds.
func TestClientCreatedInBackground(t *testing.T) {
	f := newFake()
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	release := make(chan struct{})
	dials := 0
	r := newTestRegistry(t, func() (namingClient, error) {
		dials++
		if dials == 1 {
			return nil, errors.New("server list is empty")
		}
		<-release
		return f.reopen()
	})
	r.backoffBase, r.backoffMax = time.Millisecond, time.Millisecond
	r.start()
	defer r.Close()
	w, err := r.Watch(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := w.Next(ctx); err == nil || !strings.Contains(err.Error(), "server list is empty") {
		t.Fatalf("Next before the client exists: %v; want the creation error", err)
	}
	close(release)
	waitPorts(t, w, 1)
}

// Neither Watch nor Close waits for a client that is still being created
// (the SDK may take many seconds on an unreachable server); a client that
// arrives after Close is closed.
func TestCloseWhileDialling(t *testing.T) {
	f := newFake()
	release := make(chan struct{})
	r := newTestRegistry(t, func() (namingClient, error) {
		<-release
		return f.reopen()
	})
	r.start()
	w, err := r.Watch(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { _ = r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("Close waited for the client being created")
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, discovery.ErrStopped) {
		t.Fatalf("Next after Close: %v", err)
	}
	close(release)
	waitCond(t, "the late client closed", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.dials == 1 && f.closed
	})
}

// Close stops the watchers, unsubscribes and closes the client; Watch
// after Close fails. Stop unblocks a pending Next.
func TestCloseAndStop(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	w2 := watch(t, r, "t")
	errc := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		errc <- err
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, discovery.ErrStopped) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not unblock Next")
	}
	if _, err := w2.Next(context.Background()); !errors.Is(err, discovery.ErrStopped) {
		t.Fatalf("second watcher after Close: %v", err)
	}
	if !f.closed {
		t.Fatal("the SDK client was not closed")
	}
	calls := f.callLog()
	if !slices.Contains(calls, "unsubscribe DEFAULT_GROUP@@s #1") || !slices.Contains(calls, "unsubscribe DEFAULT_GROUP@@t #2") ||
		calls[len(calls)-1] != "close" {
		t.Fatalf("SDK calls %v; want both services unsubscribed, then the client closed", calls)
	}
	if _, err := r.Watch(context.Background(), "s"); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = w.Stop() // after Close: no panic, no deadlock
}

func TestWatchRejectsBadServiceNames(t *testing.T) {
	r := fakeRegistry(t, newFake())
	for _, s := range []string{"", "a@@", "@@a", "a@@b@@c@@d", "g@@s@@c,,d", " s"} {
		if w, err := r.Watch(context.Background(), s); err == nil {
			_ = w.Stop()
			t.Errorf("Watch(%q) succeeded", s)
		}
	}
}

// waitHeld reads w past the ErrUnreachable reported while the server is
// down, and fails t unless what follows is errNotListedAgain without a
// set: the server's list held.
func waitHeld(ctx context.Context, t *testing.T, w discovery.Watcher, when string) {
	t.Helper()
	for {
		set, err := w.Next(ctx)
		if errors.Is(err, ErrUnreachable) {
			continue // reported again while still down
		}
		if !errors.Is(err, errNotListedAgain) {
			t.Fatalf("Next %s: %s, %v; want errNotListedAgain and no set", when, discoverytest.Describe(set), err)
		}
		return
	}
}

// A server that restarted lists no ephemeral instances until their
// applications register them again. An empty list right after a
// reconnection, while the watch has instances, is held: the nodes stay,
// marked stale, until the server lists instances again.
func TestEmptyListAfterReconnectHeld(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	r.emptyGrace = time.Minute // before any Watch
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1)

	f.setHealthy(false)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Next after the connection dropped: %v", err)
	}
	// Closed, so that the push below reaches no callback of the old client.
	waitCond(t, "the client closed", func() bool { return f.registered(DefaultGroup, "s") == 0 })
	f.push(DefaultGroup, "s") // the server restarted empty
	f.setHealthy(true)
	waitHeld(ctx, t, w, "after reconnecting to an empty server")
	// A watcher added meanwhile gets the last known set and the error.
	w2 := watch(t, r, "s")
	if set, err := w2.Next(ctx); err != nil || !slices.Equal(ports(set), []int{1}) {
		t.Fatalf("a new watcher while held: %s, %v", discoverytest.Describe(set), err)
	}
	// The applications register again: their instances are applied.
	f.push(DefaultGroup, "s", host("10.0.0.2", 2, "", 1, nil))
	waitPorts(t, w, 2)
	waitPorts(t, w2, 2)
	// From then on an empty list is the server's word: applied at once.
	f.push(DefaultGroup, "s")
	waitPorts(t, w)
}

// After a reconnect, a cluster whose instances have not registered again
// yet keeps its nodes while another cluster's come back first: an
// upstream limited to that cluster is not emptied. Once its instances are
// listed again, the server's list is applied.
func TestEmptyClusterAfterReconnectHeld(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	r.emptyGrace = time.Minute // before any Watch
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "A", 1, nil), host("10.0.0.2", 2, "B", 1, nil))
	wa := watch(t, r, "DEFAULT_GROUP@@s@@A")
	wb := watch(t, r, "DEFAULT_GROUP@@s@@B")
	waitPorts(t, wa, 1)
	waitPorts(t, wb, 2)

	f.setHealthy(false)
	waitCond(t, "the client closed", func() bool { return f.registered(DefaultGroup, "s") == 0 })
	f.push(DefaultGroup, "s", host("10.0.0.2", 2, "B", 1, nil), host("10.0.0.3", 3, "B", 1, nil)) // B came back first
	f.setHealthy(true)
	waitPorts(t, wb, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for {
		set, err := wa.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil && !slices.Equal(ports(set), []int{1}) {
			t.Fatalf("cluster A while its instance has not registered again: %s; want it kept", discoverytest.Describe(set))
		}
	}
	f.push(DefaultGroup, "s", host("10.0.0.4", 4, "A", 1, nil), host("10.0.0.2", 2, "B", 1, nil))
	waitPorts(t, wa, 4)
	waitPorts(t, wb, 2)
}

// After a reconnect, a server that lists the instances it had before as
// unhealthy (restored from its store before their applications' clients
// are back) is held like one that lists none: the upstream does not lose
// every usable node. A cluster with a usable instance is applied, and so
// is the list once its instances are healthy again.
func TestUnhealthyListAfterReconnectHeld(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	r.emptyGrace = time.Minute // before any Watch
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "A", 1, nil), host("10.0.0.2", 2, "B", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1, 2)

	f.setHealthy(false)
	waitCond(t, "the client closed", func() bool { return f.registered(DefaultGroup, "s") == 0 })
	sick := func(h model.Instance) model.Instance { h.Healthy = false; return h }
	f.push(DefaultGroup, "s", sick(host("10.0.0.1", 1, "A", 1, nil)), host("10.0.0.2", 2, "B", 1, nil))
	f.setHealthy(true)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if ctx.Err() != nil {
			t.Fatal("no errNotListedAgain after reconnecting")
		}
		for _, in := range set {
			if !in.Healthy {
				t.Fatalf("a node of the held cluster went unhealthy: %s", discoverytest.Describe(set))
			}
		}
		if errors.Is(err, errNotListedAgain) {
			break
		}
	}
	// A watcher added meanwhile gets the held set.
	if set, err := watch(t, r, "s").Next(ctx); err != nil || !slices.Equal(ports(set), []int{1, 2}) || !set[0].Healthy {
		t.Fatalf("a new watcher while held: %s, %v; want both nodes, healthy", discoverytest.Describe(set), err)
	}
	f.push(DefaultGroup, "s", sick(host("10.0.0.1", 1, "A", 1, nil)), host("10.0.0.3", 3, "B", 1, nil))
	set := waitPorts(t, w, 1, 3) // cluster B is news; A still held
	for _, in := range set {
		if !in.Healthy {
			t.Fatalf("cluster A's node went unhealthy while held: %s", discoverytest.Describe(set))
		}
	}
	// A is listed usable again (B moves, so that w sees the list that
	// says so, not the held one: it has the same nodes).
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "A", 1, nil), host("10.0.0.4", 4, "B", 1, nil))
	if set := waitPorts(t, w, 1, 4); !set[0].Healthy || !set[1].Healthy {
		t.Fatalf("the list applied: %s; want both healthy", discoverytest.Describe(set))
	}
	// From then on an unhealthy instance is the server's word.
	f.push(DefaultGroup, "s", sick(host("10.0.0.1", 1, "A", 1, nil)), host("10.0.0.4", 4, "B", 1, nil))
	discoverytest.WaitFor(t, w, wait, "A's node unhealthy", func(s []discovery.Instance) bool {
		return len(s) == 2 && slices.ContainsFunc(s, func(in discovery.Instance) bool { return in.Port == 1 && !in.Healthy })
	})
}

// A held empty list is applied once the grace period has passed without
// the server listing any instance.
func TestEmptyListAfterReconnectAppliedAfterGrace(t *testing.T) {
	f := newFake()
	r := fakeRegistry(t, f)
	r.emptyGrace = 200 * time.Millisecond
	f.push(DefaultGroup, "s", host("10.0.0.1", 1, "", 1, nil))
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	f.setHealthy(false)
	// Closed, so that the push below reaches no callback of the old client.
	waitCond(t, "the client closed", func() bool { return f.registered(DefaultGroup, "s") == 0 })
	f.push(DefaultGroup, "s")
	start := time.Now()
	f.setHealthy(true)
	waitPorts(t, w)
	if d := time.Since(start); d < r.emptyGrace {
		t.Fatalf("the empty list was applied after %v; want it held for %v", d, r.emptyGrace)
	}
}

// The disk cache served on a cold start counts as instances: the server's
// first, empty answer is held too.
func TestEmptyListAfterColdStartHeld(t *testing.T) {
	f := newFake()
	f.setHealthy(false)
	r := newTestRegistry(t, f.reopen)
	r.probe = f.probe
	r.pollUp, r.backoffBase, r.backoffMax = 10*time.Millisecond, 5*time.Millisecond, 20*time.Millisecond
	r.diskCache = func(group, service string) ([]model.Instance, bool) {
		return []model.Instance{host("10.0.0.1", 1, "", 1, nil)}, true
	}
	r.start()
	defer r.Close()
	w := watch(t, r, "s")
	waitPorts(t, w, 1)
	f.setHealthy(true)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if errors.Is(err, errNotListedAgain) {
			break
		}
		if err == nil || !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Next: %s, %v; want the empty answer held", discoverytest.Describe(set), err)
		}
	}
	f.push(DefaultGroup, "s", host("10.0.0.2", 2, "", 1, nil))
	waitPorts(t, w, 2)
}

// A start that never saw the server down, whose server lists nothing yet
// (both restarted at once, or the server came back before the first
// attempt failed): the disk cache of the last run is the base, so the
// empty answer is held and the watchers get the cached instances, stale;
// the instances registered again are applied, and then an empty list is
// the server's word. Without a disk cache an empty first list is applied.
func TestEmptyFirstListHeldAgainstDiskCache(t *testing.T) {
	for _, cached := range []bool{true, false} {
		t.Run(fmt.Sprintf("cached=%v", cached), func(t *testing.T) {
			f := newFake()
			f.push(DefaultGroup, "s") // up, and empty
			r := tunedFakeRegistry(t, f, func(r *registry) {
				r.emptyGrace = time.Minute
				r.diskCache = func(group, service string) ([]model.Instance, bool) {
					if !cached {
						return nil, false
					}
					return []model.Instance{host("10.0.0.1", 1, "", 1, nil)}, true
				}
			})
			w := watch(t, r, "s")
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			set, err := w.Next(ctx)
			if !cached {
				if err != nil || len(set) != 0 {
					t.Fatalf("first Next without a disk cache: %s, %v; want the empty list", discoverytest.Describe(set), err)
				}
				return
			}
			if err != nil || !slices.Equal(ports(set), []int{1}) {
				t.Fatalf("first Next: %s, %v; want the cached instance", discoverytest.Describe(set), err)
			}
			if _, err := w.Next(ctx); !errors.Is(err, errNotListedAgain) {
				t.Fatalf("second Next: %v; want errNotListedAgain", err)
			}
			f.push(DefaultGroup, "s", host("10.0.0.2", 2, "", 1, nil))
			waitPorts(t, w, 2)
			f.push(DefaultGroup, "s")
			waitPorts(t, w)
		})
	}
}

// A start while the server is down, without a disk cache: the upstream
// serves its own on-disk snapshot meanwhile, which the adapter cannot
// compare lists with. The server's first list, if it lists no usable
// instance (its applications have not registered again), is held whole:
// the watchers get errNotListedAgain and no set. A list with instances is
// applied, and from then on an empty list is the server's word.
func TestEmptyFirstListHeldAfterStartingDown(t *testing.T) {
	f := newFake()
	f.setHealthy(false)
	f.push(DefaultGroup, "s") // what the server lists once back: nothing
	r := newTestRegistry(t, f.reopen)
	r.probe = f.probe
	r.pollUp, r.backoffBase, r.backoffMax = 10*time.Millisecond, 5*time.Millisecond, 20*time.Millisecond
	r.emptyGrace = time.Minute
	r.start()
	defer r.Close()
	w := watch(t, r, "s")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if set, err := w.Next(ctx); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("first Next: %s, %v; want ErrUnreachable", discoverytest.Describe(set), err)
	}
	f.setHealthy(true)
	waitHeld(ctx, t, w, "once connected to a server that lists nothing")
	f.push(DefaultGroup, "s", host("10.0.0.2", 2, "", 1, nil))
	waitPorts(t, w, 2)
	f.push(DefaultGroup, "s")
	waitPorts(t, w)
}

// While no server accepts connections, reconnection is tried at least
// every backoffMax (a second by default); a server that accepts
// connections but whose SDK client does not connect is tried again less
// often (up to five times backoffMax), so that it is not loaded with a new
// client every second.
func TestReconnectBackoffCeilings(t *testing.T) {
	for _, c := range []struct {
		name    string
		probe   error
		ceiling time.Duration
	}{
		{"no server", fmt.Errorf("%w: connection refused", ErrUnreachable), 100 * time.Millisecond},
		{"client does not connect", nil, 500 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFake()
			f.setHealthy(false)
			r := newTestRegistry(t, f.reopen)
			r.probe = func() error { return c.probe }
			r.backoffBase, r.backoffMax = 10*time.Millisecond, 100*time.Millisecond
			r.rand = func() float64 { return 0.9999 }
			waits := make(chan time.Duration, 100)
			r.sleep = func(ctx context.Context, d time.Duration) bool {
				select {
				case waits <- d:
				default:
				}
				return retry.Sleep(ctx, time.Millisecond)
			}
			r.start()
			defer r.Close()
			var longest time.Duration
			for range 12 {
				select {
				case d := <-waits:
					longest = max(longest, d)
				case <-time.After(wait):
					t.Fatal("no reconnection attempt")
				}
			}
			if longest > c.ceiling || longest < c.ceiling*9/10 {
				t.Fatalf("longest wait between attempts %v; want just under %v", longest, c.ceiling)
			}
		})
	}
}
