package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

// A registration withdrawn while etcd is down (a reload that removes or
// replaces register:, a drain) must not come back with etcd: an etcd that
// keeps its data restores the lease with a full TTL, and the key with it.
// Deregister returns with the error after a short try, and the lease is
// revoked once etcd answers: the key is gone well within the TTL.
func TestDeregisterDuringOutageIsCarriedOutOnceBack(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.Start(t)
	const key = "/services/users/app-1"
	reg := open(t, srv.Endpoint()).(*etcd.Registry)
	reg.RegistrationTTL = 10 * time.Second // the default: what lingering would cost
	t.Cleanup(func() { _ = reg.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := reg.Register(ctx, "users", app(nil))
	if err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil })

	srv.Stop()
	start := time.Now()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	derr := g.Deregister(dctx)
	dcancel()
	// clientv3 would wait for a connection as long as ctx allows: a
	// reload or a shutdown would wait that long.
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Deregister with etcd down took %v; want a short try (unreachableTry), then the background", d)
	}
	t.Logf("Deregister with etcd down: %v", derr)

	srv.Up()
	took := within(t, 3*time.Second, "the key gone once etcd is back", func() bool {
		v, _ := stored(t, srv, key)
		return v == nil
	})
	t.Logf("gone %v after etcd was back", took.Round(time.Millisecond))
}
