package discoverytest

import (
	"testing"

	"github.com/remora-mesh/remora/discovery"
)

// The manual registry passes the suite itself; its "server" never stops.
func TestManualRegistryConformance(t *testing.T) {
	reg := NewRegistry()
	Conformance(t, Harness{
		Open: func(*testing.T) discovery.Registry { return &sharedRegistry{reg} },
		Register: func(_ *testing.T, svc string, in discovery.Instance) {
			reg.Upsert(svc, in)
		},
		Deregister: func(_ *testing.T, svc, id string) { reg.Delete(svc, id) },
		Restart:    func(*testing.T) {},
	})
}

// sharedRegistry keeps Close of one opener from stopping the others.
type sharedRegistry struct{ *Registry }

func (sharedRegistry) Close() error { return nil }
