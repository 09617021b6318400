package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/admin"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/register"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// lintSource is a richSource with a registration.
type lintSource struct{ richSource }

func (s *lintSource) Registration() (admin.Registration, bool) {
	return admin.Registration{Registry: "main", Status: register.Status{Service: "app", ID: "app-1", Registered: true}, Reregistrations: 1}, true
}

// /metrics passes the Prometheus client library's linter (the checks of
// promtool check metrics) with every family present: per-node series,
// canary, locality, routes, build info and the last reload.
func TestMetricsLint(t *testing.T) {
	reg := discoverytest.NewRegistry()
	one := 1
	loc := &upstream.Locality{Zone: "a", MinClusterSize: &one}
	if err := loc.Validate(); err != nil {
		t.Fatal(err)
	}
	users := upstream.New(upstream.Config{Name: "users", Locality: loc, Canary: canary.DefaultRule()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg.Set("users",
		discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true, Metadata: map[string]string{"zone": "a"}},
		discovery.Instance{ID: "b", Address: "10.0.0.2", Port: 80, Weight: 1, Healthy: true, Metadata: map[string]string{"zone": "a", "canary": "true", "canary-weight": "10"}},
	)
	w, _ := reg.Watch(ctx, "users")
	go users.Run(ctx, w)
	for users.Snapshot().Version == 0 {
		time.Sleep(time.Millisecond)
	}
	var c upstream.Call
	if err := c.Begin(context.Background(), users, balancer.Info{}); err != nil {
		t.Fatal(err)
	}
	_ = c.Attempts(context.Background(), true, func(*node.Node, int) upstream.Attempt { return upstream.Attempt{Status: 200, GRPC: 1} }, func() {})
	c.End(false)
	users.Metrics().Mirrored.Add(1)

	src := &lintSource{richSource{source: source{table: upstream.NewTable(users)}, at: time.Unix(1700000000, 0)}}
	on := admin.Options{Metrics: admin.MetricsOptions{NodeLabels: true, Build: admin.Build{Version: "1.2.3", Revision: "abc", GoVersion: "go1.26"}}}
	_, body := get(t, admin.Handler(src, on), "/metrics")
	for _, family := range []string{"remora_node_requests_total", "remora_canary_weight_percent", "remora_zone_requests_total", "remora_build_info", "remora_route_requests_total", "remora_mirrored_requests_total", "remora_registration_up"} {
		if !strings.Contains(body, "# TYPE "+family+" ") {
			t.Errorf("/metrics lacks %s, so the lint does not see it", family)
		}
	}
	for _, p := range lint(t, body) {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	// The lint does find what it is meant to: a family without help in
	// a non-base unit.
	bad := "# TYPE remora_wait_milliseconds gauge\nremora_wait_milliseconds 1\n"
	if len(lint(t, bad)) == 0 {
		t.Fatalf("promlint found nothing wrong in %q", bad)
	}
}

func lint(t *testing.T, exposition string) []promlint.Problem {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(exposition)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	return problems
}
