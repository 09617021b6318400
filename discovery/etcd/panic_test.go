package etcd_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/internal/panics"
)

// panickingClient is an etcd Client over one key whose Get number at
// panics; its watches see no event and end with their context.
type panickingClient struct {
	gets atomic.Int32
	at   int32
}

func (c *panickingClient) Get(_ context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if c.gets.Add(1) == c.at {
		panic("injected: the client panicked")
	}
	return &clientv3.GetResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: 5, ClusterId: 1},
		Kvs:    []*mvccpb.KeyValue{{Key: []byte(key + "a"), Value: []byte("10.0.0.1:80")}},
		Count:  1,
	}, nil
}

func (c *panickingClient) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (c *panickingClient) Close() error { return nil }

// A panic in the watcher's goroutine (here, in the client's Get of the
// liveness check) made the process die. It is reported by Next as an
// error, the set kept; the watcher lists again after a pause, and the set
// comes back.
func TestWatcherPanicIsAnErrorAndTheWatcherGoesOn(t *testing.T) {
	logger, hook := logtest.NewNullLogger()
	reg := etcd.NewRegistry(&panickingClient{at: 2}, "/services", discovery.Env{Name: "test", Log: logrus.NewEntry(logger)})
	reg.ProbeInterval = 10 * time.Millisecond
	defer reg.Close()
	w, err := reg.Watch(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() ([]discovery.Instance, error) { return discoverytest.Next(t, w) }
	if set, err := next(); err != nil || len(set) != 1 || set[0].ID != "a" {
		t.Fatalf("first Next = %v, %v; want instance a", set, err)
	}
	set, err := next()
	var pe *panics.Error
	if !errors.As(err, &pe) || set != nil || !strings.Contains(err.Error(), "/services/web/") {
		t.Fatalf("Next after the panic = %v, %v; want a *panics.Error naming the prefix, no set", set, err)
	}
	if set, err := next(); err != nil || len(set) != 1 || set[0].ID != "a" {
		t.Fatalf("after the restart: Next = %v, %v; want instance a again", set, err)
	}
	var logged []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e)
		}
	}
	if len(logged) != 1 || !strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") ||
		logged[0].Data["panic"] != "injected: the client panicked" {
		t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
	}
}
