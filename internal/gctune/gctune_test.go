package gctune

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		live, headroom uint64
		base, want     int
	}{
		{live: 4 << 20, headroom: 16 << 20, base: 100, want: 400},  // goal 20 MiB
		{live: 8 << 20, headroom: 16 << 20, base: 100, want: 200},  // goal 24 MiB
		{live: 2 << 20, headroom: 16 << 20, base: 100, want: 450},  // the minimum heap (4 MiB × 4.5) bounds it: goal 18 MiB
		{live: 0, headroom: 16 << 20, base: 100, want: 400},        // before the first collection: goal 16 MiB
		{live: 64 << 20, headroom: 16 << 20, base: 100, want: 100}, // GOGC's share is more
		{live: 1 << 30, headroom: 16 << 20, base: 100, want: 100},
		{live: 1 << 10, headroom: 1 << 30, base: 100, want: 10000}, // bounded
		{live: 8 << 20, headroom: 16 << 20, base: 300, want: 300},
	} {
		if got := Percent(tc.live, tc.headroom, tc.base); got != tc.want {
			t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.live, tc.headroom, tc.base, got, tc.want)
		}
	}
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestTunerFollowsCollections: after a collection of a small heap, GOGC
// lets it grow by the headroom; Stop restores GOGC.
func TestTunerFollowsCollections(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set: the tuner stays off by design")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tuner := Start(1 << 30)
	if tuner == nil {
		t.Fatal("Start returned nil without GOGC set")
	}
	if got := gogc(); got <= 100 {
		t.Fatalf("GOGC %d right after Start, want above 100 for a small heap", got)
	}
	debug.SetGCPercent(100) // as if someone reset it: the next collection tunes again
	deadline := time.Now().Add(10 * time.Second)
	for gogc() <= 100 {
		if time.Now().After(deadline) {
			t.Fatal("GOGC was not tuned again after collections")
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	tuner.Stop()
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC %d after Stop, want 100", got)
	}
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if got := gogc(); got != 100 {
		t.Fatalf("GOGC %d: a stopped tuner changed it", got)
	}
}

func TestStartKeepsOffWithGOGCSet(t *testing.T) {
	t.Setenv("GOGC", "100")
	if Start(0) != nil {
		t.Fatal("Start tuned with GOGC set")
	}
}
