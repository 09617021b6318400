package dns

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/internal/duration"
	"github.com/remora-mesh/remora/internal/panics"
)

// A panic in a watcher's goroutine (here, in finding the resolver to ask)
// made the process die. It is reported by Next as an error, the set
// kept; the name is asked again after a pause, and the set comes back.
func TestWatcherPanicIsAnErrorAndTheWatcherGoesOn(t *testing.T) {
	o := Options{MinRefresh: duration.Duration(10 * time.Millisecond)}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	resolver := func() (resolvConfig, error) {
		if calls.Add(1) == 2 {
			panic("injected: the lookup panicked")
		}
		return resolvConfig{servers: []string{"127.0.0.1:1"}}, nil // never asked: the name is an address
	}
	logger, hook := logtest.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	reg := &Registry{resolver: resolver, opts: o, log: logrus.NewEntry(logger), ctx: ctx, cancel: cancel}
	defer reg.Close()
	w, err := reg.Watch(context.Background(), "10.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() ([]discovery.Instance, error) { return discoverytest.Next(t, w) }
	if set, err := next(); err != nil || len(set) != 1 || set[0].ID != "10.0.0.1:80" {
		t.Fatalf("first Next = %v, %v; want 10.0.0.1:80", set, err)
	}
	set, err := next()
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), "10.0.0.1") {
		t.Fatalf("Next after the panic = %v, %v; want a *panics.Error naming the name, no set", set, err)
	}
	if set, err := next(); err != nil || len(set) != 1 {
		t.Fatalf("after the restart: Next = %v, %v; want the set again", set, err)
	}
	var logged []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		logged[0].Data["panic"] != "injected: the lookup panicked" {
		t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
	}
}
