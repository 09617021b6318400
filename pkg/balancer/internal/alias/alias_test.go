package alias

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSampleProportions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
	}{
		{"equal", []uint32{3, 3, 3}},
		{"skewed", []uint32{1, 2, 3, 10}},
		{"zero weight", []uint32{0, 5, 5}},
		{"one", []uint32{7}},
		{"huge", []uint32{math.MaxUint32, 1, math.MaxUint32 / 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := New(tc.weights)
			r := rand.New(rand.NewPCG(1, 2))
			counts := make([]float64, len(tc.weights))
			const picks = 200000
			for range picks {
				counts[tab.Sample(r.Uint64())]++
			}
			var total float64
			for _, w := range tc.weights {
				total += float64(w)
			}
			for i, w := range tc.weights {
				want := float64(w) / total
				if got := counts[i] / picks; math.Abs(got-want) > 0.01 {
					t.Errorf("index %d: share %.4f, want %.4f", i, got, want)
				}
			}
		})
	}
}

func TestAllZeroIsUniform(t *testing.T) {
	tab := New([]uint32{0, 0})
	seen := map[int]bool{}
	for r := range uint64(16) {
		seen[tab.Sample(r<<60)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("sampled %v", seen)
	}
}

func TestUniform(t *testing.T) {
	if Uniform(0, 10) != 0 || Uniform(math.MaxUint64, 10) != 9 || Uniform(1<<63, 10) != 5 {
		t.Fatal("Uniform does not map the range linearly")
	}
}

func TestSample32Proportions(t *testing.T) {
	ws := []uint32{1, 2, 3, 10, 0}
	tab := New(ws)
	r := rand.New(rand.NewPCG(3, 4))
	counts := make([]float64, len(ws))
	const picks = 200000
	for range picks {
		counts[tab.Sample32(r.Uint32())]++
	}
	for i, w := range ws {
		if got, want := counts[i]/picks, float64(w)/16; math.Abs(got-want) > 0.01 {
			t.Errorf("index %d: share %.4f, want %.4f", i, got, want)
		}
	}
}
