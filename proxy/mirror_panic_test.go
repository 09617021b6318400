package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy"
)

// panickingPicks builds pickers whose Pick panics.
type panickingPicks struct{}

func (panickingPicks) Name() string                       { return "panicking" }
func (panickingPicks) Build([]*node.Node) balancer.Picker { return panickingPicks{} }
func (panickingPicks) Pick(balancer.Info) *node.Node      { panic("injected: Pick panicked") }

var _ interface {
	Pick(balancer.Info) *node.Node
} = panickingPicks{}

// A copy that panicked, on its own goroutine (here, in its target's
// balancer), ended the process. It is dropped and counted so; the primary
// requests are answered, and the panic is logged once with its stack.
func TestMirrorCopyPanicIsDropped(t *testing.T) {
	f := newFixtureCfg(t, upstream.Config{Name: "users"}, upstream.Config{Name: "shadow", Balancer: panickingPicks{}})
	f.set(t, "users", newBackend(t, "users", nil).instance())
	f.set(t, "shadow", newBackend(t, "shadow", nil).instance())
	f.proxy.SetRoutes(proxy.Route{Upstream: f.ups["users"], Mirror: validMirror(t, upstream.Mirror{Upstream: "shadow", Percent: 100})},
		proxy.Route{Upstream: f.ups["shadow"]})
	const n = 5
	for i := range n {
		if resp, _ := f.get(t, "users", "/"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	m := f.ups["users"].Metrics()
	waitUntil(t, 5*time.Second, "every copy dropped", func() bool { return m.MirrorDropped.Load() == n })
	if m.Mirrored.Load() != n {
		t.Fatalf("%d mirrored; want %d", m.Mirrored.Load(), n)
	}
	var logged []*logrus.Entry
	for _, e := range f.log.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || logged[0].Data["panic"] != "injected: Pick panicked" || logged[0].Data["upstream"] != "users" ||
		!strings.Contains(logged[0].Data["stack"].(string), "mirror_panic_test.go") {
		t.Fatalf("errors logged: %v; want one, with the panic, its stack and the upstream", logged)
	}
}
