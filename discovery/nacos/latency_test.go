package nacos

import (
	"slices"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
	"github.com/remora-mesh/remora/pkg/upstream"
)

// Push latency: an instance registered by a separate nacos-sdk-go client
// (a new one each round, as an application starting up) reaches the live
// node set of an upstream fed by the adapter. The acceptance bound is 2 s;
// the median is logged. Polaris turns registrations into pushes on a 1 s
// tick, so expect up to about a second.
func TestServerPushLatency(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	w := watch(t, reg, svc)
	u := runUpstream(t, svc, w)
	waitSnapshot(t, u, "the first (empty) set", func(s *upstream.Snapshot) bool { return s.Synced })

	const rounds = 5
	var lat []time.Duration
	for i := range rounds {
		nc := srv.NewClient(t) // the registering application
		p := vo.RegisterInstanceParam{Ip: "127.0.0.1", Port: uint64(21100 + i), Weight: 1, Enable: true, Healthy: true,
			ServiceName: svc, Ephemeral: true}
		start := time.Now()
		if ok, err := nacostest.RegisterInstance(nc, p); !ok || err != nil {
			t.Fatalf("registering: ok=%v, %v", ok, err)
		}
		waitSnapshot(t, u, "the registered instance", func(s *upstream.Snapshot) bool { return snapPorts(s)[int(p.Port)] })
		lat = append(lat, time.Since(start))
	}
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	median := sorted[rounds/2]
	t.Logf("push latency, registration by a separate nacos-sdk-go client to the upstream's live set, %d rounds: median %v, min %v, max %v",
		rounds, median.Round(time.Millisecond), sorted[0].Round(time.Millisecond), sorted[rounds-1].Round(time.Millisecond))
	if median > 2*time.Second {
		t.Errorf("median push latency %v; the acceptance bound is 2s (all: %v)", median, lat)
	}
}
