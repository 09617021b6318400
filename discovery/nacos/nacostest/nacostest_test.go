package nacostest

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/testproc"
)

func TestMain(m *testing.M) { Main(m) }

func TestFindScript(t *testing.T) {
	p, err := testproc.FindScript(script)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
}

// waitHosts waits until cond holds for the instances of service that the
// server lists (Instances), by port.
func waitHosts(t *testing.T, s *Server, service string, cond func(map[int]Host) bool) map[int]Host {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := map[int]Host{}
		for _, host := range s.Instances(t, service) {
			h[host.Port] = host
		}
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for the instances of %s: have %v", service, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The server's life cycle: registrations over gRPC and HTTP reach it, Kill
// and Resume keep the data and register the gRPC instances again, and
// after Close the process has exited and its directory is removed.
func TestServerLifecycle(t *testing.T) {
	s, err := New(Config{Name: "lifecycle"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, port := range []int{s.HTTPPort(), s.GRPCPort()} {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err != nil {
			t.Fatalf("port %d: %v", port, err)
		} else {
			c.Close()
		}
	}
	a := discovery.Instance{ID: "a", Address: "127.0.0.1", Port: 9001, Weight: 3, Healthy: true, Metadata: map[string]string{"k": "v"}}
	b := discovery.Instance{ID: "b", Address: "127.0.0.1", Port: 9002, Weight: 1, Healthy: false}
	s.Register(t, "svc", a, Cluster("c1"))
	s.RegisterHTTP(t, "svc", b, Disabled())
	has9001 := func(h map[int]Host) bool { _, ok := h[9001]; return ok }
	h := waitHosts(t, s, "svc", has9001)
	if h[9001].ClusterName != "c1" || h[9001].Weight != 3 || h[9001].Metadata["k"] != "v" {
		t.Fatalf("a registered as %v", h[9001])
	}

	s.Kill()
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, s, "svc", has9001)

	s.Deregister(t, "svc", "a")
	s.Deregister(t, "svc", "b")
	waitHosts(t, s, "svc", func(h map[int]Host) bool { return len(h) == 0 })

	s.mu.Lock()
	exited := s.done
	s.mu.Unlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("the server process has not exited after Close")
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Fatalf("state directory %s: %v; want it removed", s.Dir(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Resume(); err == nil {
		t.Fatal("Resume after Close succeeded")
	}
}
