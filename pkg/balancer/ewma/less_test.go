package ewma

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLessMatchesExactDecay: the bounds that spare the exponential decide
// as the exact comparison does, for costs and ages across their range.
func TestLessMatchesExactDecay(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inv := 1 / float64(DefaultDecay)
	for i := range 200000 {
		a := candidate{cost: math.Exp(r.Float64()*20) * 1e3, at: r.Int64N(int64(60e9)), decays: true}
		b := candidate{cost: math.Exp(r.Float64()*20) * 1e3, at: r.Int64N(int64(60e9)), decays: true}
		if i%3 == 0 { // close costs: the bounds must defer to exp
			b.cost = a.cost * (1 + (r.Float64()-0.5)*1e-3)
		}
		ca, cb := a.cost, b.cost
		if d := a.at - b.at; d > 0 {
			cb *= math.Exp(-float64(d) * inv)
		} else {
			ca *= math.Exp(float64(d) * inv)
		}
		want := ca < cb
		if math.Abs(ca-cb) <= 1e-5*max(ca, cb) {
			continue // a tie within ExpNeg's error: either answer is right
		}
		if got := a.less(b, inv); got != want {
			t.Fatalf("%+v.less(%+v) = %v; exact decay says %v (%g vs %g)", a, b, got, want, ca, cb)
		}
	}
}
