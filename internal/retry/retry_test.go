package retry

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	const base, ceiling = 250 * time.Millisecond, 5 * time.Second
	tests := []struct {
		attempt  int
		rnd      float64
		want     time.Duration
		whatCase string
	}{
		{1, 0, 125 * time.Millisecond, "first failure, low jitter"},
		{1, 0.999999, 250 * time.Millisecond, "first failure, high jitter"},
		{2, 0, 250 * time.Millisecond, "doubles"},
		{3, 0.5, 750 * time.Millisecond, "half jitter"},
		{5, 0, 2 * time.Second, "grows"},
		{6, 0, 2500 * time.Millisecond, "capped"},
		{6, 0.999999, 5 * time.Second, "capped, high jitter"},
		{1000, 0, 2500 * time.Millisecond, "no overflow"},
	}
	for _, tc := range tests {
		got := Backoff(tc.attempt, base, ceiling, func() float64 { return tc.rnd })
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("%s: Backoff(%d, rnd=%v) = %v, want %v", tc.whatCase, tc.attempt, tc.rnd, got, tc.want)
		}
	}
	// Never below half nor above the capped value, whatever the jitter.
	for attempt := 1; attempt < 40; attempt++ {
		for _, r := range []float64{0, 0.25, 0.5, 0.75, 0.9999} {
			d := Backoff(attempt, base, ceiling, func() float64 { return r })
			if d < base/2 || d > ceiling {
				t.Fatalf("Backoff(%d, %v) = %v out of [%v, %v]", attempt, r, d, base/2, ceiling)
			}
		}
	}
}

// The bounds with another ceiling: the first wait is base/2 at the least,
// and a capped one ceiling/2.
func TestBackoffBounds(t *testing.T) {
	const base, ceiling = 250 * time.Millisecond, 10 * time.Second
	for attempt := 1; attempt < 50; attempt++ {
		for _, rnd := range []float64{0, 0.5, 0.9999} {
			d := Backoff(attempt, base, ceiling, func() float64 { return rnd })
			if d < base/2 || d > ceiling {
				t.Fatalf("Backoff(%d, %v) = %v", attempt, rnd, d)
			}
		}
	}
	if d := Backoff(1, base, ceiling, func() float64 { return 0 }); d != base/2 {
		t.Fatalf("first backoff %v, want %v", d, base/2)
	}
	if d := Backoff(100, base, ceiling, func() float64 { return 0 }); d != ceiling/2 {
		t.Fatalf("capped backoff %v, want %v", d, ceiling/2)
	}
}
