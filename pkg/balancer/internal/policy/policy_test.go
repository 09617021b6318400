package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
)

func TestFactory(t *testing.T) {
	type opts struct{ N int }
	f := factory[opts]{name: "p", parse: func(o opts) (balancer.Builder, error) {
		if o.N != 7 {
			return nil, errors.New("not decoded")
		}
		return nil, nil
	}}
	if _, err := f.Parse(func(v any) error { v.(*opts).N = 7; return nil }); err != nil || f.Name() != "p" {
		t.Fatalf("Parse: %v, Name %q", err, f.Name())
	}
	bad := errors.New("bad")
	if _, err := f.Parse(func(any) error { return bad }); err != bad {
		t.Fatalf("a decode error became %v", err)
	}
}

func TestCursor(t *testing.T) {
	var c Cursor
	c.Start(7, 3)
	for _, want := range []uint64{1, 2, 3, 4} {
		if got := c.Next(); got != want {
			t.Fatalf("Next = %d, want %d", got, want)
		}
	}
}

func TestWeightsAndRandom(t *testing.T) {
	nodes := balancertest.Nodes(0, 3)
	if ws := Weights(nodes, 1); ws[0] != 1 || ws[1] != 3 {
		t.Fatalf("Weights(1) = %v", ws)
	}
	h, ws := NewHashed(nodes, hashkey.Key{}, func() uint64 { return 0 })
	if ws[0] != 1 || h.Random.Sample(h.Rand()) != 0 {
		t.Fatalf("NewHashed weights %v, random draw %d", ws, h.Random.Sample(h.Rand()))
	}
}

func TestHashOn(t *testing.T) {
	if _, err := HashOn("maglev", hashkey.Spec{}); err == nil || !strings.Contains(err.Error(), "hash_on: required") || !strings.Contains(err.Error(), "policy: maglev") {
		t.Fatalf("empty hash_on: %v", err)
	}
	if k, err := HashOn("maglev", hashkey.Spec{Path: true}); err != nil || k.String() != "path" {
		t.Fatalf("HashOn = %v, %v", k, err)
	}
}
