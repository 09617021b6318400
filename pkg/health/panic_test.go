package health

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/pkg/node"
)

// roundTripFunc is an http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A probe round that panicked (in the HTTP client, or in the callback
// told of a verdict) ended the process. It is logged once with its
// stack; a panicking check neither passes nor fails the node, and a
// verdict whose callback panicked is passed on by the next round; the
// node is probed on.
func TestProbePanicSkipsTheRound(t *testing.T) {
	tests := []struct {
		name      string
		status    int  // the node's answer
		inCheck   bool // the check panics, else the first onChange
		wantDown  bool
		wantCalls int64 // onChange calls that returned
	}{
		{"the check panics: the node stays up", http.StatusOK, true, false, 0},
		{"onChange panics: called again next round", http.StatusServiceUnavailable, false, true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var probes atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				probes.Add(1)
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			c := &Config{Active: &Active{Path: "/healthz", Interval: 10 * time.Millisecond, HealthyThreshold: 1, UnhealthyThreshold: 1}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			var panicking atomic.Bool
			panicking.Store(true)
			var calls, returned atomic.Int64
			onChange := func() {
				if calls.Add(1) == 1 && !tc.inCheck {
					panic("injected: onChange panicked")
				}
				returned.Add(1)
			}
			logger, hook := logtest.NewNullLogger()
			p := NewProber(c, Transport{}, onChange, logrus.NewEntry(logger))
			if tc.inCheck {
				tr := p.client.Transport
				p.client.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
					if panicking.Load() {
						panic("injected: the check panicked")
					}
					return tr.RoundTrip(r)
				})
			}
			addr := srv.Listener.Addr().(*net.TCPAddr)
			n := node.New(discovery.Instance{ID: "a", Address: "127.0.0.1", Port: addr.Port, Weight: 1, Healthy: true}, nil)
			p.Update([]*node.Node{n})
			defer p.Stop()

			if tc.inCheck {
				waitUntil(t, "several panicking rounds", func() bool { return len(hook.AllEntries()) > 0 })
				time.Sleep(50 * time.Millisecond)
				h := &n.Stats.Health
				if !h.ActiveHealthy() || h.LastProbeError() != "" || calls.Load() != 0 {
					t.Fatalf("after panicking rounds: healthy %v, last error %q, onChange calls %d; want the node untouched",
						h.ActiveHealthy(), h.LastProbeError(), calls.Load())
				}
				panicking.Store(false)
			}
			waitUntil(t, "probes that reach the node", func() bool { return probes.Load() >= 3 })
			waitUntil(t, "the verdict", func() bool { return returned.Load() == tc.wantCalls })
			if down := !n.Stats.Health.ActiveHealthy(); down != tc.wantDown {
				t.Fatalf("down %v, want %v", down, tc.wantDown)
			}
			var logged []*logrus.Entry
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel {
					logged = append(logged, e)
				}
			}
			if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
				!strings.HasPrefix(logged[0].Data["panic"].(string), "injected: ") || logged[0].Data["node"] != "a" {
				t.Fatalf("errors logged: %v; want one, with the panic, its stack and the node", logged)
			}
		})
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
