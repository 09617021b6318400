package balancer_test

import (
	"slices"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
)

type fakeFactory struct{ name string }

func (f fakeFactory) Name() string { return f.name }

func (fakeFactory) Parse(func(any) error) (balancer.Builder, error) { return nil, nil }

func TestRegistry(t *testing.T) {
	balancer.Register(fakeFactory{"test_policy"})
	if f, ok := balancer.Lookup("test_policy"); !ok || f.Name() != "test_policy" {
		t.Fatalf("Lookup = %v, %v", f, ok)
	}
	if _, ok := balancer.Lookup("nope"); ok {
		t.Fatal("Lookup of an unknown policy succeeded")
	}
	if !slices.Contains(balancer.Names(), "test_policy") {
		t.Fatalf("Names() = %v", balancer.Names())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a duplicate Register did not panic")
		}
	}()
	balancer.Register(fakeFactory{"test_policy"})
}

func TestEmpty(t *testing.T) {
	if balancer.Empty.Pick(balancer.Info{}) != nil {
		t.Fatal("Empty picked a node")
	}
}
