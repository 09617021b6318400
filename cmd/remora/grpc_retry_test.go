package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
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
