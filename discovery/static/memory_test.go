package static_test

import (
	"context"
	"testing"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/static"
)

// TestSetCopiesOnceAndShares: the registry is not affected by what the
// caller does with its set afterwards, and its watchers share its one
// sorted, read-only copy.
func TestSetCopiesOnceAndShares(t *testing.T) {
	r := static.NewRegistry()
	defer r.Close()
	ctx := context.Background()
	w1, _ := r.Watch(ctx, "svc")
	w2, _ := r.Watch(ctx, "svc")
	if _, err := w1.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Next(ctx); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"version": "v1"}
	set := []discovery.Instance{
		{ID: "b", Address: "10.0.0.2", Port: 80, Weight: 1, Healthy: true, Metadata: meta},
		{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true},
	}
	r.Set("svc", set...)
	meta["version"] = "v2"
	set[0].ID = "z"
	s1, _ := w1.Next(ctx)
	s2, _ := w2.Next(ctx)
	if len(s1) != 2 || s1[0].ID != "a" || s1[1].ID != "b" || s1[1].Metadata["version"] != "v1" {
		t.Fatalf("watcher saw %+v", s1)
	}
	if &s1[0] != &s2[0] {
		t.Fatal("two watchers got copies of their own: a million instances would be held once per watcher")
	}
	w3, _ := r.Watch(ctx, "svc")
	s3, _ := w3.Next(ctx)
	if len(s3) != 2 || s3[1].Metadata["version"] != "v1" {
		t.Fatalf("a new watcher saw %+v", s3)
	}
}
