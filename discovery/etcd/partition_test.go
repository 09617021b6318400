package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

// partitionBound is how long the registration may take to be written
// again once a partition ends: gRPC's reconnect (under a second), then a
// request that was waiting on the cut connection ending with it, or the
// next try of the reconciler's backoff (at most 1 s).
const partitionBound = 5 * time.Second

// A partition longer than the lease TTL while etcd stays up: etcd expires
// the lease and deletes the key (its other clients see the instance go);
// Remora, cut off, cannot renew it. Once the partition ends the key must
// be written again under a new lease that is kept alive, and the status
// must say up, re-registered.
func TestRegistrationSurvivesPartitionLongerThanTTL(t *testing.T) {
	t.Parallel() // each has its own etcd; most of the time is spent waiting
	srv := etcdtest.Start(t)
	p := discoverytest.NewPartition(t, srv.Endpoint())
	const key = "/services/users/app-1"
	_, g := register(t, p.Addr(), "users", app(map[string]string{"canary": "true"}))
	within(t, 2*time.Second, "registered", func() bool { v, _ := stored(t, srv, key); return v != nil && status(t, g).Up })
	_, before := stored(t, srv, key)

	p.Cut()
	took := within(t, 3*testTTL+time.Second, "the key deleted by etcd with the expired lease", func() bool {
		v, _ := stored(t, srv, key)
		return v == nil
	})
	t.Logf("etcd deleted the key %v into the partition", took.Round(time.Millisecond))
	within(t, 2*testTTL, "status down during the partition", func() bool { st := status(t, g); return !st.Up && st.LastError != "" })
	time.Sleep(testTTL) // the partition goes on a while after the expiry
	if v, _ := stored(t, srv, key); v != nil {
		t.Fatalf("the key came back during the partition: %+v", v)
	}

	p.Heal()
	took = within(t, partitionBound, "written again under a new lease after the partition", func() bool {
		v, lease := stored(t, srv, key)
		return v != nil && v.Metadata["canary"] == "true" && lease != 0 && lease != before
	})
	t.Logf("written again %v after the partition ended", took.Round(time.Millisecond))
	within(t, 2*time.Second, "status up, re-registered", func() bool {
		st := status(t, g)
		return st.Up && st.Reregistrations >= 1
	})
	time.Sleep(2 * testTTL) // a lease nobody keeps alive would expire meanwhile
	v, lease := stored(t, srv, key)
	if v == nil {
		t.Fatalf("%v after the partition the key is gone: its lease is not kept alive", 2*testTTL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ttl, err := srv.Client().TimeToLive(ctx, lease); err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease %x of the key: %+v, %v; want it alive", lease, ttl, err)
	}
}
