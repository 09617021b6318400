package tcp_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/pkg/balancer"
	"github.com/remora-mesh/remora/pkg/node"
	"github.com/remora-mesh/remora/pkg/upstream"
	"github.com/remora-mesh/remora/proxy/tcp"
)

// panicReads is a connection whose Read panics.
type panicReads struct{ net.Conn }

func (panicReads) Read([]byte) (int, error) { panic("injected: Read panicked") }

// firstPanicsListener hands out its first connection as a panicReads.
type firstPanicsListener struct {
	net.Listener
	accepted atomic.Int32
}

func (l *firstPanicsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.accepted.Add(1) == 1 {
		return panicReads{c}, nil
	}
	return c, err
}

// firstPickPanics builds pickers whose first Pick, of all, panics.
type firstPickPanics struct{ picks *atomic.Int32 }

func (firstPickPanics) Name() string { return "first-pick-panics" }

func (b firstPickPanics) Build(nodes []*node.Node) balancer.Picker {
	return picker{picks: b.picks, nodes: nodes}
}

type picker struct {
	picks *atomic.Int32
	nodes []*node.Node
}

func (p picker) Pick(balancer.Info) *node.Node {
	if p.picks.Add(1) == 1 {
		panic("injected: Pick panicked")
	}
	if len(p.nodes) == 0 {
		return nil
	}
	return p.nodes[0]
}

// echoNode is a node that echoes; it ends with the test.
func echoNode(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// A panic while a connection was handled (in the relay's copy, in the
// server's Lookup, in the balancer once the call began) ended the
// process, and every connection with it. It closes that connection only:
// the next one is relayed, the panic is logged once with its stack, and
// a call that began is ended (with max_requests: 1, the next connection
// would be refused otherwise).
func TestPanicClosesTheConnectionOnly(t *testing.T) {
	tests := []struct {
		name       string
		lookup     bool // Lookup panics, first
		pick       bool // the balancer panics, first
		firstRead  bool // the first connection's reads panic
		wantReason string
	}{
		{name: "a relay direction", firstRead: true, wantReason: "injected: Read panicked"},
		{name: "the lookup", lookup: true, wantReason: "injected: Lookup panicked"},
		{name: "the balancer, after the call began", pick: true, wantReason: "injected: Pick panicked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := echoNode(t)
			cfg := upstream.Config{Name: "svc"}
			if tc.pick {
				cfg.Balancer = firstPickPanics{picks: new(atomic.Int32)}
				pol := upstream.Policy{CircuitBreaker: upstream.CircuitBreaker{MaxRequests: 1}}
				if err := pol.Validate(); err != nil {
					t.Fatal(err)
				}
				cfg.Policy = &pol
			}
			u := startUpstream(t, cfg, addr)
			logger, hook := logtest.NewNullLogger()
			var lookups atomic.Int32
			s := &tcp.Server{Log: logrus.NewEntry(logger), Lookup: func() *upstream.Upstream {
				if lookups.Add(1) == 1 && tc.lookup {
					panic("injected: Lookup panicked")
				}
				return u
			}}
			real, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var ln net.Listener = real
			if tc.firstRead {
				ln = &firstPanicsListener{Listener: real}
			}
			done := make(chan error, 1)
			go func() { done <- s.Serve(ln) }()
			defer func() {
				s.Close()
				<-done
			}()

			first, err := net.Dial("tcp", real.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			first.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = first.Write([]byte("ping"))
			if n, err := io.ReadFull(first, make([]byte, 4)); err == nil || isTimeout(err) {
				t.Fatalf("the connection whose handling panicked: read %d bytes, %v; want it closed", n, err)
			}
			// Its call ended before it closed: a client that connects
			// again at once must not find it counted against
			// max_requests (the next connection was refused, now and
			// then, in a loaded run).
			if tc.pick {
				if n := u.Active(); n != 0 {
					t.Fatalf("%d calls in flight when the client saw its connection closed; want the call ended first", n)
				}
			}

			second, err := net.Dial("tcp", real.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			second.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := second.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(second, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("the next connection: %q %v; want it relayed", buf, err)
			}
			// The panic is logged once its relay has ended both ways,
			// which may be after the client saw its connection close
			// and the next one relayed.
			var logged []*logrus.Entry
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				logged = logged[:0]
				for _, e := range hook.AllEntries() {
					if e.Level == logrus.ErrorLevel {
						logged = append(logged, e)
					}
				}
				if len(logged) > 0 || time.Now().After(deadline) {
					break
				}
			}
			if len(logged) != 1 || logged[0].Data["panic"] != tc.wantReason || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") {
				t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
			}
		})
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// startUpstream runs an upstream of cfg whose one node is at addr, and
// waits until it has it.
func startUpstream(t *testing.T, cfg upstream.Config, addr string) *upstream.Upstream {
	t.Helper()
	reg := discoverytest.NewRegistry()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	reg.Set("svc", discovery.Instance{ID: "n1", Address: host, Port: p, Weight: 1, Healthy: true})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u := upstream.New(cfg)
	w, _ := reg.Watch(ctx, "svc")
	go u.Run(ctx, w)
	for u.Snapshot().Available == 0 {
		time.Sleep(time.Millisecond)
	}
	return u
}
