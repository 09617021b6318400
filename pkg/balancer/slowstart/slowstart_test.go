package slowstart

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/pkg/balancer/balancertest"
	"github.com/remora-mesh/remora/pkg/node"
)

func ptr(f float64) *float64 { return &f }

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     *Config
		wantErr string
	}{
		{"nil", nil, ""},
		{"off", &Config{}, ""},
		{"full", &Config{Window: time.Minute, Aggression: ptr(2), MinWeightPercent: ptr(0)}, ""},
		{"negative window", &Config{Window: -1}, "slow_start.window"},
		{"long window", &Config{Window: 2 * time.Hour}, "slow_start.window"},
		{"zero aggression", &Config{Window: time.Second, Aggression: ptr(0)}, "slow_start.aggression"},
		{"NaN aggression", &Config{Window: time.Second, Aggression: ptr(math.NaN())}, "slow_start.aggression"},
		{"min over 100", &Config{Window: time.Second, MinWeightPercent: ptr(101)}, "slow_start.min_weight_percent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func nodes(added ...time.Time) []*node.Node {
	ns := make([]*node.Node, len(added))
	for i, a := range added {
		ns[i] = balancertest.NewNode(i, 1, a)
	}
	return ns
}

func TestFactor(t *testing.T) {
	t0 := time.Unix(10000, 0)
	old := time.Time{}
	for _, tc := range []struct {
		name    string
		cfg     Config
		elapsed time.Duration
		want    float64
	}{
		{"just joined: floor", Config{Window: 100 * time.Second}, 0, 0.1},
		{"linear midway", Config{Window: 100 * time.Second}, 50 * time.Second, 0.5},
		{"aggression 2", Config{Window: 100 * time.Second, Aggression: ptr(2)}, 25 * time.Second, 0.5},
		{"aggression 0.5", Config{Window: 100 * time.Second, Aggression: ptr(0.5)}, 50 * time.Second, 0.25},
		{"floor 0", Config{Window: 100 * time.Second, MinWeightPercent: ptr(0)}, time.Second, 0.01},
		{"after window", Config{Window: 100 * time.Second}, 101 * time.Second, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes(old, t0)
			r := tc.cfg.Ramp(ns, t0, nil)
			if r == nil || !r.Ramping(1) || r.Ramping(0) {
				t.Fatalf("ramp %+v: node 1 should ramp, node 0 not", r)
			}
			if got := r.Factor(1, t0.Add(tc.elapsed)); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("Factor = %v, want %v", got, tc.want)
			}
			if r.Factor(0, t0) != 1 {
				t.Fatal("an old node must have factor 1")
			}
		})
	}
}

func TestRampNil(t *testing.T) {
	t0 := time.Unix(10000, 0)
	if (&Config{}).Ramp(nodes(t0, t0), t0, nil) != nil {
		t.Error("window 0 must disable slow start")
	}
	if (&Config{Window: time.Second}).Ramp(nodes(t0.Add(-time.Hour), t0.Add(-time.Minute)), t0, nil) != nil {
		t.Error("no node in its window: no ramp")
	}
	var r *Ramp
	if !r.Accept(0, 0) || r.Factor(0, t0) != 1 {
		t.Error("nil ramp must accept")
	}
}

// TestJoinedTogether: nodes that joined at the same time share evenly.
func TestJoinedTogether(t *testing.T) {
	t0 := time.Unix(10000, 0)
	r := (&Config{Window: time.Minute}).Ramp(nodes(t0, t0, t0), t0, func() time.Time { return t0.Add(time.Second) })
	for i := range 3 {
		if f := r.Factor(i, t0.Add(time.Second)); f != 1 {
			t.Fatalf("node %d factor %v, want 1", i, f)
		}
		if !r.Accept(i, math.MaxUint64) {
			t.Fatal("must accept")
		}
	}
}

func TestAcceptNoAllocs(t *testing.T) {
	t0 := time.Unix(10000, 0)
	r := (&Config{Window: time.Minute}).Ramp(nodes(time.Time{}, t0), t0, func() time.Time { return t0 })
	if a := testing.AllocsPerRun(100, func() { r.Accept(1, 12345) }); a != 0 {
		t.Fatalf("Accept allocates %v", a)
	}
}
