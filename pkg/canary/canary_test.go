package canary_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/balancer/hashkey"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
)

func rule(t *testing.T, c canary.Config) *canary.Rule {
	t.Helper()
	r, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func labelled(meta map[string]string) *node.Node {
	return node.New(discovery.Instance{ID: "x", Address: "h", Port: 1, Weight: 1, Healthy: true, Metadata: meta}, nil)
}

func TestSelectorAndWeightPrecedence(t *testing.T) {
	r := rule(t, canary.Config{Selector: map[string]string{"version": "v2"}, Weight: 7})
	if !r.IsCanary(labelled(map[string]string{"version": "v2", "zone": "a"})) || r.IsCanary(labelled(map[string]string{"version": "v1"})) {
		t.Fatal("selector")
	}
	for _, tc := range []struct {
		labels []string
		want   float64
		from   string
	}{
		{nil, 7, "config"},
		{[]string{"12.5"}, 12.5, "registry"},
		{[]string{"30", "10%"}, 10, "registry"}, // the smallest wins
		{[]string{"abc", "150"}, 7, "config"},   // invalid labels are ignored
		{[]string{"abc", "20"}, 20, "registry"},
	} {
		var nodes []*node.Node
		for _, l := range tc.labels {
			nodes = append(nodes, labelled(map[string]string{"version": "v2", "canary-weight": l}))
		}
		if w, from := r.WeightOf(nodes); w != tc.want || from != tc.from {
			t.Errorf("labels %v: weight %v from %s; want %v from %s", tc.labels, w, from, tc.want, tc.from)
		}
	}
}

func TestChooseDoesNotAllocate(t *testing.T) {
	r := rule(t, canary.Config{Weight: 30, HashOn: &hashkey.Spec{Header: "x-user-id"}, Match: []canary.Match{{Cookie: "beta", Value: "1"}}})
	s := canary.NewSplit(r, balancer.Empty, 1, 30, "config")
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-User-Id", "42")
	req.Header.Set("Cookie", "a=b")
	if a := testing.AllocsPerRun(1000, func() { s.Choose(balancer.Info{Request: req}) }); a != 0 {
		t.Fatalf("Choose allocates %v times", a)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		c    canary.Config
		want string
	}{
		{canary.Config{Weight: 101}, "weight: 101"},
		{canary.Config{Match: []canary.Match{{Value: "x"}}}, "match[0]: set exactly one of header or cookie"},
		{canary.Config{Match: []canary.Match{{Header: "h"}}}, "match[0].value: missing"},
		{canary.Config{HashOn: &hashkey.Spec{}}, "hash_on"},
		{canary.Config{Rollback: &canary.Rollback{ErrorRateMargin: 200}}, "rollback.error_rate_margin: 200"},
		{canary.Config{Rollback: &canary.Rollback{Window: -time.Second}}, "rollback.window"},
	} {
		if _, err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v; want %q", tc.c, err, tc.want)
		}
	}
}

func TestJudge(t *testing.T) {
	r := rule(t, canary.Config{Rollback: &canary.Rollback{MinRequests: 100, ErrorRateMargin: 5, LatencyP99Margin: 0.5}})
	j := canary.NewJudge(r)
	var s canary.Stats
	feed := func(p canary.Pool, n, errs int, lat time.Duration) {
		for i := 0; i < n; i++ {
			s.Record(p, i < errs, lat)
		}
	}
	feed(canary.Stable, 200, 2, time.Millisecond)
	feed(canary.Canary, 50, 25, time.Millisecond) // too few to judge
	if reason := j.Evaluate(&s); reason != "" {
		t.Fatalf("judged on too few requests: %s", reason)
	}
	feed(canary.Stable, 200, 2, time.Millisecond)
	feed(canary.Canary, 200, 6, time.Millisecond) // 3% vs 1%: within the margin
	if reason := j.Evaluate(&s); reason != "" {
		t.Fatalf("tripped within the margin: %s", reason)
	}
	feed(canary.Stable, 200, 2, time.Millisecond)
	feed(canary.Canary, 200, 60, time.Millisecond) // 30% vs 1%
	if reason := j.Evaluate(&s); !strings.Contains(reason, "error rate 30.0%") {
		t.Fatalf("reason %q", reason)
	}
	feed(canary.Stable, 200, 0, time.Millisecond)
	feed(canary.Canary, 200, 0, 20*time.Millisecond) // 20× slower
	if reason := j.Evaluate(&s); !strings.Contains(reason, "p99 latency") {
		t.Fatalf("reason %q", reason)
	}
}

func FuzzParseWeight(f *testing.F) {
	for _, s := range []string{"10", "2.5", "10%", " 100 ", "NaN", "-1", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := canary.ParseWeight(s)
		if err == nil && (w < 0 || w > 100 || w != w) {
			t.Fatalf("ParseWeight(%q) = %v accepted", s, w)
		}
	})
}
