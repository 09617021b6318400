package etcd_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/remora-mesh/remora/discovery"
	"github.com/remora-mesh/remora/discovery/discoverytest"
	"github.com/remora-mesh/remora/discovery/etcd"
	"github.com/remora-mesh/remora/discovery/etcd/etcdtest"
)

func open(t *testing.T, endpoint string) discovery.Registry {
	t.Helper()
	f, _ := discovery.Lookup(etcd.Type)
	opts, err := f.Parse(func(v any) error {
		v.(*etcd.Options).Endpoints = []string{endpoint}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := opts.Open(discovery.Env{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func value(in discovery.Instance) string {
	w := int64(in.Weight)
	b, _ := json.Marshal(etcd.Value{Address: in.Address, Port: in.Port, Weight: &w, Metadata: in.Metadata})
	return string(b)
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	discoverytest.Conformance(t, discoverytest.Harness{
		Open: func(t *testing.T) discovery.Registry { return open(t, srv.Endpoint()) },
		Register: func(t *testing.T, svc string, in discovery.Instance) {
			srv.Put(etcd.DefaultPrefix+"/"+svc+"/"+in.ID, value(in))
		},
		Deregister: func(t *testing.T, svc, id string) { srv.Delete(etcd.DefaultPrefix + "/" + svc + "/" + id) },
		Restart:    func(t *testing.T) { srv.Restart() },
	})
}

func watch(t *testing.T, reg discovery.Registry, svc string) discovery.Watcher {
	t.Helper()
	w, err := reg.Watch(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Stop() })
	return w
}

func TestLeaseExpiryRemovesInstance(t *testing.T) {
	srv := etcdtest.Start(t)
	reg := open(t, srv.Endpoint())
	defer reg.Close()
	w := watch(t, reg, "leased")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := srv.Client().Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	srv.Put("/services/leased/a", "127.0.0.1:9001", clientv3.WithLease(lease.ID))
	srv.Put("/services/leased/b", "127.0.0.1:9002")
	discoverytest.WaitFor(t, w, 5*time.Second, "a and b", func(s []discovery.Instance) bool { return len(s) == 2 })
	// Nobody keeps the lease alive: etcd expires it and deletes the key.
	set := discoverytest.WaitFor(t, w, 10*time.Second, "only b after the lease expired", func(s []discovery.Instance) bool { return len(s) == 1 })
	if set[0].ID != "b" {
		t.Fatalf("after lease expiry got %s", discoverytest.Describe(set))
	}
}

func TestMalformedValueIsSkipped(t *testing.T) {
	srv := etcdtest.Start(t)
	reg := open(t, srv.Endpoint())
	defer reg.Close()
	srv.Put("/services/mixed/good", `{"address":"127.0.0.1","port":9001,"metadata":{"canary":"true"}}`)
	srv.Put("/services/mixed/bad", `{"address":"127.0.0.1","port":"x"`)
	w := watch(t, reg, "mixed")
	set := discoverytest.WaitFor(t, w, 5*time.Second, "the good instance", func(s []discovery.Instance) bool { return len(s) == 1 })
	if set[0].ID != "good" || set[0].Metadata["canary"] != "true" {
		t.Fatalf("got %s", discoverytest.Describe(set))
	}
	// A later malformed put does not disturb the watch either.
	srv.Put("/services/mixed/worse", "not an address")
	srv.Put("/services/mixed/go-zero", "127.0.0.1:9002")
	set = discoverytest.WaitFor(t, w, 5*time.Second, "good and go-zero", func(s []discovery.Instance) bool { return len(s) == 2 })
	if set[0].ID != "go-zero" || set[0].Port != 9002 {
		t.Fatalf("got %s", discoverytest.Describe(set))
	}
	// A good instance turned malformed leaves the set.
	srv.Put("/services/mixed/good", `{"address":"","port":1}`)
	discoverytest.WaitFor(t, w, 5*time.Second, "go-zero only", func(s []discovery.Instance) bool { return len(s) == 1 && s[0].ID == "go-zero" })
}

// fakeClient serves Get from a scripted list of key sets and hands out
// scripted watch channels: a unit-level stand-in for etcd to force the
// compaction path, which a live watcher on a real server never falls into.
type fakeClient struct {
	lists   chan map[string]string // one per Get
	watches chan clientv3.WatchChan
	gets    atomic.Int32
	revs    chan int64 // WithRev of each Watch
}

func (f *fakeClient) Get(ctx context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	f.gets.Add(1)
	select {
	case kvs := <-f.lists:
		resp := &clientv3.GetResponse{Header: &etcdserverpb.ResponseHeader{Revision: 10 * int64(f.gets.Load())}}
		for k, v := range kvs {
			resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte(v)})
		}
		return resp, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeClient) Watch(ctx context.Context, _ string, opts ...clientv3.OpOption) clientv3.WatchChan {
	op := clientv3.OpGet("k", opts...)
	f.revs <- op.Rev()
	select {
	case ch := <-f.watches:
		return ch
	case <-ctx.Done():
		ch := make(chan clientv3.WatchResponse)
		close(ch)
		return ch
	}
}

func (f *fakeClient) Close() error { return nil }

func TestCompactionRelists(t *testing.T) {
	f := &fakeClient{lists: make(chan map[string]string, 2), watches: make(chan clientv3.WatchChan, 2), revs: make(chan int64, 4)}
	f.lists <- map[string]string{"/services/s/a": "127.0.0.1:1"}
	compacted := make(chan clientv3.WatchResponse, 1)
	compacted <- clientv3.WatchResponse{CompactRevision: 15}
	close(compacted)
	f.watches <- compacted
	f.watches <- make(chan clientv3.WatchResponse) // the second watch stays open
	f.lists <- map[string]string{"/services/s/a": "127.0.0.1:1", "/services/s/b": "127.0.0.1:2"}

	reg := etcd.NewRegistry(f, "/services", discovery.Env{})
	reg.ProbeInterval = 0 // the fake answers scripted lists only
	defer reg.Close()
	w := watch(t, reg, "s")
	discoverytest.WaitFor(t, w, 5*time.Second, "a and b after the relist", func(s []discovery.Instance) bool { return len(s) == 2 })
	if got := f.gets.Load(); got != 2 {
		t.Fatalf("Get called %d times; want 2 (list, then list again after compaction)", got)
	}
	if r1, r2 := <-f.revs, <-f.revs; r1 != 11 || r2 != 21 {
		t.Fatalf("watches started at revisions %d, %d; want 11 and 21 (each list's revision + 1)", r1, r2)
	}
}

// A watch that ends with an error is not resumed from the revision it
// reached: etcd may have come back without its data, its new history
// already past that revision (see
// TestWatchFollowsEtcdRestartedWithoutDataPastTheFollowedRevision). The
// watcher lists again and watches from the new list's revision; the
// instance the lost watch added, absent from the new list, leaves the set.
func TestLostWatchListsAgain(t *testing.T) {
	f := &fakeClient{lists: make(chan map[string]string, 2), watches: make(chan clientv3.WatchChan, 2), revs: make(chan int64, 4)}
	f.lists <- map[string]string{"/services/s/a": "127.0.0.1:1"}
	first := make(chan clientv3.WatchResponse, 2)
	first <- clientv3.WatchResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: 42},
		Events: []*clientv3.Event{{Type: clientv3.EventTypePut, Kv: &mvccpb.KeyValue{Key: []byte("/services/s/b"), Value: []byte("127.0.0.1:2")}}},
	}
	close(first) // the watch is lost
	f.watches <- first
	f.watches <- make(chan clientv3.WatchResponse)
	f.lists <- map[string]string{"/services/s/a": "127.0.0.1:1", "/services/s/c": "127.0.0.1:3"}

	reg := etcd.NewRegistry(f, "/services", discovery.Env{})
	reg.ProbeInterval = 0 // the fake answers scripted lists only
	defer reg.Close()
	w := watch(t, reg, "s")
	discoverytest.WaitFor(t, w, 5*time.Second, "a and c, as listed again", func(s []discovery.Instance) bool {
		return len(s) == 2 && s[0].ID == "a" && s[1].ID == "c"
	})
	if r1, r2 := <-f.revs, <-f.revs; r1 != 11 || r2 != 21 {
		t.Fatalf("watches started at revisions %d, %d; want 11, then 21 (each list's revision + 1, not the lost watch's 43)", r1, r2)
	}
	if got := f.gets.Load(); got != 2 {
		t.Fatalf("Get called %d times; want 2: a lost watch lists again", got)
	}
}

// unreachableAfterList is etcd lost right after the watcher's first list:
// Get answers once, then fails; Watch waits for its context, as clientv3's
// does while its watch stream reconnects.
type unreachableAfterList struct{ gets atomic.Int32 }

func (u *unreachableAfterList) Get(ctx context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if u.gets.Add(1) > 1 {
		return nil, errors.New("unreachable")
	}
	return &clientv3.GetResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: 10},
		Kvs:    []*mvccpb.KeyValue{{Key: []byte(key + "a"), Value: []byte("127.0.0.1:1")}},
	}, nil
}

func (u *unreachableAfterList) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	<-ctx.Done()
	ch := make(chan clientv3.WatchResponse)
	close(ch)
	return ch
}

func (u *unreachableAfterList) Close() error { return nil }

// A watch that cannot be opened (etcd lost between the list and the
// watch) must not hold the probes: the outage is reported (the set kept,
// stale), and noticed, for etcd may come back without its data.
func TestWatchOpeningDoesNotHoldTheProbes(t *testing.T) {
	reg := etcd.NewRegistry(&unreachableAfterList{}, "/services", discovery.Env{})
	reg.ProbeInterval = 20 * time.Millisecond
	defer reg.Close()
	w := watch(t, reg, "s")
	discoverytest.WaitFor(t, w, 5*time.Second, "a", func(s []discovery.Instance) bool { return len(s) == 1 })
	waitStale(t, w, 5*time.Second)
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		val     string
		want    discovery.Instance
		wantErr string
	}{
		{val: `{"address":"10.0.0.1","port":80}`, want: discovery.Instance{ID: "i", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true}},
		{val: `{"address":"10.0.0.1","port":80,"weight":0,"healthy":false,"metadata":{"v":"2"}}`, want: discovery.Instance{ID: "i", Address: "10.0.0.1", Port: 80, Weight: 0, Healthy: false, Metadata: map[string]string{"v": "2"}}},
		{val: "10.0.0.1:80", want: discovery.Instance{ID: "i", Address: "10.0.0.1", Port: 80, Weight: 1, Healthy: true}},
		{val: " [::1]:8080\n", want: discovery.Instance{ID: "i", Address: "::1", Port: 8080, Weight: 1, Healthy: true}},
		{val: `{"address":"10.0.0.1","port":80,"weight":-1}`, wantErr: "weight -1 out of range"},
		{val: `{"address":"10.0.0.1","port":80,"weight":4294967296}`, wantErr: "out of range"},
		{val: `{"address":"10.0.0.1"}`, wantErr: "port 0"},
		{val: `{"port":80}`, wantErr: "empty address"},
		{val: `{"address":1}`, wantErr: "not valid JSON"},
		{val: "nonsense", wantErr: "neither JSON nor host:port"},
		{val: "h:x", wantErr: "bad port"},
		{val: "h:99999", wantErr: "port 99999"},
	} {
		got, err := etcd.Decode("i", []byte(tc.val))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Decode(%q) error = %v; want %q", tc.val, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("Decode(%q) = %+v, %v; want %+v", tc.val, got, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"address":"a","port":1,"weight":3,"metadata":{"k":"v"}}`, "h:1", "[::1]:2", "{", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, val []byte) {
		in, err := etcd.Decode("id", val)
		if err == nil {
			if verr := in.Validate(); verr != nil {
				t.Fatalf("Decode accepted an invalid instance: %v", verr)
			}
		}
	})
}

// An etcd that comes back without its data (revisions start from 1 again,
// under the same cluster ID) is followed: the watcher lists it afresh
// instead of waiting for a revision the new history has not reached.
func TestWatchFollowsEtcdRestartedWithoutData(t *testing.T) {
	srv := etcdtest.Start(t)
	a := discoverytest.Instance("a", 22001, nil)
	b := discoverytest.Instance("b", 22002, nil)
	key := func(in discovery.Instance) string { return etcd.DefaultPrefix + "/fresh/" + in.ID }
	srv.Put(key(a), value(a))
	for i := range 50 { // revisions the new cluster will not reach soon
		srv.Put(etcd.DefaultPrefix+"/other/x", strings.Repeat("x", i))
	}
	reg := open(t, srv.Endpoint())
	t.Cleanup(func() { _ = reg.Close() })
	w := watch(t, reg, "fresh")
	discoverytest.WaitFor(t, w, 5*time.Second, "a", func(s []discovery.Instance) bool { return discoverytest.Has(s, a) && len(s) == 1 })

	srv.RestartFresh()
	srv.Put(key(b), value(b))
	start := time.Now()
	discoverytest.WaitFor(t, w, 10*time.Second, "only b, from the new cluster", func(s []discovery.Instance) bool {
		return discoverytest.Has(s, b) && len(s) == 1
	})
	t.Logf("the new cluster's set followed %v after it served", time.Since(start).Round(time.Millisecond))
}

// An etcd that comes back without its data keeps its cluster ID (etcd
// derives it from the peer URLs and the cluster token). If its other
// clients write past the revision the watcher followed before the watcher
// reaches it again, neither the ID nor the revision shows that the history
// is another one, and a watch resumed from that revision would keep an
// instance the wipe removed and never see one written below it. The
// watcher, having found etcd unreachable meanwhile, must list again once
// etcd answers: the set converges on what etcd holds.
func TestWatchFollowsEtcdRestartedWithoutDataPastTheFollowedRevision(t *testing.T) {
	srv := etcdtest.Start(t)
	p := discoverytest.NewPartition(t, srv.Endpoint())
	a := discoverytest.Instance("a", 22001, nil)
	b := discoverytest.Instance("b", 22002, nil)
	c := discoverytest.Instance("c", 22003, nil)
	key := func(in discovery.Instance) string { return etcd.DefaultPrefix + "/fresh/" + in.ID }
	header := func() *etcdserverpb.ResponseHeader {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := srv.Client().Get(ctx, "any")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header
	}
	srv.Put(key(a), value(a))
	for i := range 5 {
		srv.Put(etcd.DefaultPrefix+"/other/x", strconv.Itoa(i))
	}
	before := header()
	reg := open(t, p.Addr())
	t.Cleanup(func() { _ = reg.Close() })
	w := watch(t, reg, "fresh")
	discoverytest.WaitFor(t, w, 5*time.Second, "a", func(s []discovery.Instance) bool { return discoverytest.Has(s, a) && len(s) == 1 })

	// Cut off, the watcher reports etcd unreachable; meanwhile etcd
	// restarts without its data, b registers and other clients write
	// past the revision the watcher followed.
	p.Cut()
	waitStale(t, w, 5*time.Second)
	srv.RestartFresh()
	srv.Put(key(b), value(b))
	for i := range 10 {
		srv.Put(etcd.DefaultPrefix+"/other/y", strconv.Itoa(i))
	}
	after := header()
	if after.ClusterId != before.ClusterId || after.Revision <= before.Revision {
		t.Fatalf("etcd restarted without data: cluster %x revision %d, before cluster %x revision %d; the test needs the same cluster ID and a higher revision",
			after.ClusterId, after.Revision, before.ClusterId, before.Revision)
	}

	p.Heal()
	discoverytest.WaitFor(t, w, 10*time.Second, "only b, from the new history", func(s []discovery.Instance) bool { return discoverytest.Has(s, b) })
	srv.Put(key(c), value(c)) // followed by the watch from the new list
	discoverytest.WaitFor(t, w, 5*time.Second, "b and c", func(s []discovery.Instance) bool { return discoverytest.Has(s, b, c) })
}

// waitStale calls w.Next until it reports an error (the registry is
// unreachable: the set is stale), failing the test after within.
func waitStale(t *testing.T, w discovery.Watcher, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no error from Next within %v (last set %s); want the registry reported unreachable", within, discoverytest.Describe(set))
		}
		if err != nil {
			return
		}
	}
}
