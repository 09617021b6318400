package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
)

func TestUnion(t *testing.T) {
	reg := discoverytest.NewRegistry()
	a, _ := reg.Watch(context.Background(), "a")
	b, _ := reg.Watch(context.Background(), "b")
	mark := func(in discovery.Instance) discovery.Instance {
		in.ID = "b/" + in.ID
		in.Metadata = discovery.CloneMetadata(in.Metadata)
		in.Metadata["from"] = "b"
		return in
	}
	u := discovery.Union(discovery.Part{Watcher: a}, discovery.Part{Watcher: b, Relabel: mark})
	defer u.Stop()
	orig := discoverytest.Instance("x", 1, map[string]string{"k": "v"})
	reg.Set("a", orig)
	reg.Set("b", orig)
	set := discoverytest.WaitFor(t, u, 5*time.Second, "both parts", func(s []discovery.Instance) bool { return len(s) == 2 })
	if set[0].ID != "b/x" || set[0].Metadata["from"] != "b" || set[1].ID != "x" || set[1].Metadata["from"] != "" {
		t.Fatalf("got %s", discoverytest.Describe(set))
	}
	reg.Fail("b", errors.New("down"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := u.Next(ctx); err == nil || err.Error() != "down" {
		t.Fatalf("a part's error: %v", err)
	}
	reg.Set("b")
	discoverytest.WaitFor(t, u, 5*time.Second, "b emptied", func(s []discovery.Instance) bool { return len(s) == 1 && s[0].ID == "x" })
	done := make(chan error)
	go func() { _, err := u.Next(context.Background()); done <- err }()
	time.Sleep(20 * time.Millisecond)
	u.Stop()
	select {
	case err := <-done:
		if !errors.Is(err, discovery.ErrStopped) {
			t.Fatalf("Next after Stop: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Stop did not unblock Next")
	}
}

// A part that fails keeps the union stale while another part changes:
// the union's set changes, and its error follows it until the failing
// part delivers again.
func TestUnionStaysStaleWhileAPartFails(t *testing.T) {
	reg := discoverytest.NewRegistry()
	a, _ := reg.Watch(context.Background(), "a")
	b, _ := reg.Watch(context.Background(), "b")
	u := discovery.Union(discovery.Part{Watcher: a}, discovery.Part{Watcher: b})
	defer u.Stop()
	reg.Set("a", discoverytest.Instance("x", 1, nil))
	reg.Set("b", discoverytest.Instance("y", 2, nil))
	discoverytest.WaitFor(t, u, 5*time.Second, "both parts", func(s []discovery.Instance) bool { return len(s) == 2 })
	reg.Fail("b", errors.New("b down"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := u.Next(ctx); err == nil {
		t.Fatal("b's error was not reported")
	}
	reg.Set("a", discoverytest.Instance("x", 1, nil), discoverytest.Instance("z", 3, nil))
	discoverytest.WaitFor(t, u, 5*time.Second, "a's change", func(s []discovery.Instance) bool { return len(s) == 3 })
	if _, err := u.Next(ctx); err == nil || err.Error() != "b down" {
		t.Fatalf("after a's change, while b still fails: %v; want b's error again", err)
	}
	reg.Set("b", discoverytest.Instance("y", 2, nil))
	set, err := u.Next(ctx)
	if err != nil || len(set) != 3 {
		t.Fatalf("b back: %s, %v", discoverytest.Describe(set), err)
	}
}
