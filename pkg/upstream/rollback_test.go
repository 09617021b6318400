package upstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/canary"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// rollbackRule is the default canary rule with an automatic rollback that
// judges the pools every 20ms, over at least 10 requests each.
func rollbackRule(t *testing.T) *canary.Rule {
	t.Helper()
	c := canary.Config{Weight: 50, Rollback: &canary.Rollback{Window: 20 * time.Millisecond, MinRequests: 10}}
	r, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// canaryInst is an instance tagged canary=true with a canary-weight label.
func canaryInst(id string, port int, weight string) discovery.Instance {
	in := inst(id, port)
	in.Metadata = map[string]string{"canary": "true", "canary-weight": weight}
	return in
}

// record counts n requests in each pool, all of the canary's failed when
// canaryFails.
func record(u *upstream.Upstream, n int, canaryFails bool) {
	for range n {
		u.CanaryStats().Record(canary.Stable, false, time.Millisecond)
		u.CanaryStats().Record(canary.Canary, canaryFails, time.Millisecond)
	}
}

// waitRollback waits until u's automatic rollback is in force, or not, as
// want says, and published as the canary's weight.
func waitRollback(t *testing.T, u *upstream.Upstream, want bool) {
	t.Helper()
	waitSnapshot(t, u, map[bool]string{true: "rolled back", false: "not rolled back"}[want], func(s *upstream.Snapshot) bool {
		reason, _ := u.RolledBack()
		return (reason != "") == want && s.Canary != nil && (s.Canary.WeightFrom == "rollback") == want
	})
}

// TestRollbackHoldsUntilTheCanaryIsRelabelled: an automatic rollback holds
// while the canary instances keep their labels, whatever else happens to
// them (their registry health, address, number, or all of them leaving the
// registry and coming back), and is cleared when they are re-labelled.
func TestRollbackHoldsUntilTheCanaryIsRelabelled(t *testing.T) {
	u, _, set := run(t, upstream.Config{Name: "svc", Canary: rollbackRule(t)})
	stable, c1, c2 := inst("a", 1), canaryInst("c1", 3, "10"), canaryInst("c2", 4, "10")
	set(stable, c1, c2)
	record(u, 50, true)
	waitRollback(t, u, true)

	sick := c2
	sick.Healthy = false
	moved := c1
	moved.Port = 13
	for _, step := range []struct {
		name string
		set  []discovery.Instance
	}{
		{"a canary instance unhealthy in the registry", []discovery.Instance{stable, c1, sick}},
		{"healthy again", []discovery.Instance{stable, c1, c2}},
		{"a canary instance added", []discovery.Instance{stable, c1, c2, canaryInst("c3", 5, "10")}},
		{"a canary instance removed", []discovery.Instance{stable, c1}},
		{"a canary instance moved", []discovery.Instance{stable, moved}},
		{"every canary instance gone", []discovery.Instance{stable}},
		{"back with the same labels", []discovery.Instance{stable, c1, c2}},
	} {
		s := set(step.set...)
		if reason, _ := u.RolledBack(); reason == "" || s.Canary.WeightFrom != "rollback" {
			t.Fatalf("%s: weight %v from %s; the rollback was cleared though no canary instance was re-labelled",
				step.name, s.Canary.Weight, s.Canary.WeightFrom)
		}
	}

	s := set(stable, canaryInst("c1", 3, "20"), canaryInst("c2", 4, "20"))
	if reason, _ := u.RolledBack(); reason != "" || s.Canary.Weight != 20 || s.Canary.WeightFrom != "registry" {
		t.Fatalf("re-tagged canary-weight 20: weight %v from %s, rollback %q; want the rollback cleared",
			s.Canary.Weight, s.Canary.WeightFrom, reason)
	}
}

// runReloadable runs u on reg's watch of its service until stop is called (a
// reload stops the upstream it replaces) or the test ends.
func runReloadable(t *testing.T, u *upstream.Upstream, reg *discoverytest.Registry) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := reg.Watch(ctx, u.Service())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { u.Run(ctx, w); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// TestReloadJudgesOnlyNewRequests: a config reload keeps an automatic
// rollback in force, and the upstream it makes judges only the requests
// after it: a canary an operator resumed, which is healthy since, is not
// rolled back again on the requests judged before the reload.
func TestReloadJudgesOnlyNewRequests(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc", inst("a", 1), canaryInst("c1", 3, "10"))
	u := upstream.New(upstream.Config{Name: "svc", Canary: rollbackRule(t)})
	stop := runReloadable(t, u, reg)
	record(u, 50, true)
	waitRollback(t, u, true)

	stop()
	u = upstream.New(upstream.Config{Name: "svc", Canary: rollbackRule(t), Previous: u})
	stop = runReloadable(t, u, reg)
	waitRollback(t, u, true)
	if !u.ResumeCanary() {
		t.Fatal("no rollback to resume after the reload")
	}
	waitRollback(t, u, false)
	record(u, 50, false)

	stop()
	u = upstream.New(upstream.Config{Name: "svc", Canary: rollbackRule(t), Previous: u})
	runReloadable(t, u, reg)
	record(u, 50, false)
	time.Sleep(10 * rollbackRule(t).Config().Rollback.Window)
	if reason, _ := u.RolledBack(); reason != "" {
		t.Fatalf("a reload rolled back a resumed canary, healthy since, on requests judged before it: %s", reason)
	}
}
