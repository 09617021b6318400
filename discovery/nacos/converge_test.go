package nacos

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/vo"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/nacos/nacostest"
)

// instanceHTTP sends one request of the Nacos v1 instance API, as an
// operator's console or script does, and wants "ok" back.
func instanceHTTP(t *testing.T, srv *nacostest.Server, method string, form url.Values) {
	t.Helper()
	u := "http://" + srv.Addr() + "/nacos/v1/ns/instance?" + form.Encode()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("%s %s: HTTP %d: %s", method, u, resp.StatusCode, b)
	}
}

// Someone else changes the instance Remora registered while the server
// and Remora's connection stay up: an operator updates its weight or
// metadata, or deletes it, over the HTTP API; another client registers its
// address and port with other values. The registration converges back on
// what Remora registered within a few read-backs.
func TestServerRegistrationConvergesAfterSomeoneElseChangesIt(t *testing.T) {
	srv := polaris(t)
	reg, _ := openReal(t, srv, "", func(o *Options) {
		o.tune = func(r *registry) { r.readBack, r.readBackGrace = 200*time.Millisecond, time.Second }
	})
	svc := discoverytest.UniqueService(t)
	const port = 21091
	want := inst("app", port)
	want.Weight, want.Metadata = 5, map[string]string{"canary": "true", "version": "v2"}
	holds := func() (bool, string) {
		for _, h := range srv.Instances(t, svc) {
			if h.IP == want.Address && h.Port == port {
				ok := h.Weight == float64(want.Weight) && h.Healthy && h.Enabled && maps.Equal(labels(h.Metadata), want.Metadata)
				return ok, fmt.Sprintf("%+v", h)
			}
		}
		return false, "not listed"
	}
	g, err := reg.(discovery.Registrar).Register(context.Background(), svc, want)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Deregister(context.Background())
	status := func() discovery.RegistrationStatus { return g.(discovery.StatusReporter).Status() }
	wait := func(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > d {
				_, why := holds()
				t.Fatalf("%s: not within %v; the server lists %s, status %+v", what, d, why, status())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	wait(t, serverWait, "registered", func() bool { ok, _ := holds(); return ok })

	// another registers Remora's address and port by a client of its own,
	// as another process (or a script using the SDK) would: Polaris keys an
	// instance by address and port, so it replaces Remora's values.
	another := func(weight float64, meta map[string]string) func(t *testing.T) {
		return func(t *testing.T) {
			other := srv.NewClient(t)
			p := vo.RegisterInstanceParam{Ip: want.Address, Port: port, Weight: weight, Enable: true, Healthy: true,
				Metadata: meta, ServiceName: svc, GroupName: nacostest.DefaultGroup, Ephemeral: true}
			if ok, err := nacostest.RegisterInstance(other, p); err != nil || !ok {
				t.Fatalf("registering with the other client: %v %v", ok, err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		change func(t *testing.T)
	}{
		{"deleted over HTTP", func(t *testing.T) {
			instanceHTTP(t, srv, http.MethodDelete, url.Values{"serviceName": {svc}, "groupName": {nacostest.DefaultGroup},
				"ip": {want.Address}, "port": {fmt.Sprint(port)}, "ephemeral": {"true"}})
		}},
		{"weight changed by another client", another(1, maps.Clone(want.Metadata))},
		{"metadata changed by another client", another(float64(want.Weight), map[string]string{"canary": "false"})},
		{"label added by another client", another(float64(want.Weight), map[string]string{"canary": "true", "version": "v2", "extra": "x"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := status().Reregistrations
			tc.change(t)
			// The re-registration shows the change took and was noticed.
			took := wait(t, serverWait, "converged back", func() bool {
				ok, _ := holds()
				st := status()
				return ok && st.Up && st.Reregistrations > before
			})
			t.Logf("converged back %v after the change", took.Round(time.Millisecond))
		})
	}
}
