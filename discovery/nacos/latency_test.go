package nacos

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/pkg/upstream"
)

// Push latency: instances registered and deregistered by a separate
// nacos-sdk-go client reach (and leave) the live node set of an upstream
// fed by the adapter. The acceptance bound is 2 s; the median is logged.
// Polaris turns registrations into pushes on a 1 s tick, so expect about
// half a second to a second.
func TestServerPushLatency(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := uniqueService(t)
	w := watchReal(t, reg, svc)
	u := upstream.New(upstream.Config{Name: svc})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx, w) }()
	defer func() { cancel(); <-done }()
	waitSnapshot(t, u, "the first (empty) set", func(s *upstream.Snapshot) bool { return s.Synced })

	nc := srv.NewClient(t) // the registering application
	const rounds = 4
	var added, removed []time.Duration
	for i := range rounds {
		p := vo.RegisterInstanceParam{Ip: "127.0.0.1", Port: uint64(21100 + i), Weight: 1, Enable: true, Healthy: true,
			ServiceName: svc, Ephemeral: true}
		start := time.Now()
		for attempt := 1; ; attempt++ { // see nacostest's register: Polaris refuses a concurrent duplicate
			ok, err := nc.RegisterInstance(p)
			if ok && err == nil {
				break
			}
			if attempt == 5 {
				t.Fatalf("registering: ok=%v, %v", ok, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		waitSnapshot(t, u, "the registered instance", func(s *upstream.Snapshot) bool { return snapPorts(s)[int(p.Port)] })
		added = append(added, time.Since(start))

		start = time.Now()
		if ok, err := nc.DeregisterInstance(vo.DeregisterInstanceParam{Ip: p.Ip, Port: p.Port, ServiceName: svc, Ephemeral: true}); !ok || err != nil {
			t.Fatalf("deregistering: ok=%v, %v", ok, err)
		}
		waitSnapshot(t, u, "the instance gone", func(s *upstream.Snapshot) bool { return len(s.Nodes) == 0 })
		removed = append(removed, time.Since(start))
	}
	all := append(slices.Clone(added), removed...)
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(all)
	median := all[len(all)/2]
	t.Logf("push latency, registration by a separate nacos-sdk-go client to the upstream's live set: "+
		"median %v (registrations: median %v, max %v; deregistrations: median %v, max %v; %d each)",
		median.Round(time.Millisecond), added[rounds/2].Round(time.Millisecond), added[rounds-1].Round(time.Millisecond),
		removed[rounds/2].Round(time.Millisecond), removed[rounds-1].Round(time.Millisecond), rounds)
	if median > 2*time.Second {
		t.Errorf("median push latency %v; the acceptance bound is 2s", median)
	}
}
