package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/internal/panics"
)

// fakeEtcd is an in-memory leaser: keys with their leases, leases granted
// and not revoked, and the keep-alive streams running for each. Call
// number at of method panics; every call after that waits for gate to
// close (or its context to end), so that the state the panic left can be
// looked at before the reconciler writes again.
type fakeEtcd struct {
	method string
	at     int
	gate   chan struct{}

	mu       sync.Mutex
	calls    map[string]int
	panicked bool
	rev      int64
	kvs      map[string]*mvccpb.KeyValue
	leases   map[clientv3.LeaseID]bool
	alive    map[clientv3.LeaseID]int // keep-alive streams running
	lastID   clientv3.LeaseID
}

var _ leaser = (*fakeEtcd)(nil)

func newFakeEtcd(method string, at int) *fakeEtcd {
	return &fakeEtcd{
		method: method, at: at, gate: make(chan struct{}), calls: map[string]int{},
		kvs: map[string]*mvccpb.KeyValue{}, leases: map[clientv3.LeaseID]bool{}, alive: map[clientv3.LeaseID]int{},
	}
}

// enter counts a call of method, panics if it is the one, and after the
// panic waits for the gate.
func (f *fakeEtcd) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls[method]++
	if method == f.method && f.calls[method] == f.at {
		f.panicked = true
		f.mu.Unlock()
		panic("injected: " + method + " panicked")
	}
	panicked := f.panicked
	f.mu.Unlock()
	if panicked {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (f *fakeEtcd) header() *etcdserverpb.ResponseHeader {
	return &etcdserverpb.ResponseHeader{Revision: f.rev, ClusterId: 1}
}

func (f *fakeEtcd) Get(ctx context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if err := f.enter(ctx, "Get"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &clientv3.GetResponse{Header: f.header()}
	if kv := f.kvs[key]; kv != nil {
		resp.Kvs, resp.Count = []*mvccpb.KeyValue{kv}, 1
	}
	return resp, nil
}

func (f *fakeEtcd) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if err := f.enter(ctx, "Put"); err != nil {
		return nil, err
	}
	lease := leaseOf(key, val, opts)
	f.mu.Lock()
	defer f.mu.Unlock()
	if lease != 0 && !f.leases[lease] {
		return nil, rpctypes.ErrLeaseNotFound
	}
	f.rev++
	f.kvs[key] = &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), Lease: int64(lease), ModRevision: f.rev}
	return &clientv3.PutResponse{Header: f.header()}, nil
}

func (f *fakeEtcd) Delete(ctx context.Context, key string, _ ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if err := f.enter(ctx, "Delete"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	delete(f.kvs, key)
	return &clientv3.DeleteResponse{Header: f.header()}, nil
}

func (f *fakeEtcd) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	if err := f.enter(ctx, "Grant"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastID++
	f.leases[f.lastID] = true
	return &clientv3.LeaseGrantResponse{ResponseHeader: f.header(), ID: f.lastID, TTL: ttl}, nil
}

// KeepAlive starts the stream before it counts the call, so that a panic
// there leaves a keep-alive running, as one in clientv3 after it has
// registered the lease would.
func (f *fakeEtcd) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse, 1)
	f.mu.Lock()
	f.alive[id]++
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		f.alive[id]--
		f.mu.Unlock()
		close(ch)
	}()
	if err := f.enter(ctx, "KeepAlive"); err != nil {
		return nil, err
	}
	return ch, nil
}

func (f *fakeEtcd) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	if err := f.enter(ctx, "Revoke"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.leases, id)
	for k, kv := range f.kvs {
		if clientv3.LeaseID(kv.Lease) == id {
			delete(f.kvs, k)
		}
	}
	return &clientv3.LeaseRevokeResponse{Header: f.header()}, nil
}

func (f *fakeEtcd) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse)
	if err := f.enter(ctx, "Watch"); err != nil {
		close(ch)
		return ch
	}
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (f *fakeEtcd) Close() error { return nil }

// state describes what the fake holds: the key's value and lease, whether
// that lease is kept alive, the leases not revoked and the keep-alive
// streams running.
func (f *fakeEtcd) state(key string) (value string, leaseAlive bool, leases, streams int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kv := f.kvs[key]; kv != nil {
		value, leaseAlive = string(kv.Value), f.alive[clientv3.LeaseID(kv.Lease)] > 0
	}
	for _, n := range f.alive {
		streams += n
	}
	return value, leaseAlive, len(f.leases), streams
}

// putCapture is the gRPC KV client under leaseOf's clientv3 KV.
type putCapture struct {
	etcdserverpb.KVClient
	req *etcdserverpb.PutRequest
}

func (c *putCapture) Put(_ context.Context, req *etcdserverpb.PutRequest, _ ...grpc.CallOption) (*etcdserverpb.PutResponse, error) {
	c.req = req
	return &etcdserverpb.PutResponse{}, nil
}

// leaseOf is the lease that opts put a value under, as clientv3 sends it.
func leaseOf(key, val string, opts []clientv3.OpOption) clientv3.LeaseID {
	var c putCapture
	_, _ = clientv3.NewKVFromKVClient(&c, nil).Put(context.Background(), key, val, opts...)
	return clientv3.LeaseID(c.req.Lease)
}

// webInstance is the instance the registration tests register.
var webInstance = discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true}

// registerWeb registers in as an instance of service "web" on reg.
func registerWeb(ctx context.Context, t *testing.T, reg *Registry, in discovery.Instance) *registration {
	t.Helper()
	r, err := reg.Register(ctx, "web", in)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*registration)
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// errorLines returns the entries of hook at level error.
func errorLines(hook *logtest.Hook) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			out = append(out, e)
		}
	}
	return out
}

// A panic in a registration's reconciler (here, in each call it makes of
// the client) ended the process. The registration is down with the panic
// as its error, which the waiting Register or Update gets; it is written
// again a pause later, under a lease kept alive; Deregister deletes it and
// revokes every lease, and no keep-alive is left running, also when it
// comes before the registration was written again.
func TestRegistrationPanicIsDownAndWrittenAgain(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		at         int
		update     bool // the panic is in the write of an Update
		deregister bool // Deregister in the pause after the panic
	}{
		{name: "Grant of the first write", method: "Grant", at: 1},
		{name: "KeepAlive of the first write, its stream started", method: "KeepAlive", at: 1},
		{name: "KeepAlive, deregistered in the pause", method: "KeepAlive", at: 1, deregister: true},
		{name: "Put of the first write", method: "Put", at: 1},
		{name: "Put of an Update", method: "Put", at: 2, update: true},
		{name: "Put of an Update, deregistered in the pause", method: "Put", at: 2, update: true, deregister: true},
		{name: "the deletion watch", method: "Watch", at: 1},
		{name: "the read-back", method: "Get", at: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEtcd(tc.method, tc.at)
			logger, hook := logtest.NewNullLogger()
			reg := NewRegistry(f, DefaultPrefix, discovery.Env{Name: "test", Log: logrus.NewEntry(logger)})
			reg.RegistrationTTL = time.Second // the read-back every second
			defer reg.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			inst := webInstance
			g := registerWeb(ctx, t, reg, inst)
			var pe *panics.Error
			if tc.update {
				inst.Weight = 2
				if err := g.Update(ctx, inst); !errors.As(err, &pe) {
					t.Fatalf("Update = %v; want the panic, a *panics.Error", err)
				}
			}
			// The outcome of the attempt is the panic, until the fake
			// lets the reconciler through.
			waitFor(t, 5*time.Second, "the panic recorded as the attempt's outcome", func() bool {
				return errors.As(g.wait(ctx, 1), &pe)
			})
			want := fmt.Sprintf("panic: injected: %s panicked", tc.method)
			if st := g.Status(); st.Up || !strings.Contains(st.LastError, want) || !strings.Contains(st.LastError, g.key) {
				t.Fatalf("status after the panic: %+v; want down, the error naming %q and the key", st, want)
			}
			close(f.gate)

			value, _ := encode(inst)
			if !tc.deregister {
				waitFor(t, 5*time.Second, "written again", func() bool {
					v, alive, _, _ := f.state(g.key)
					return g.Status().Up && v == value && alive
				})
			}
			if err := g.Deregister(ctx); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			waitFor(t, 5*time.Second, "deregistered: no key, no lease, no keep-alive", func() bool {
				v, _, leases, streams := f.state(g.key)
				return v == "" && leases == 0 && streams == 0
			})

			logged := errorLines(hook)
			if len(logged) != 1 || logged[0].Data["panic"] != "injected: "+tc.method+" panicked" ||
				!strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") || logged[0].Data["key"] != g.key {
				t.Fatalf("errors logged: %v; want one, with the panic, its stack and the key", logged)
			}
		})
	}
}

// A panic in creating the client ended the process. It is a failed
// attempt: the reason there is no client (what watchers report), logged
// once with its stack; the client is created again after the backoff, and
// a registration is written on it.
func TestConnectPanicIsAFailedAttempt(t *testing.T) {
	f := newFakeEtcd("", 0)
	gate := make(chan struct{})
	var calls atomic.Int32
	connect := func(ctx context.Context) (Client, error) {
		if calls.Add(1) == 1 {
			panic("injected: connect panicked")
		}
		select {
		case <-gate:
			return f, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	logger, hook := logtest.NewNullLogger()
	reg := newRegistry(connect, DefaultPrefix, discovery.Env{Name: "test", Log: logrus.NewEntry(logger)})
	defer reg.Close()
	var pe *panics.Error
	waitFor(t, 5*time.Second, "the panic as the reason there is no client", func() bool {
		_, err := reg.client()
		return errors.As(err, &pe)
	})
	close(gate)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := registerWeb(ctx, t, reg, webInstance)
	waitFor(t, 5*time.Second, "registered once connected", func() bool {
		v, _, _, _ := f.state(g.key)
		return g.Status().Up && v != ""
	})
	logged := errorLines(hook)
	if len(logged) != 1 || logged[0].Data["panic"] != "injected: connect panicked" ||
		!strings.Contains(logged[0].Data["stack"].(string), "panic_test.go") {
		t.Fatalf("errors logged: %v; want one, with the panic and its stack", logged)
	}
}
