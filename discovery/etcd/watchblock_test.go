package etcd

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery"
)

// partitionedEtcd is fakeEtcd as clientv3 behaves in a partition: Watch
// waits for its context (the client's watch stream is reconnecting), and
// the test ends a lease's keep-alive as clientv3 does when no answer came
// within the TTL.
type partitionedEtcd struct {
	*fakeEtcd
	mu  sync.Mutex
	kas map[clientv3.LeaseID]chan *clientv3.LeaseKeepAliveResponse
}

func (p *partitionedEtcd) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	<-ctx.Done()
	ch := make(chan clientv3.WatchResponse)
	close(ch)
	return ch
}

func (p *partitionedEtcd) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	if _, err := p.fakeEtcd.KeepAlive(ctx, id); err != nil {
		return nil, err
	}
	ch := make(chan *clientv3.LeaseKeepAliveResponse)
	p.mu.Lock()
	p.kas[id] = ch
	p.mu.Unlock()
	return ch, nil
}

// loseLeases ends every keep-alive, as clientv3's deadline loop does.
func (p *partitionedEtcd) loseLeases() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, ch := range p.kas {
		close(ch)
		delete(p.kas, id)
	}
}

// A watch of the key that cannot be opened (clientv3's Watch waits while
// its stream reconnects in a partition) held the reconciler: the lease
// lost meanwhile went unseen, the status stayed up and nothing was written
// again until the partition ended. The loop must go on while the watch
// opens.
func TestWatchOpeningDoesNotHoldTheReconciler(t *testing.T) {
	f := &partitionedEtcd{fakeEtcd: newFakeEtcd("", 0), kas: map[clientv3.LeaseID]chan *clientv3.LeaseKeepAliveResponse{}}
	logger, _ := logtest.NewNullLogger()
	reg := NewRegistry(f, DefaultPrefix, discovery.Env{Name: "test", Log: logrus.NewEntry(logger)})
	reg.RegistrationTTL = time.Second
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := registerWeb(ctx, t, reg, webInstance)
	time.Sleep(100 * time.Millisecond) // the reconciler opens the watch
	first := g.Status().Reregistrations
	f.loseLeases()
	waitFor(t, 3*time.Second, "registered again under a new lease", func() bool {
		st := g.Status()
		return st.Up && st.Reregistrations > first
	})
	if err := g.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
}
