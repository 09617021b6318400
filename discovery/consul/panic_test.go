package consul

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// panicking is a healthClient whose call number at panics; the others go
// to the client it wraps.
type panicking struct {
	healthClient
	calls atomic.Int32
	at    int32
}

func (p *panicking) Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	if p.calls.Add(1) == p.at {
		panic("injected: the client panicked")
	}
	return p.healthClient.Service(service, tag, passingOnly, q)
}

// A panic in the watcher's goroutine (here, in the client's call) made
// the process die. It is reported by Next as an error, the set kept;
// the watcher starts again with a fresh read, and the set comes back.
func TestWatcherPanicIsAnErrorAndTheWatcherGoesOn(t *testing.T) {
	f := newFixture(t, Options{}, func(r *registry) { r.client = &panicking{healthClient: r.client, at: 2} })
	a := entry("n1", "", svc("a", "10.0.0.1", 80))
	f.call().reply <- ok(10, a)
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("first Next: %v %v", set, err)
	}
	// The second query panics.
	set, err := f.next()
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), `"web"`) {
		t.Fatalf("Next after the panic = %v, %v; want a *panics.Error naming the service, no set", set, err)
	}
	c := f.call()
	if c.q.WaitIndex != 0 {
		t.Fatalf("query after the panic: WaitIndex %d, want 0 (a fresh read)", c.q.WaitIndex)
	}
	if s := f.clock.takeSleeps(); len(s) == 0 || s[len(s)-1] != discovery.PanicPause {
		t.Fatalf("sleeps %v; want the last to be the pause after a panic, %v", s, discovery.PanicPause)
	}
	c.reply <- ok(11, a)
	if set, err := f.next(); err != nil || ids(set) != "n1/a" {
		t.Fatalf("after the restart: Next = %v, %v; want the set again", set, err)
	}
	var logged []*logrus.Entry
	for _, e := range f.logs.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		logged[0].Data["panic"] != "injected: the client panicked" || logged[0].Data["service"] != "web" {
		t.Fatalf("errors logged: %v; want one, with the panic, its stack and the service", logged)
	}
}
