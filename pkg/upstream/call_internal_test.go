package upstream

import (
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/ratelog"
	"github.com/remora-mesh/remora/pkg/node"
)

// Running out of local resources logs a warning naming the upstream, the
// node and the error at once, then at most one a minute, with how many
// were skipped: every request may meet it while it lasts.
func TestLocalResourcesLoggedOnceAMinute(t *testing.T) {
	localResourcesLog = ratelog.Limiter{}
	now := time.Now()
	logger, hook := logtest.NewNullLogger()
	u := New(Config{Name: "svc", Log: logrus.NewEntry(logger)})
	n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: 1}, nil)
	err := errors.New("out of local resources: dial tcp 127.0.0.1:1: socket: too many open files")
	for range 3 {
		logLocalResources(u, n, err, now)
	}
	entries := hook.AllEntries()
	if len(entries) != 1 {
		t.Fatalf("%d lines for three errors in a minute; want 1", len(entries))
	}
	if e := entries[0]; e.Level != logrus.WarnLevel || e.Data["upstream"] != "svc" || e.Data["node"] != "a" || e.Data[logrus.ErrorKey] != err {
		t.Fatalf("line %v %v; want a warning naming upstream svc, node a and the error", e.Level, e.Data)
	}
	logLocalResources(u, n, err, now.Add(ratelog.Interval)) // the minute is over
	if entries = hook.AllEntries(); len(entries) != 2 || entries[1].Data["skipped"] != 2 {
		t.Fatalf("after the minute: %d lines, the last %v; want 2, with skipped 2", len(entries), entries[len(entries)-1].Data)
	}
}
