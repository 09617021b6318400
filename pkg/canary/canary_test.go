package canary_test

import (
	"net/http"
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
	for _, tc := range []struct {
		name      string
		rule      *canary.Rule
		available int
		weight    float64
	}{
		{"hash_on and match", rule(t, canary.Config{Weight: 30, HashOn: &hashkey.Spec{Header: "x-user-id"}, Match: []canary.Match{{Cookie: "beta", Value: "1"}}}), 1, 30},
		{"random draw", rule(t, canary.Config{}), 1, 30},
		{"default rule, a canary at weight 0", canary.DefaultRule(), 1, 0},
		{"default rule, no canary node", canary.DefaultRule(), 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := canary.NewSplit(tc.rule, balancer.Empty, tc.available, tc.weight, "config")
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-User-Id", "42")
			req.Header.Set("Cookie", "a=b")
			if a := testing.AllocsPerRun(1000, func() { s.Choose(balancer.Info{Request: req}) }); a != 0 {
				t.Fatalf("Choose allocates %v times", a)
			}
		})
	}
}

// The default rule, every upstream's without a canary: block: instances
// tagged canary=true are canaries, their canary-weight label is the
// weight, and without one the weight is 0.
func TestDefaultRule(t *testing.T) {
	r := canary.DefaultRule()
	if !r.IsDefault() || rule(t, canary.Config{}).IsDefault() {
		t.Fatal("IsDefault: only DefaultRule's rule is the default")
	}
	if c := r.Config(); c.Selector["canary"] != "true" || len(c.Selector) != 1 || c.Weight != 0 || c.WeightKey != "canary-weight" || c.Header != "x-canary" || c.Strict || c.Rollback != nil {
		t.Fatalf("default config %+v", c)
	}
	for _, tc := range []struct {
		name   string
		meta   map[string]string
		canary bool
		weight float64
		from   string
	}{
		{"untagged", nil, false, 0, "config"},
		{"other labels", map[string]string{"version": "v2", "canary-weight": "10"}, false, 0, "config"},
		{"tagged false", map[string]string{"canary": "false"}, false, 0, "config"},
		{"tagged without a weight", map[string]string{"canary": "true"}, true, 0, "config"},
		{"tagged with weight 10", map[string]string{"canary": "true", "canary-weight": "10"}, true, 10, "registry"},
		{"tagged with a bad weight", map[string]string{"canary": "true", "canary-weight": "ten"}, true, 0, "config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := labelled(tc.meta)
			if r.IsCanary(n) != tc.canary {
				t.Fatalf("IsCanary = %v", !tc.canary)
			}
			var canaries []*node.Node
			if tc.canary {
				canaries = append(canaries, n)
			}
			if w, from := r.WeightOf(canaries); w != tc.weight || from != tc.from {
				t.Fatalf("weight %v from %s; want %v from %s", w, from, tc.weight, tc.from)
			}
		})
	}
}

// Choose's order holds for every split; a split without canary nodes
// answers Stable at once unless the rule is strict (choosePool falls back
// to stable anyway, and a strict rule must see the canary chosen).
func TestChoose(t *testing.T) {
	always := httptest.NewRequest("GET", "/", nil)
	always.Header.Set("X-Canary", "always")
	never := httptest.NewRequest("GET", "/", nil)
	never.Header.Set("X-Canary", "never")
	beta := httptest.NewRequest("GET", "/", nil)
	beta.Header.Set("X-Group", "beta")
	plain := httptest.NewRequest("GET", "/", nil)
	matching := rule(t, canary.Config{Match: []canary.Match{{Header: "x-group", Value: "beta"}}})
	strict := rule(t, canary.Config{Strict: true})
	for _, tc := range []struct {
		name      string
		rule      *canary.Rule
		available int
		weight    float64
		req       *http.Request
		want      canary.Pool
	}{
		{"default, weight 0", canary.DefaultRule(), 1, 0, plain, canary.Stable},
		{"default, weight 100", canary.DefaultRule(), 1, 100, plain, canary.Canary},
		{"default, weight 0, x-canary: always", canary.DefaultRule(), 1, 0, always, canary.Canary},
		{"default, weight 100, x-canary: never", canary.DefaultRule(), 1, 100, never, canary.Stable},
		{"default, a tcp connection", canary.DefaultRule(), 1, 100, nil, canary.Canary},
		{"match at weight 0", matching, 1, 0, beta, canary.Canary},
		{"no match at weight 0", matching, 1, 0, plain, canary.Stable},
		{"no canary node, weight 100", canary.DefaultRule(), 0, 100, plain, canary.Stable},
		{"no canary node, x-canary: always", canary.DefaultRule(), 0, 0, always, canary.Stable},
		{"no canary node, match", matching, 0, 0, beta, canary.Stable},
		{"strict, no canary node, weight 100", strict, 0, 100, plain, canary.Canary},
		{"strict, no canary node, x-canary: always", strict, 0, 0, always, canary.Canary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := canary.NewSplit(tc.rule, balancer.Empty, tc.available, tc.weight, "config")
			if got := s.Choose(balancer.Info{Request: tc.req}); got != tc.want {
				t.Fatalf("Choose = %v; want %v", got, tc.want)
			}
		})
	}
}

// canary: {disabled: true} turns the rule off and takes no other field.
func TestDisabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    canary.Config
		want string // "" means accepted, with no rule
	}{
		{"alone", canary.Config{Disabled: true}, ""},
		{"with weight", canary.Config{Disabled: true, Weight: 10}, "disabled: the canary rule is off, so weight cannot apply; remove it or disabled"},
		{"with several", canary.Config{Disabled: true, Selector: map[string]string{"v": "2"}, Header: "x", Strict: true, Rollback: &canary.Rollback{}},
			"disabled: the canary rule is off, so selector, header, strict and rollback cannot apply; remove them or disabled"},
		{"with every field", canary.Config{Disabled: true, Selector: map[string]string{"v": "2"}, Service: "s", Weight: 1, WeightKey: "w", Header: "x",
			Match: []canary.Match{{Header: "h", Value: "v"}}, HashOn: &hashkey.Spec{Header: "u"}, Strict: true, Rollback: &canary.Rollback{}},
			"so selector, service, weight, weight_key, header, match, hash_on, strict and rollback cannot apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.c.Validate()
			switch {
			case tc.want == "" && (err != nil || r != nil):
				t.Fatalf("Validate = %v, %v; want no rule and no error", r, err)
			case tc.want == "":
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate = %v; want %q", err, tc.want)
			case r != nil:
				t.Fatal("a rule with the error")
			}
		})
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
	var s canary.Stats
	j := canary.NewJudge(r, &s, nil)
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

// TestJudgeStartsWhereItsPredecessorLeftOff: stats outlive a config
// reload; the judge made then judges the requests from where the judge
// before it left off, and without one, those counted after it was made.
func TestJudgeStartsWhereItsPredecessorLeftOff(t *testing.T) {
	r := rule(t, canary.Config{Rollback: &canary.Rollback{MinRequests: 10}})
	feed := func(s *canary.Stats, canaryFails bool) {
		for range 100 {
			s.Record(canary.Stable, false, time.Millisecond)
			s.Record(canary.Canary, canaryFails, time.Millisecond)
		}
	}
	var s canary.Stats
	prev := canary.NewJudge(r, &s, nil)
	feed(&s, true)
	if reason := prev.Evaluate(&s); reason == "" {
		t.Fatal("a failing canary was not judged so")
	}
	feed(&s, false)
	if reason := canary.NewJudge(r, &s, prev).Evaluate(&s); reason != "" {
		t.Fatalf("the next judge judged again what its predecessor had: %s", reason)
	}
	feed(&s, true)
	j := canary.NewJudge(r, &s, nil)
	feed(&s, false)
	if reason := j.Evaluate(&s); reason != "" {
		t.Fatalf("a new judge judged the requests counted before it was made: %s", reason)
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

// BenchmarkChoose measures the per-request decision: the default rule with
// no tagged instance (every upstream without a canary), with a canary at
// weight 0, and a weighted random draw.
func BenchmarkChoose(b *testing.B) {
	req := httptest.NewRequest("GET", "/", nil)
	for _, bc := range []struct {
		name      string
		available int
		weight    float64
	}{
		{"default_no_canary", 0, 0},
		{"default_canary_weight_0", 1, 0},
		{"default_canary_weight_10", 1, 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := canary.NewSplit(canary.DefaultRule(), balancer.Empty, bc.available, bc.weight, "config")
			info := balancer.Info{Request: req}
			b.ReportAllocs()
			for b.Loop() {
				s.Choose(info)
			}
		})
	}
}

// TestFingerprint: a rule's fingerprint of a node set changes when the
// canary instances are re-labelled (their weight_key, or none left to
// carry it), and only then: not with their health, address, number, other
// labels or the stable nodes.
func TestFingerprint(t *testing.T) {
	r := rule(t, canary.Config{})
	instance := func(id string, healthy bool, meta map[string]string) *node.Node {
		return node.New(discovery.Instance{ID: id, Address: "h-" + id, Port: 1, Weight: 1, Healthy: healthy, Metadata: meta}, nil)
	}
	tagged := func(id, weight string) *node.Node {
		return instance(id, true, map[string]string{"canary": "true", "canary-weight": weight})
	}
	base := r.Fingerprint([]*node.Node{instance("a", true, nil), tagged("c1", "10"), tagged("c2", "10")})
	if base == "" {
		t.Fatal("no fingerprint for a set with canary instances")
	}
	for _, tc := range []struct {
		name  string
		nodes []*node.Node
		same  bool
	}{
		{"a canary instance unhealthy", []*node.Node{instance("a", true, nil), tagged("c1", "10"),
			instance("c2", false, map[string]string{"canary": "true", "canary-weight": "10"})}, true},
		{"another label changed", []*node.Node{instance("a", true, nil), tagged("c1", "10"),
			instance("c2", true, map[string]string{"canary": "true", "canary-weight": "10", "version": "2"})}, true},
		{"a canary instance moved", []*node.Node{instance("a", true, nil), tagged("c1", "10"),
			node.New(discovery.Instance{ID: "c2", Address: "elsewhere", Port: 2, Weight: 1, Healthy: true,
				Metadata: map[string]string{"canary": "true", "canary-weight": "10"}}, nil)}, true},
		{"one canary instance fewer", []*node.Node{instance("a", true, nil), tagged("c1", "10")}, true},
		{"one canary instance more", []*node.Node{tagged("c1", "10"), tagged("c2", "10"), tagged("c3", "10")}, true},
		{"a stable node re-labelled", []*node.Node{instance("a", true, map[string]string{"canary": "false"}), tagged("c1", "10")}, true},
		{"the weight re-tagged", []*node.Node{instance("a", true, nil), tagged("c1", "20"), tagged("c2", "20")}, false},
		{"one instance re-tagged", []*node.Node{instance("a", true, nil), tagged("c1", "10"), tagged("c2", "20")}, false},
		{"the weight label removed", []*node.Node{instance("a", true, nil), instance("c1", true, map[string]string{"canary": "true"})}, false},
	} {
		if got := r.Fingerprint(tc.nodes); (got == base) != tc.same {
			t.Errorf("%s: fingerprint %q, before %q; want the same: %v", tc.name, got, base, tc.same)
		}
	}
	if got := r.Fingerprint([]*node.Node{instance("a", true, nil)}); got != "" {
		t.Errorf("no canary instance: fingerprint %q; want \"\"", got)
	}
}
