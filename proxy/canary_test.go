package proxy_test

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/upstream"
)

func canaryRule(t testing.TB, c canary.Config) *canary.Rule {
	t.Helper()
	r, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// canaryFixture: two stable backends and one canary (labelled canary=true).
func canaryFixture(t testing.TB, c canary.Config, canaryMeta map[string]string) (*fixture, []discovery.Instance) {
	t.Helper()
	f := newFixtureCfg(t, upstream.Config{Name: "users", Canary: canaryRule(t, c)})
	s1, s2, c1 := newBackend(t, "stable-1", nil).instance(), newBackend(t, "stable-2", nil).instance(), newBackend(t, "canary-1", nil).instance()
	meta := map[string]string{"canary": "true"}
	for k, v := range canaryMeta {
		meta[k] = v
	}
	c1.Metadata = meta
	set := []discovery.Instance{s1, s2, c1}
	f.set(t, "users", set...)
	return f, set
}

// hitCanary sends a request with the given headers and reports whether
// the canary answered.
func hitCanary(t testing.TB, f *fixture, header http.Header) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.front.URL+"/", nil)
	req.Host = "users"
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, body := do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	return resp.Header.Get("X-Backend") == "canary-1"
}

func TestCanaryWeightIsStatistical(t *testing.T) {
	const n = 5000
	for _, w := range []float64{0, 10, 100} {
		t.Run(fmt.Sprint(w), func(t *testing.T) {
			f, _ := canaryFixture(t, canary.Config{Weight: w}, nil)
			got := parallelCount(t, n, func() bool { return hitCanary(t, f, nil) })
			mean := n * w / 100
			bound := 3.29 * math.Sqrt(n*(w/100)*(1-w/100)) // 99.9% two-sided
			if math.Abs(float64(got)-mean) > bound {
				t.Fatalf("weight %v%%: %d of %d to the canary; want %v ± %.0f", w, got, n, mean, bound)
			}
		})
	}
}

// parallelCount runs fn n times on 8 goroutines and counts true results.
func parallelCount(t testing.TB, n int, fn func() bool) int {
	var mu sync.Mutex
	count := 0
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if fn() {
					mu.Lock()
					count++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return count
}

func TestCanaryOverridesAndMatchRules(t *testing.T) {
	f, _ := canaryFixture(t, canary.Config{Weight: 50, Match: []canary.Match{{Header: "x-user-group", Value: "beta"}, {Cookie: "beta", Value: "1"}}}, nil)
	for i := 0; i < 20; i++ {
		if !hitCanary(t, f, http.Header{"X-Canary": {"always"}}) {
			t.Fatal("x-canary: always went to stable")
		}
		if hitCanary(t, f, http.Header{"X-Canary": {"never"}}) {
			t.Fatal("x-canary: never went to the canary")
		}
		if !hitCanary(t, f, http.Header{"X-User-Group": {"beta"}}) {
			t.Fatal("the header match rule did not send to the canary")
		}
		if !hitCanary(t, f, http.Header{"Cookie": {"session=x; beta=1"}}) {
			t.Fatal("the cookie match rule did not send to the canary")
		}
		if hitCanary(t, f, http.Header{"X-User-Group": {"beta"}, "X-Canary": {"never"}}) {
			t.Fatal("the override header must win over match rules")
		}
	}
}

func TestCanaryStickyCohorts(t *testing.T) {
	rule := func(w float64) canary.Config {
		return canary.Config{Weight: w, HashOn: &hashkey.Spec{Header: "x-user-id"}}
	}
	f, _ := canaryFixture(t, rule(10), nil)
	pools := func() map[string]bool {
		out := map[string]bool{}
		var mu sync.Mutex
		keys := make(chan string, 1000)
		for k := 0; k < 1000; k++ {
			keys <- fmt.Sprint("user-", k)
		}
		close(keys)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for key := range keys {
					first := hitCanary(t, f, http.Header{"X-User-Id": {key}})
					for i := 0; i < 4; i++ {
						if hitCanary(t, f, http.Header{"X-User-Id": {key}}) != first {
							t.Errorf("key %s changed pools at a fixed weight", key)
							return
						}
					}
					mu.Lock()
					out[key] = first
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return out
	}
	at10 := pools()
	// Raise the weight to 50% (a reload hands over the nodes).
	prev := f.ups["users"]
	u := upstream.New(upstream.Config{Name: "users", Canary: canaryRule(t, rule(50)), Previous: prev})
	w, _ := f.reg.Watch(t.Context(), "users")
	before := u.Snapshot().Version // read before Run takes the set
	go u.Run(t.Context(), w)
	f.proxy.SetTable(upstream.NewTable(u))
	f.ups["users"] = u
	for deadline := time.Now().Add(5 * time.Second); u.Snapshot().Version == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new upstream did not take the set")
		}
	}
	at50 := pools()
	moved, canary10, canary50 := 0, 0, 0
	for key, was := range at10 {
		if was {
			canary10++
			if !at50[key] {
				t.Fatalf("key %s moved from canary back to stable when the weight rose", key)
			}
		}
		if at50[key] {
			canary50++
			if !was {
				moved++
			}
		}
	}
	t.Logf("canary keys: %d at 10%%, %d at 50%% (%d moved from stable)", canary10, canary50, moved)
	if canary10 < 50 || canary10 > 150 || canary50 < 400 || canary50 > 600 {
		t.Fatalf("cohort sizes %d and %d are far from 10%% and 50%% of 1000", canary10, canary50)
	}
}

func TestCanaryWeightFromRegistryLabel(t *testing.T) {
	f, set := canaryFixture(t, canary.Config{Weight: 0}, map[string]string{"canary-weight": "100"})
	for i := 0; i < 20; i++ {
		if !hitCanary(t, f, nil) {
			t.Fatal("canary-weight: 100 in the registry did not override weight 0")
		}
	}
	set[2].Metadata = map[string]string{"canary": "true", "canary-weight": "0"}
	f.set(t, "users", set...)
	for i := 0; i < 20; i++ {
		if hitCanary(t, f, nil) {
			t.Fatal("canary-weight: 0 still sent traffic to the canary")
		}
	}
	if s := f.ups["users"].Snapshot().Canary; s.WeightFrom != "registry" {
		t.Fatalf("weight from %q", s.WeightFrom)
	}
}

func TestCanaryFallbackAndStrict(t *testing.T) {
	f, set := canaryFixture(t, canary.Config{Weight: 100}, nil)
	set[2].Healthy = false // the canary is gone
	f.set(t, "users", set...)
	if hitCanary(t, f, nil) {
		t.Fatal("impossible: the canary is down")
	}
	strict := newFixtureCfg(t, upstream.Config{Name: "users", Canary: canaryRule(t, canary.Config{Weight: 100, Strict: true})})
	strict.set(t, "users", set...)
	resp, body := strict.get(t, "users", "/")
	if resp.StatusCode != 503 {
		t.Fatalf("strict with no canary node: %d %q", resp.StatusCode, body)
	}
}

func TestCanaryAutomaticRollback(t *testing.T) {
	run := func(t *testing.T, errorEvery int, within time.Duration) *upstream.Upstream {
		rule := canaryRule(t, canary.Config{Weight: 50, Rollback: &canary.Rollback{Window: 200 * time.Millisecond, MinRequests: 20, ErrorRateMargin: 10}})
		f := newFixtureCfg(t, upstream.Config{Name: "users", Canary: rule})
		var mu sync.Mutex
		count := 0
		bad := newBackend(t, "canary-1", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			count++
			fail := errorEvery > 0 && count%errorEvery == 0
			mu.Unlock()
			if fail {
				w.WriteHeader(500)
			}
		}).instance()
		bad.Metadata = map[string]string{"canary": "true"}
		f.set(t, "users", newBackend(t, "stable-1", nil).instance(), bad)
		deadline := time.Now().Add(within)
		for time.Now().Before(deadline) {
			if reason, _ := f.ups["users"].RolledBack(); reason != "" {
				break
			}
			parallelCount(t, 100, func() bool { f.get(t, "users", "/"); return true })
		}
		return f.ups["users"]
	}
	t.Run("30% errors trip it", func(t *testing.T) {
		u := run(t, 3, 15*time.Second) // every third canary request fails: ~33%
		reason, _ := u.RolledBack()
		if reason == "" {
			t.Fatal("a canary failing a third of its requests was not rolled back")
		}
		s := waitCanaryWeight(t, u, 0)
		if s.WeightFrom != "rollback" {
			t.Fatalf("weight from %q", s.WeightFrom)
		}
		if !u.ResumeCanary() {
			t.Fatal("resume found no rollback")
		}
		waitCanaryWeight(t, u, 50)
	})
	t.Run("a healthy canary does not trip", func(t *testing.T) {
		u := run(t, 0, 2*time.Second) // some 10 windows
		if reason, _ := u.RolledBack(); reason != "" {
			t.Fatalf("a healthy canary was rolled back: %s", reason)
		}
	})
}

func waitCanaryWeight(t *testing.T, u *upstream.Upstream, w float64) *canary.Split {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s := u.Snapshot().Canary; s != nil && s.Weight == w {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary weight did not become %v", w)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
