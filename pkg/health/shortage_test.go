package health

import (
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/node"
)

// A probe whose dial fails for want of Remora's own descriptors, ports or
// memory says nothing of the node: the node stays in service (it was
// marked down, and with every node probed at once, the whole upstream),
// and the round is logged as skipped.
func TestProbeSkippedWhenRemoraIsShortOfResources(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.EADDRNOTAVAIL} {
		t.Run(errno.Error(), func(t *testing.T) {
			c := &Config{Active: &Active{Path: "/healthz", Interval: 10 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			logger, hook := logtest.NewNullLogger()
			p := NewProber(c, Transport{}, func() {}, logrus.NewEntry(logger))
			var rounds atomic.Int64
			p.client.Transport = roundTripFunc(func(*http.Request) (*http.Response, error) {
				rounds.Add(1)
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)}
			})
			n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: 1, Weight: 1, Healthy: true}, nil)
			p.Update([]*node.Node{n})
			defer p.Stop()
			waitUntil(t, "several rounds", func() bool { return rounds.Load() >= 5 })
			if !n.Stats.Health.ActiveHealthy() {
				t.Fatal("the node was marked down for Remora's own shortage")
			}
			if e := hook.AllEntries(); len(e) != 1 || !strings.Contains(e[0].Message, "out of local resources") {
				t.Fatalf("logged %v; want one line saying the rounds are skipped", e)
			}
		})
	}
}
