package main

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/remora-mesh/remora/pkg/node"
)

// A gRPC node answering UNAVAILABLE: each such call is retried on the
// other node (the client sees none of them), the node is ejected by the
// detector, and the upstream's metrics count the calls by gRPC code.
func TestGRPCUnavailableIsRetriedAndEjected(t *testing.T) {
	b1, b2 := startGRPC(t, "g1"), startGRPC(t, "g2")
	b2.unavailable.Store(true)
	a := startRemora(t, staticConfig([]string{b1.addr, b2.addr}, `    protocol: h2c
    health: {passive: {consecutive_gateway_failure: 3, base_ejection_time: 1h, max_ejection_percent: 50}}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	conn, err := grpc.NewClient(a.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(conn)
	for i := range 10 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d: %v; want it retried on g1", i, err)
		}
	}
	if b2.calls.Load() == 0 {
		t.Fatal("g2 got no call: nothing was retried")
	}
	eventually(t, 2*time.Second, "g2 ejected", func() bool {
		for _, n := range a.Table().Lookup("svc").Snapshot().Nodes {
			if n.ID == "n2" {
				return n.Stats.Health.Ejected()
			}
		}
		return false
	})

	// Both nodes answer UNAVAILABLE: the client gets it, and it is counted.
	b1.unavailable.Store(true)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("with every node unavailable: %v", err)
	}
	m := a.Table().Lookup("svc").Metrics()
	if ok, unavailable := m.GRPC[codes.OK].Load(), m.GRPC[codes.Unavailable].Load(); ok != 10 || unavailable != 1 {
		t.Fatalf("gRPC codes counted: OK %d, UNAVAILABLE %d; want 10 and 1", ok, unavailable)
	}
	if m.Retries.Load() == 0 {
		t.Fatal("no retry counted")
	}
}

// startResettingGRPC is a node that answers every gRPC call with its
// headers and then resets the stream (RST_STREAM), with no grpc-status,
// after the proxy has passed the headers on.
func startResettingGRPC(t *testing.T) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond) // past the proxy's wait for a quick verdict
		panic(http.ErrAbortHandler)       // the server resets the stream
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// A gRPC stream that its node resets after the headers went to the client
// is a failure of the node, not a success: the client sees it fail
// (INTERNAL), the metrics count it so, and outlier detection ejects the
// node as for any reset.
func TestGRPCStreamResetAfterHeadersIsAFailure(t *testing.T) {
	good, resetting := startGRPC(t, "g1"), startResettingGRPC(t)
	a := startRemora(t, staticConfig([]string{good.addr, resetting}, `    protocol: h2c
    balancer: round_robin
    retry: {max_attempts: 1}
    health: {passive: {consecutive_gateway_failure: 3, base_ejection_time: 1h, max_ejection_percent: 50}}
`))
	eventually(t, 5*time.Second, "ready", func() bool { return a.Table().Lookup("svc").Snapshot().Available == 2 })
	conn, err := grpc.NewClient(a.addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	failed := 0
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			failed++
		}
		cancel()
	}
	if failed < 3 {
		t.Fatalf("%d of 8 calls failed; want the resetting node's", failed)
	}
	var n2 *node.Node
	for _, n := range a.Table().Lookup("svc").Snapshot().Nodes {
		if n.ID == "n2" {
			n2 = n
		}
	}
	if n2 == nil || !n2.Stats.Health.Ejected() {
		t.Fatal("the node that resets its streams was not ejected")
	}
	if f := n2.Stats.Failures.Load(); f < 3 {
		t.Fatalf("the node's failures: %d; want each reset counted", f)
	}
	m := a.Table().Lookup("svc").Metrics()
	if internal, ok := m.GRPC[codes.Internal].Load(), m.GRPC[codes.OK].Load(); internal != uint64(failed) || ok != uint64(8-failed) {
		t.Fatalf("gRPC codes counted: INTERNAL %d, OK %d; want %d and %d", internal, ok, failed, 8-failed)
	}
}
