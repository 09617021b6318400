package balancer_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
)

type fakeFactory struct{ name string }

func (f fakeFactory) Name() string { return f.name }

func (fakeFactory) Parse(func(any) error) (balancer.Builder, error) { return nil, nil }

// registryRuns makes TestRegistry's policy name unique per run, so that
// -count=N runs it N times against the one process-wide registry.
var registryRuns int

func TestRegistry(t *testing.T) {
	registryRuns++
	name := fmt.Sprintf("test_policy_%d", registryRuns)
	balancer.Register(fakeFactory{name})
	if f, ok := balancer.Lookup(name); !ok || f.Name() != name {
		t.Fatalf("Lookup = %v, %v", f, ok)
	}
	if _, ok := balancer.Lookup("nope"); ok {
		t.Fatal("Lookup of an unknown policy succeeded")
	}
	if !slices.Contains(balancer.Names(), name) {
		t.Fatalf("Names() = %v", balancer.Names())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a duplicate Register did not panic")
		}
	}()
	balancer.Register(fakeFactory{name})
}

func TestEmpty(t *testing.T) {
	if balancer.Empty.Pick(balancer.Info{}) != nil {
		t.Fatal("Empty picked a node")
	}
}
