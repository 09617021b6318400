package p2c

import (
	"math/rand/v2"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
)

func TestDrawDistinct(t *testing.T) {
	for _, ws := range [][]uint32{{1, 1, 1}, {1, 2, 3}, {1, 1}} {
		s := New(balancertest.Nodes(ws...), nil, rand.New(rand.NewPCG(1, 2)).Uint64)
		seen := map[[2]int]int{}
		for range 3000 {
			d := s.Start()
			a := d.Draw(nil)
			b := d.Draw([]int32{int32(a)})
			if a == b {
				t.Fatalf("weights %v: second candidate repeats the first", ws)
			}
			seen[[2]int{a, b}]++
		}
		if want := len(ws) * (len(ws) - 1); len(seen) != want {
			t.Fatalf("weights %v: %d distinct pairs, want %d", ws, len(seen), want)
		}
	}
}

func TestValidateChoices(t *testing.T) {
	for n, ok := range map[int]bool{0: true, 1: false, 2: true, 16: true, 17: false, -2: false} {
		if err := ValidateChoices(n); (err == nil) != ok {
			t.Errorf("ValidateChoices(%d) = %v", n, err)
		}
	}
	if Choices(0) != 2 || Choices(5) != 5 || Choices(1) != 2 || Choices(-3) != 2 || Choices(100) != MaxChoices {
		t.Error("Choices")
	}
}
