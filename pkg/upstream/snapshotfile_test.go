package upstream_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/roundrobin"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// silent is a watcher whose registry never answers.
func silent() discovery.Watcher { return discovery.NewLatest() }

func runOn(t *testing.T, u *upstream.Upstream, w discovery.Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSnapshotOnDisk(t *testing.T) {
	file := filepath.Join(t.TempDir(), "snapshots", "users.json")
	// A first run writes the node set on every change.
	_, _, set := run(t, upstream.Config{Name: "users", SnapshotFile: file})
	a := inst("a", 1)
	a.Metadata = map[string]string{"canary": "true"}
	set(a, inst("b", 2))
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile(file)
		if err == nil && strings.Contains(string(data), `"canary": "true"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot file: %v\n%s", err, data)
		}
		time.Sleep(time.Millisecond)
	}

	// A later start with the registry down serves it after the
	// initial-sync timeout, marked stale.
	u := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: 20 * time.Millisecond})
	runOn(t, u, silent())
	if u.Ready() {
		t.Fatal("ready before the initial-sync timeout")
	}
	s := waitSnapshot(t, u, "restored", func(s *upstream.Snapshot) bool { return s.Restored })
	if s.Available != 2 || !s.Stale() || !u.Ready() || !strings.Contains(s.Err.Error(), "on-disk snapshot") {
		t.Fatalf("restored snapshot: available=%d stale=%v ready=%v err=%v", s.Available, s.Stale(), u.Ready(), s.Err)
	}
	if s.Nodes[0].Metadata["canary"] != "true" {
		t.Fatal("labels lost in the snapshot")
	}
}

func TestCorruptSnapshotIsIgnored(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.json")
	os.WriteFile(file, []byte(`{"version":1,"service":"users","instances":[{"id":"x","address":"","port":1}]}`), 0o644)
	u := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: 10 * time.Millisecond})
	runOn(t, u, silent())
	time.Sleep(100 * time.Millisecond)
	if s := u.Snapshot(); s.Restored || u.Ready() || s.Available != 0 {
		t.Fatal("a corrupt snapshot was served")
	}
}

func TestRegistryWinsOverSnapshot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.json")
	_, _, set := run(t, upstream.Config{Name: "users", SnapshotFile: file})
	set(inst("old", 1))
	// The registry answers in time: the snapshot is not used.
	u, _, set2 := run(t, upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: time.Hour})
	s := set2(inst("new", 2))
	if s.Restored || len(s.Nodes) != 1 || s.Nodes[0].ID != "new" || !u.Ready() {
		t.Fatalf("nodes %v restored=%v", s.Nodes, s.Restored)
	}
}

func FuzzParseSnapshot(f *testing.F) {
	f.Add([]byte(`{"version":1,"service":"s","instances":[{"id":"a","address":"h","port":1,"weight":1,"healthy":true}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, _, err := upstream.ParseSnapshot(data, "s")
		if err != nil {
			return
		}
		for _, in := range set {
			if in.Validate() != nil {
				t.Fatalf("accepted %+v", in)
			}
		}
	})
}

// countingBuilder is round robin that counts the pickers it builds.
type countingBuilder struct{ builds *atomic.Int32 }

func (countingBuilder) Name() string { return "counting" }
func (b countingBuilder) Build(nodes []*node.Node) balancer.Picker {
	b.builds.Add(1)
	return roundrobin.Builder{}.Build(nodes)
}

// TestReloadCarriesRestoredSnapshotOver: a reload during a registry outage
// replaces an upstream serving its on-disk snapshot. The new upstream
// takes those nodes over at once, with their state and under its own
// policy, as it takes over a registry's set: it does not wait out a new
// initial-sync timeout on the old picker and then reload the file as new
// nodes.
func TestReloadCarriesRestoredSnapshotOver(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.json")
	_, _, set := run(t, upstream.Config{Name: "users", SnapshotFile: file})
	set(inst("a", 1), inst("b", 2))
	prev := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: 10 * time.Millisecond})
	ctx, stopPrev := context.WithCancel(context.Background())
	prevDone := make(chan struct{})
	go func() { prev.Run(ctx, silent()); close(prevDone) }()
	old := waitSnapshot(t, prev, "restored", func(s *upstream.Snapshot) bool { return s.Restored })
	stopPrev()
	<-prevDone

	var builds atomic.Int32
	u := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: time.Hour,
		Previous: prev, Balancer: countingBuilder{&builds}})
	runOn(t, u, silent())
	s := waitSnapshot(t, u, "served under the new policy", func(*upstream.Snapshot) bool { return builds.Load() > 0 })
	if !s.Restored || !u.Ready() || s.Available != 2 || s.Nodes[0] != old.Nodes[0] || s.Nodes[1] != old.Nodes[1] {
		t.Fatalf("restored=%v ready=%v available=%d; want the restored nodes carried over", s.Restored, u.Ready(), s.Available)
	}
}

// TestReloadKeepsTheInitialSyncDeadline: a reload before the registry
// answered does not start the initial-sync timeout again: the on-disk
// snapshot is served when the first upstream's timeout ends.
func TestReloadKeepsTheInitialSyncDeadline(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.json")
	_, _, set := run(t, upstream.Config{Name: "users", SnapshotFile: file})
	set(inst("a", 1))
	timeout := 300 * time.Millisecond
	start := time.Now()
	prev := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: timeout})
	ctx, stopPrev := context.WithCancel(context.Background())
	prevDone := make(chan struct{})
	go func() { prev.Run(ctx, silent()); close(prevDone) }()
	time.Sleep(timeout / 2)
	stopPrev()
	<-prevDone
	if prev.Ready() {
		t.Fatal("ready before the initial-sync timeout")
	}
	u := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: timeout, Previous: prev})
	runOn(t, u, silent())
	waitSnapshot(t, u, "restored", func(s *upstream.Snapshot) bool { return s.Restored })
	if took := time.Since(start); took >= timeout*3/2 {
		t.Fatalf("snapshot served %v after the first start; the reload restarted the %v timeout", took, timeout)
	}
}

// A named pipe in place of the snapshot file (or anything but a regular
// file) is ignored at once: reading it blocked the upstream's controller
// for good, so the upstream never took its registry's nodes and the
// process never finished its shutdown.
func TestSnapshotThatIsNoRegularFileIsIgnored(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users.json")
	if err := syscall.Mkfifo(file, 0o600); err != nil {
		t.Fatal(err)
	}
	u := upstream.New(upstream.Config{Name: "users", SnapshotFile: file, InitialSyncTimeout: 10 * time.Millisecond})
	w := discovery.NewLatest()
	runOn(t, u, w)
	time.Sleep(100 * time.Millisecond) // the registry is silent past the initial-sync timeout: the snapshot is read
	w.Publish([]discovery.Instance{inst("a", 1)})
	waitSnapshot(t, u, "the registry's node", func(s *upstream.Snapshot) bool { return s.Available == 1 })
}
