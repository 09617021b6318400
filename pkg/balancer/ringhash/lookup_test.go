package ringhash

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
)

// TestBuckets checks buckets against their definition.
func TestBuckets(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		hashes := make([]uint64, n)
		for i := range hashes {
			hashes[i] = r.Uint64()
		}
		if n > 3 {
			hashes[0], hashes[1], hashes[2] = 0, ^uint64(0), hashes[3] // the ends, and a tie
		}
		slices.Sort(hashes)
		points := make([]point, n)
		for i, h := range hashes {
			points[i].hash = h
		}
		shift, idx := buckets(points)
		if len(idx) != 1<<(64-shift)+1 || len(idx) > 2*n+2 && n > 1 {
			t.Fatalf("%d hashes: shift %d, %d buckets", n, shift, len(idx))
		}
		for b := range idx {
			want := 0
			for want < n && hashes[want]>>shift < uint64(b) {
				want++
			}
			if idx[b].start != uint32(want) {
				t.Fatalf("%d hashes: bucket %d starts at %d, want %d", n, b, idx[b].start, want)
			}
		}
	}
}

// TestLookup checks the bucketed search against a linear scan of the ring.
func TestLookup(t *testing.T) {
	k := balancertest.Key(t)
	r := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{1, 2, 7, 300} {
		for _, ppw := range []int{1, 3, 160} {
			p := Builder{Key: k, PointsPerWeight: ppw}.Build(balancertest.Uniform(n)).(*picker)
			for _, info := range balancertest.Requests(500) {
				h, _ := k.Hash(info)
				want := 0
				for want < len(p.points) && p.points[want].hash < h {
					want++
				}
				if want == len(p.points) {
					want = 0
				}
				if got := p.Pick(info); got != p.Nodes[p.points[want].owner] {
					t.Fatalf("n=%d ppw=%d: hash %x picked %s, linear scan says %s", n, ppw, h, got.ID, p.Nodes[p.points[want].owner].ID)
				}
			}
			// Hashes at the edges of buckets and of the ring.
			first, last := p.points[0].hash, p.points[len(p.points)-1].hash
			for _, h := range []uint64{0, ^uint64(0), first, last, first + 1, r.Uint64()} {
				lo, hi := int(p.buckets[h>>p.shift].start), int(p.buckets[h>>p.shift+1].start)
				if lo > hi || hi > len(p.points) {
					t.Fatalf("bucket of %x is [%d, %d)", h, lo, hi)
				}
				if lo < len(p.points) && lo > 0 && p.points[lo-1].hash >= h {
					t.Fatalf("bucket of %x starts past an earlier point", h)
				}
			}
		}
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct{ min, max, wantMin, wantMax int }{
		{0, 0, 0, DefaultMaxRingSize},
		{10, 0, 10, DefaultMaxRingSize},
		{DefaultMaxRingSize * 2, 0, DefaultMaxRingSize * 2, DefaultMaxRingSize * 2}, // the default max follows a larger min
		{5, 7, 5, 7},
	} {
		if gotMin, gotMax := (Builder{MinRingSize: tc.min, MaxRingSize: tc.max}).sizes(); gotMin != tc.wantMin || gotMax != tc.wantMax {
			t.Errorf("sizes(%d, %d) = %d, %d; want %d, %d", tc.min, tc.max, gotMin, gotMax, tc.wantMin, tc.wantMax)
		}
	}
}
