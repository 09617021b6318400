package all_test

import (
	"slices"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	_ "github.com/remora-mesh/remora/pkg/balancer/all"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
)

// options is a valid options block for each policy.
var options = map[string]string{
	"ewma":                 "",
	"least_request":        "",
	"maglev":               "hash_on: {header: x-key}",
	"random":               "",
	"ring_hash":            "hash_on: {header: x-key}",
	"round_robin":          "",
	"weighted_round_robin": "",
}

func TestNames(t *testing.T) {
	var want []string
	for name := range options {
		want = append(want, name)
	}
	slices.Sort(want)
	if got := balancer.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
}

// TestEveryPolicy builds each registered policy from config and checks the
// contract: picks only given nodes, nil on none, no allocation.
func TestEveryPolicy(t *testing.T) {
	infos := balancertest.Requests(16)
	for _, name := range balancer.Names() {
		t.Run(name, func(t *testing.T) {
			src, ok := options[name]
			if !ok {
				t.Fatalf("no test options for policy %q", name)
			}
			f, _ := balancer.Lookup(name)
			b, err := f.Parse(balancertest.YAML(src))
			if err != nil {
				t.Fatal(err)
			}
			if b.Build(nil).Pick(infos[0]) != nil {
				t.Fatal("an empty picker returned a node")
			}
			nodes := balancertest.Nodes(1, 2, 3, 4, 5)
			p := b.Build(nodes)
			for _, info := range infos {
				if n := p.Pick(info); !slices.Contains(nodes, n) {
					t.Fatalf("picked %v", n)
				}
			}
			balancertest.AssertNoAllocs(t, p, infos...)
		})
	}
}
