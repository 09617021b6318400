package consul

import (
	"maps"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/remora-mesh/remora/discovery"
)

func entry(node, nodeAddr string, svc *api.AgentService, statuses ...string) *api.ServiceEntry {
	e := &api.ServiceEntry{Node: &api.Node{Node: node, Address: nodeAddr}, Service: svc}
	for i, st := range statuses {
		e.Checks = append(e.Checks, &api.HealthCheck{CheckID: string(rune('a' + i)), Status: st})
	}
	return e
}

func svc(id, addr string, port int, mod ...func(*api.AgentService)) *api.AgentService {
	s := &api.AgentService{ID: id, Service: "web", Address: addr, Port: port, Weights: api.AgentWeights{Passing: 1, Warning: 1}}
	for _, m := range mod {
		m(s)
	}
	return s
}

func TestToInstance(t *testing.T) {
	tagged := func(s *api.AgentService) {
		s.Tags = []string{"canary", "version=v2", "zone=z1", "=ignored", ""}
		s.Meta = map[string]string{"zone": "z2", "team": "pay"}
	}
	weights := func(p, w int) func(*api.AgentService) {
		return func(s *api.AgentService) { s.Weights = api.AgentWeights{Passing: p, Warning: w} }
	}
	maint := &api.ServiceEntry{Node: &api.Node{Node: "n1"}, Service: svc("w1", "10.0.0.1", 80),
		Checks: api.HealthChecks{{CheckID: "_service_maintenance:w1", Status: api.HealthCritical}}}

	tests := []struct {
		name        string
		e           *api.ServiceEntry
		includeWarn bool
		want        discovery.Instance
		ok          bool
		errContains string
	}{
		{name: "plain passing", e: entry("n1", "10.9.9.9", svc("w1", "10.0.0.1", 8080), api.HealthPassing),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 8080, Weight: 1, Healthy: true}, ok: true},
		{name: "no checks is passing", e: entry("n1", "10.9.9.9", svc("w1", "10.0.0.1", 8080)),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 8080, Weight: 1, Healthy: true}, ok: true},
		{name: "node address fallback", e: entry("n2", "10.9.9.9", svc("w1", "", 8080), api.HealthPassing),
			want: discovery.Instance{ID: "n2/w1", Address: "10.9.9.9", Port: 8080, Weight: 1, Healthy: true}, ok: true},
		{name: "ipv6 address", e: entry("n2", "", svc("w1", "::1", 8080)),
			want: discovery.Instance{ID: "n2/w1", Address: "::1", Port: 8080, Weight: 1, Healthy: true}, ok: true},
		{name: "passing weight", e: entry("n1", "", svc("w1", "10.0.0.1", 80, weights(7, 2)), api.HealthPassing),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: 7, Healthy: true}, ok: true},
		{name: "a weight of 2^32 is capped, not wrapped to 0 (drained)", e: entry("n1", "", svc("w1", "10.0.0.1", 80, weights(1<<32, 1))),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: MaxWeight, Healthy: true}, ok: true},
		{name: "a weight over the agent's bound is capped", e: entry("n1", "", svc("w1", "10.0.0.1", 80, weights(100000, 1))),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: MaxWeight, Healthy: true}, ok: true},
		{name: "a warning weight of 2^32+3 is capped", includeWarn: true, e: entry("n1", "", svc("w1", "10.0.0.1", 80, weights(1, 1<<32+3)), api.HealthWarning),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: MaxWeight, Healthy: true}, ok: true},
		{name: "unset weight is default", e: entry("n1", "", svc("w1", "10.0.0.1", 80, weights(0, 0))),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: discovery.DefaultWeight, Healthy: true}, ok: true},
		{name: "tags and meta become labels, meta wins", e: entry("n1", "", svc("w1", "10.0.0.1", 80, tagged)),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true,
				Metadata: map[string]string{"canary": "true", "version": "v2", "zone": "z2", "team": "pay"}}, ok: true},
		{name: "warning excluded by default", e: entry("n1", "", svc("w1", "10.0.0.1", 80), api.HealthPassing, api.HealthWarning)},
		{name: "warning included with its weight", includeWarn: true,
			e:    entry("n1", "", svc("w1", "10.0.0.1", 80, weights(10, 3)), api.HealthPassing, api.HealthWarning),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: 3, Healthy: true}, ok: true},
		{name: "warning weight 0 drains", includeWarn: true,
			e:    entry("n1", "", svc("w1", "10.0.0.1", 80, weights(10, 0)), api.HealthWarning),
			want: discovery.Instance{ID: "n1/w1", Address: "10.0.0.1", Port: 80, Weight: 0, Healthy: true}, ok: true},
		{name: "critical excluded", includeWarn: true, e: entry("n1", "", svc("w1", "10.0.0.1", 80), api.HealthPassing, api.HealthCritical)},
		{name: "maintenance excluded", includeWarn: true, e: maint},
		{name: "nil service", e: &api.ServiceEntry{Node: &api.Node{Node: "n1"}}},
		{name: "nil entry", e: nil},
		{name: "no port is skipped with a reason", e: entry("n1", "", svc("w1", "10.0.0.1", 0)), errContains: `"w1" on node "n1"`},
		{name: "no address at all is skipped", e: entry("n1", "", svc("w1", "", 80)), errContains: "empty address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := toInstance(tc.e, tc.includeWarn)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (err %v)", ok, tc.ok, err)
			}
			if (err != nil) != (tc.errContains != "") || (err != nil && !strings.Contains(err.Error(), tc.errContains)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errContains)
			}
			if ok && !got.Equal(tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestTagLabels(t *testing.T) {
	tests := []struct {
		tags []string
		want map[string]string
	}{
		{nil, map[string]string{}},
		{[]string{"canary"}, map[string]string{"canary": "true"}},
		{[]string{"version=v2"}, map[string]string{"version": "v2"}},
		{[]string{"a=b=c"}, map[string]string{"a": "b=c"}},
		{[]string{"empty="}, map[string]string{"empty": ""}},
		{[]string{"=x", ""}, map[string]string{}},
		{[]string{"v=1", "v=2"}, map[string]string{"v": "2"}},
		{[]string{"canary", "canary=false"}, map[string]string{"canary": "false"}},
	}
	for _, tc := range tests {
		got := map[string]string{}
		tagLabels(got, tc.tags)
		if !maps.Equal(got, tc.want) {
			t.Errorf("tagLabels(%q) = %v, want %v", tc.tags, got, tc.want)
		}
	}
}

func TestLabelsNilWhenEmpty(t *testing.T) {
	if got := labels(nil, map[string]string{}); got != nil {
		t.Fatalf("labels of nothing = %v, want nil", got)
	}
}

func TestToSetSkipsAndReports(t *testing.T) {
	set, skipped := toSet([]*api.ServiceEntry{
		entry("n1", "", svc("ok", "10.0.0.1", 80)),
		entry("n1", "", svc("noport", "10.0.0.1", 0)),
		entry("n1", "", svc("sick", "10.0.0.1", 81), api.HealthCritical),
	}, false)
	if len(set) != 1 || set[0].ID != "n1/ok" {
		t.Fatalf("set = %v, want only n1/ok", set)
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "noport") {
		t.Fatalf("skipped = %v, want one reason naming noport", skipped)
	}
}
