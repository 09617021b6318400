package nacos

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/remora-mesh/remora/discovery"
)

// fakeClient is an in-memory namingClient that behaves like the SDK where
// the adapter depends on it: callbacks are registered per group@@service
// and found again by the address of the param's callback field (so an
// Unsubscribe with another param leaves the callback in place, as in
// nacos-sdk-go#845), and a push calls every registered callback.
type fakeClient struct {
	mu        sync.Mutex
	services  map[string][]model.Instance // group@@service -> hosts
	cached    map[string]bool             // has a copy (GetService answers without error)
	callbacks map[string][]*vo.SubscribeParam
	calls     []string // "subscribe key #n", "unsubscribe key #n" in order
	params    map[*vo.SubscribeParam]int
	subErrs   []error                             // returned by the next Subscribe calls, in order
	instances map[string]vo.RegisterInstanceParam // registered on this connection, by group@@service
	regErrs   []error                             // returned by the next RegisterInstance calls, in order
	healthy   bool
	closed    bool
	dials     int
}

func newFake() *fakeClient {
	return &fakeClient{
		services: map[string][]model.Instance{}, cached: map[string]bool{},
		callbacks: map[string][]*vo.SubscribeParam{}, params: map[*vo.SubscribeParam]int{}, healthy: true,
		instances: map[string]vo.RegisterInstanceParam{},
	}
}

func fkey(group, service string) string { return group + "@@" + service }

func (f *fakeClient) paramID(p *vo.SubscribeParam) int {
	if _, ok := f.params[p]; !ok {
		f.params[p] = len(f.params) + 1
	}
	return f.params[p]
}

func (f *fakeClient) Subscribe(p *vo.SubscribeParam) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fkey(p.GroupName, p.ServiceName)
	f.calls = append(f.calls, fmt.Sprintf("subscribe %s #%d", k, f.paramID(p)))
	f.callbacks[k] = append(f.callbacks[k], p) // registered before the request, as in the SDK
	if !f.healthy {
		return errors.New("client not connected, current status:UNHEALTHY")
	}
	if len(f.subErrs) > 0 {
		err := f.subErrs[0]
		f.subErrs = f.subErrs[1:]
		if err != nil {
			return err
		}
	}
	f.cached[k] = true
	cb := p.SubscribeCallback
	hosts := f.services[k]
	f.mu.Unlock()
	cb(hosts, nil)
	f.mu.Lock()
	return nil
}

func (f *fakeClient) Unsubscribe(p *vo.SubscribeParam) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fkey(p.GroupName, p.ServiceName)
	f.calls = append(f.calls, fmt.Sprintf("unsubscribe %s #%d", k, f.paramID(p)))
	kept := f.callbacks[k][:0]
	for _, q := range f.callbacks[k] {
		if &q.SubscribeCallback != &p.SubscribeCallback {
			kept = append(kept, q)
		}
	}
	f.callbacks[k] = kept
	if len(kept) == 0 {
		delete(f.cached, k) // the SDK drops its copy
	}
	return nil
}

func (f *fakeClient) GetService(p vo.GetServiceParam) (model.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fkey(p.GroupName, p.ServiceName)
	if !f.cached[k] {
		return model.Service{}, errors.New("client not connected, current status:UNHEALTHY")
	}
	return model.Service{Name: p.ServiceName, GroupName: p.GroupName, LastRefTime: 1, Hosts: append([]model.Instance(nil), f.services[k]...)}, nil
}

func (f *fakeClient) ServerHealthy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthy
}

// CloseClient drops the callbacks and the cached copies, as the SDK's
// client does with itself, and the instances it registered, as the server
// does with a closed connection's ephemeral instances; the fake can be
// dialled again (reopen).
func (f *fakeClient) CloseClient() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.calls = append(f.calls, "close")
	clear(f.callbacks)
	clear(f.cached)
	clear(f.instances)
}

// RegisterInstance records p as the connection's instance of its service
// (one per service, as on a Nacos connection).
func (f *fakeClient) RegisterInstance(p vo.RegisterInstanceParam) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fkey(p.GroupName, p.ServiceName)
	f.calls = append(f.calls, fmt.Sprintf("register %s %s:%d", k, p.Ip, p.Port))
	if f.closed || !f.healthy {
		return false, errors.New("client not connected, current status:UNHEALTHY")
	}
	if len(f.regErrs) > 0 {
		err := f.regErrs[0]
		f.regErrs = f.regErrs[1:]
		if err != nil {
			return false, err
		}
	}
	f.instances[k] = p
	return true, nil
}

func (f *fakeClient) DeregisterInstance(p vo.DeregisterInstanceParam) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fkey(p.GroupName, p.ServiceName)
	f.calls = append(f.calls, fmt.Sprintf("deregister %s %s:%d", k, p.Ip, p.Port))
	if f.closed || !f.healthy {
		return false, errors.New("client not connected, current status:UNHEALTHY")
	}
	if in, ok := f.instances[k]; ok && in.Ip == p.Ip && in.Port == p.Port && in.ClusterName == p.Cluster {
		delete(f.instances, k)
	}
	return true, nil
}

// instance returns the instance registered for group@@service, if any.
func (f *fakeClient) instance(group, service string) (vo.RegisterInstanceParam, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.instances[fkey(group, service)]
	return p, ok
}

func (f *fakeClient) failRegister(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regErrs = append(f.regErrs, errs...)
}

// probe is the fake's reachability check: the server is reachable when
// the client would be healthy.
func (f *fakeClient) probe() error {
	if !f.ServerHealthy() {
		return fmt.Errorf("%w: fake server down", ErrUnreachable)
	}
	return nil
}

// reopen is the fake's dial: the same fake, open again.
func (f *fakeClient) reopen() (namingClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = false
	f.dials++
	return f, nil
}

// push sets the hosts of a service as the server would and calls the
// registered callbacks (from the caller's goroutine, like the SDK's push
// handler) with hosts.
func (f *fakeClient) push(group, service string, hosts ...model.Instance) {
	f.mu.Lock()
	k := fkey(group, service)
	f.services[k] = hosts
	f.cached[k] = true
	cbs := append([]*vo.SubscribeParam(nil), f.callbacks[k]...)
	f.mu.Unlock()
	for _, p := range cbs {
		p.SubscribeCallback(hosts, nil)
	}
}

func (f *fakeClient) setHealthy(ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.healthy = ok
}

func (f *fakeClient) failSubscribe(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subErrs = append(f.subErrs, errs...)
}

func (f *fakeClient) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeClient) registered(group, service string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.callbacks[fkey(group, service)])
}

// host is a Nacos instance for the fake.
func host(ip string, port uint64, cluster string, weight float64, meta map[string]string) model.Instance {
	return model.Instance{Ip: ip, Port: port, ClusterName: cluster, Weight: weight, Healthy: true, Enable: true, Metadata: meta}
}

// newTestRegistry is a registry with the default options on dial, not
// started, for tests that set its timers and hooks themselves.
func newTestRegistry(t *testing.T, dial func() (namingClient, error)) *registry {
	t.Helper()
	o := &Options{}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	return newRegistry(o, discovery.Env{}.Logger(), dial)
}

// fakeRegistry is a registry on f with fast timers. Its registrations are
// not looked for in their services' lists (readBack 0): the fake's lists
// are what the test pushes, which do not hold what is registered (see
// tunedFakeRegistry).
func fakeRegistry(t *testing.T, f *fakeClient, opts ...func(*Options)) *registry {
	t.Helper()
	return tunedFakeRegistry(t, f, nil, opts...)
}

// tunedFakeRegistry is fakeRegistry with tune applied before it starts.
func tunedFakeRegistry(t *testing.T, f *fakeClient, tune func(*registry), opts ...func(*Options)) *registry {
	t.Helper()
	o := &Options{}
	for _, m := range opts {
		m(o)
	}
	if err := o.normalize(); err != nil {
		t.Fatal(err)
	}
	l, _ := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	r := newRegistry(o, logrus.NewEntry(l), f.reopen)
	r.probe = f.probe
	r.pollUp = 10 * time.Millisecond
	r.backoffBase, r.backoffMax = 10*time.Millisecond, 40*time.Millisecond
	r.readBack = 0
	if tune != nil {
		tune(r)
	}
	r.start()
	t.Cleanup(func() { _ = r.Close() })
	return r
}

var _ discovery.Watcher = (*watcher)(nil)
