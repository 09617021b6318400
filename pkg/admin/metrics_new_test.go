package admin_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// richSource is a source with routes and a reload outcome.
type richSource struct {
	source
	at time.Time
}

func (s *richSource) Routes() []admin.RouteStatus {
	return []admin.RouteStatus{{Listener: "outbound", Name: "api", Upstream: "users", Requests: 7, RateLimited: 2}}
}

func (s *richSource) LastReload() (bool, time.Time) { return true, s.at }

func (s *richSource) LogLinesDropped() map[string]uint64 {
	return map[string]uint64{"access": 5, "process": 0}
}

// The metrics of this round: build info, the last reload, routes, local
// answers by reason, retries by cause, gRPC codes, zones and mirrors.
func TestMetricsOfReasonsRetriesRoutesAndBuild(t *testing.T) {
	reg := discoverytest.NewRegistry()
	one := 1
	loc := &upstream.Locality{Zone: "a", MinClusterSize: &one}
	if err := loc.Validate(); err != nil {
		t.Fatal(err)
	}
	users := upstream.New(upstream.Config{Name: "users", Locality: loc})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg.Set("users", discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Metadata: map[string]string{"zone": "a"}})
	w, _ := reg.Watch(ctx, "users")
	go users.Run(ctx, w)
	for users.Snapshot().Version == 0 {
		time.Sleep(time.Millisecond)
	}
	var c upstream.Call
	if err := c.Begin(context.Background(), users, balancer.Info{}); err != nil {
		t.Fatal(err)
	}
	_ = c.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt { return upstream.Attempt{Status: 200, GRPC: 14 + 1} }, func() {})
	c.End(false)
	users.Metrics().Mirrored.Add(3)

	src := &richSource{source: source{table: upstream.NewTable(users)}, at: time.Unix(1700000000, 0)}
	h := admin.Handler(src, admin.Options{Metrics: admin.MetricsOptions{Build: admin.Build{Version: "1.2.3", Revision: "abc", GoVersion: "go1.26"}}})
	_, body := get(t, h, "/metrics")
	for _, want := range []string{
		`remora_build_info{go_version="go1.26",revision="abc",version="1.2.3"} 1`,
		`remora_config_last_reload_successful 1`,
		`remora_config_last_reload_success_timestamp_seconds 1.7e+09`,
		`remora_route_requests_total{listener="outbound",route="api",upstream="users"} 7`,
		`remora_route_rate_limited_total{listener="outbound",route="api",upstream="users"} 2`,
		`remora_local_answers_total{reason="no_healthy_node",upstream="users"} 0`,
		`remora_retries_total{cause="connect_failure",upstream="users"} 0`,
		`remora_grpc_responses_total{code="UNAVAILABLE",upstream="users"} 1`,
		`remora_zone_requests_total{upstream="users",zone="local"} 1`,
		`remora_mirrored_requests_total{upstream="users"} 3`,
		`remora_log_lines_dropped_total{log="access"} 5`,
		`remora_log_lines_dropped_total{log="process"} 0`,
		`remora_request_duration_seconds_bucket{pool="stable",upstream="users",le="0.0001"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	_, routes := get(t, h, "/routes")
	var rs []admin.RouteStatus
	if err := json.Unmarshal([]byte(routes), &rs); err != nil || len(rs) != 1 || rs[0].Requests != 7 {
		t.Fatalf("/routes: %s (%v)", routes, err)
	}
	_, ups := get(t, h, "/upstreams/users")
	if !strings.Contains(ups, `"locality": {`) || !strings.Contains(ups, `"zone": "a"`) {
		t.Fatalf("/upstreams/users lacks the locality split: %s", ups)
	}
}
