package nacos

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// A server that comes back without its data (no persistent volume) knows
// neither the service nor the instance: the adapter's new client must
// register it again, with its values.
func TestServerRegistrationSurvivesRestartWithoutData(t *testing.T) {
	srv := nacostest.Start(t, nacostest.Config{Name: "fresh"})
	reg, _ := openReal(t, srv, "")
	svc := discoverytest.UniqueService(t)
	const port = 21097
	want := inst("app", port)
	want.Weight, want.Metadata = 4, map[string]string{"canary": "true"}
	listed := func() bool {
		for _, h := range srv.Instances(t, svc) {
			if h.Port == port && h.Healthy && h.Weight == 4 && h.Metadata["canary"] == "true" {
				return true
			}
		}
		return false
	}
	g, err := reg.(discovery.Registrar).Register(context.Background(), svc, want)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	status := func() discovery.RegistrationStatus { return g.(discovery.StatusReporter).Status() }
	wait := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > serverWait {
				t.Fatalf("%s: not within %v; status %+v", what, serverWait, status())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	wait("listed", listed)

	srv.RestartFresh(t)
	took := wait("listed again by the server that lost its data", listed)
	t.Logf("listed again %v after the server was back", took.Round(time.Millisecond))
	wait("status up, re-registered", func() bool { st := status(); return st.Up && st.Reregistrations >= 1 })
}
