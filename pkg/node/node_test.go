package node

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
)

func TestAvailable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy bool
		weight  uint32
		want    bool
	}{
		{"healthy weighted", true, 1, true},
		{"drained", true, 0, false},
		{"unhealthy", false, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Healthy: tc.healthy, Weight: tc.weight}, nil)
			if got := n.Available(); got != tc.want {
				t.Fatalf("Available() = %v, want %v", got, tc.want)
			}
			if n.HostPort != "10.0.0.1:80" {
				t.Fatalf("HostPort = %q", n.HostPort)
			}
		})
	}
}

func TestBeginEndCounters(t *testing.T) {
	s := NewStats(time.Unix(100, 0))
	now := time.Unix(200, 0)
	s.Begin(now)
	s.Begin(now)
	s.EndAt(now, time.Millisecond, true)
	if got := s.InFlight.Load(); got != 1 {
		t.Fatalf("InFlight = %d, want 1", got)
	}
	if s.Failures.Load() != 1 || s.Requests.Load() != 2 {
		t.Fatalf("counters = %d/%d", s.Failures.Load(), s.Requests.Load())
	}
	s.End(0, false)
	if s.Failures.Load() != 1 || s.InFlight.Load() != 0 {
		t.Fatalf("after a success: %d in flight, %d failures", s.InFlight.Load(), s.Failures.Load())
	}
	if !s.LastUsed().Equal(now) || !s.Added().Equal(time.Unix(100, 0)) {
		t.Fatalf("LastUsed %v, Added %v", s.LastUsed(), s.Added())
	}
}

// sample is one EndAt call, at an offset from a base instant.
type sample struct {
	at      time.Duration
	latency time.Duration
	failed  bool
}

func TestPeakEWMA(t *testing.T) {
	const decay = 10 * time.Second
	w := func(elapsed time.Duration) float64 { return math.Exp(-float64(elapsed) / float64(decay)) }
	for _, tc := range []struct {
		name    string
		samples []sample
		readAt  time.Duration
		want    float64 // ns
	}{
		{"no sample", nil, 0, 0},
		{"latency 0 is no sample", []sample{{0, 0, false}}, 0, 0},
		{"first sample", []sample{{0, 10 * time.Millisecond, false}}, 0, 10e6},
		{"failed first sample ignored", []sample{{0, time.Millisecond, true}}, 0, 0},
		{"peak replaces", []sample{{0, 10 * time.Millisecond, false}, {time.Millisecond, 50 * time.Millisecond, false}}, time.Millisecond, 50e6},
		{"lower sample averages by elapsed time", []sample{{0, 100 * time.Millisecond, false}, {5 * time.Second, 10 * time.Millisecond, false}},
			5 * time.Second, 100e6*w(5*time.Second) + 10e6*(1-w(5*time.Second))},
		{"failed sample never lowers", []sample{{0, 100 * time.Millisecond, false}, {5 * time.Second, time.Millisecond, true}}, 5 * time.Second, 100e6},
		{"failed sample raises", []sample{{0, 10 * time.Millisecond, false}, {time.Second, 30 * time.Millisecond, true}}, time.Second, 30e6},
		{"decays towards zero when idle", []sample{{0, 100 * time.Millisecond, false}}, 20 * time.Second, 100e6 * w(20*time.Second)},
		{"a read before the stamp does not grow", []sample{{time.Second, 100 * time.Millisecond, false}}, 0, 100e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := time.Unix(1000, 0)
			s := NewStats(base)
			s.SetLatencyDecay(decay)
			for _, sm := range tc.samples {
				s.Begin(base.Add(sm.at))
				s.EndAt(base.Add(sm.at), sm.latency, sm.failed)
			}
			got := s.PeakEWMA(Mono(base.Add(tc.readAt)))
			if math.Abs(got-tc.want) > 2e-6*tc.want+1e-9 {
				t.Fatalf("PeakEWMA = %g, want %g", got, tc.want)
			}
			if d := s.Latency(base.Add(tc.readAt)); math.Abs(float64(d)-tc.want) > 1 {
				t.Fatalf("Latency = %v, want %gns", d, tc.want)
			}
		})
	}
}

func TestLatencyDecay(t *testing.T) {
	var s Stats
	if got := s.LatencyDecay(); got != DefaultLatencyDecay {
		t.Fatalf("zero Stats decay = %v, want %v", got, DefaultLatencyDecay)
	}
	s.SetLatencyDecay(3 * time.Second)
	if got := s.LatencyDecay(); got != 3*time.Second {
		t.Fatalf("decay = %v, want 3s", got)
	}
	s.SetLatencyDecay(-1)
	if got := s.LatencyDecay(); got != DefaultLatencyDecay {
		t.Fatalf("reset decay = %v", got)
	}
}

func TestDecayWeightApproximation(t *testing.T) {
	inv := 1 / float64(time.Second)
	for _, e := range []int64{0, 1, 1000, 999_999, 1_000_000, 1_000_001, 5e8, 693147180, 693147181, 5e9, 1e11, 7e11, 8e11} {
		want := math.Exp(-float64(e) * inv)
		if got := decayWeight(e, inv); math.Abs(got-want) > 2e-6*want {
			t.Errorf("decayWeight(%d) = %g, want %g", e, got, want)
		}
	}
	if decayWeight(-5, inv) != 1 {
		t.Error("negative elapsed must not grow the estimate")
	}
}

func TestExpNeg(t *testing.T) {
	for x := 0.0; x <= 700; x += 0.0137 {
		want := math.Exp(-x)
		if got := ExpNeg(x); math.Abs(got-want) > 2e-6*want {
			t.Fatalf("ExpNeg(%v) = %v, want %v", x, got, want)
		}
	}
}

func BenchmarkExpNeg(b *testing.B) {
	x := 0.0
	for b.Loop() {
		x += ExpNeg(x*1e-9 + 0.5)
	}
}

func TestMonoMatchesTime(t *testing.T) {
	a := time.Now()
	b := a.Add(1500 * time.Millisecond)
	if d := Mono(b) - Mono(a); d != int64(1500*time.Millisecond) {
		t.Fatalf("Mono difference = %d", d)
	}
	if m := MonoNow(); m < Mono(a) {
		t.Fatalf("MonoNow %d before an earlier Mono %d", m, Mono(a))
	}
}

func TestStatsNoAllocs(t *testing.T) {
	s := NewStats(time.Now())
	now := time.Now()
	allocs := testing.AllocsPerRun(1000, func() {
		s.Begin(now)
		s.End(time.Millisecond, false)
		_ = s.PeakEWMA(MonoNow())
	})
	if allocs != 0 {
		t.Fatalf("Begin/End/PeakEWMA allocate %v times", allocs)
	}
}

// TestStatsConcurrent is for -race: Stats is updated and read by many
// goroutines without locks, and the estimate stays within the samples.
func TestStatsConcurrent(t *testing.T) {
	s := NewStats(time.Now())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				s.Begin(time.Now())
				lat := time.Duration(1+(g+i)%10) * time.Millisecond
				s.End(lat, i%7 == 0)
				if e := s.PeakEWMA(MonoNow()); e < 0 || e > 10e6 {
					t.Errorf("estimate %g out of the sample range", e)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s.InFlight.Load() != 0 || s.Requests.Load() != 16000 {
		t.Fatalf("InFlight %d, Requests %d", s.InFlight.Load(), s.Requests.Load())
	}
}

func BenchmarkStatsEnd(b *testing.B) {
	s := NewStats(time.Now())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.InFlight.Add(1)
			s.End(time.Millisecond, false)
		}
	})
}
